"""prepare-data: text -> token ids -> PaddleNLP's mmap .bin/.idx, and readers of those files."""
