"""Building and supervising the paddle.distributed.launch command; no training logic."""
