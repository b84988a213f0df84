"""How long checkpoints take and how big they are, measured on the rank: each save (seconds the training paused, bytes
on disk) and, at a resume, the load of the weights and of the optimizer state. Rank 0 writes them to metrics.jsonl
(EVENT_CHECKPOINT_SAVE, EVENT_CHECKPOINT_LOAD); the run's summary reports them (llmpt/launch/summary.py)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paddle
from paddlenlp.trainer import TrainerCallback

from llmpt.launch.checkpoints import read_marker
from llmpt.run_dir import EVENT_CHECKPOINT_LOAD, EVENT_CHECKPOINT_SAVE, RunDir


@dataclass
class CheckpointClock:
    """What TimedCheckpoints measured on this rank (perf_counter seconds)."""

    save_started: float | None = None
    on_save_start: Callable[[], None] | None = None  # the rank's progress report ("saving")
    load_seconds: dict[str, float] = field(default_factory=dict)  # "model", "optimizer"

    @contextlib.contextmanager
    def loading(self, part: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.load_seconds[part] = self.load_seconds.get(part, 0.0) + time.perf_counter() - t0


class TimedCheckpoints:
    """Mixed into PaddleNLP's Trainer (before it in the bases): times its own checkpoint save and the two loads of
    a resume (Trainer.train: _load_from_checkpoint for the weights, _load_optimizer_and_scheduler for the optimizer
    and LR schedule), each around PaddleNLP's own method. tests/unit/test_checkpoint_fixes.py pins their
    signatures."""

    def __init__(self, *args, checkpoint_clock: CheckpointClock, **kwargs):
        self.checkpoint_clock = checkpoint_clock
        super().__init__(*args, **kwargs)

    def _save_checkpoint(self, model, metrics=None):
        self.checkpoint_clock.save_started = time.perf_counter()
        if self.checkpoint_clock.on_save_start is not None:
            self.checkpoint_clock.on_save_start()
        return super()._save_checkpoint(model, metrics=metrics)

    def _load_from_checkpoint(self, resume_from_checkpoint=None):
        with self.checkpoint_clock.loading("model"):
            return super()._load_from_checkpoint(resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint):
        with self.checkpoint_clock.loading("optimizer"):
            return super()._load_optimizer_and_scheduler(checkpoint)


def checkpoint_bytes(ckpt: Path) -> int:
    """The checkpoint's size on disk: the files its completion marker lists (every rank's), else what is there."""
    files = (read_marker(ckpt) or {}).get("files")
    if isinstance(files, dict):
        return sum(int(v) for v in files.values())
    return sum(p.stat().st_size for p in ckpt.rglob("*") if p.is_file())


class CheckpointTimes(TrainerCallback):
    """Rank 0's save and load records. Placed after CheckpointMarker: by its on_save every rank has written
    checkpoint-N and the marker is on disk, so a save's seconds run from the start of rank 0's save to the whole
    checkpoint being complete."""

    def __init__(self, run: RunDir, clock: CheckpointClock, resume_from: str | None) -> None:
        self.run = run
        self.clock = clock
        self.resume_from = resume_from
        self.enabled = paddle.distributed.get_rank() == 0

    def _write(self, record: dict) -> None:
        if self.enabled:
            with self.run.metrics.open("a") as f:
                f.write(json.dumps({**record, "t": time.time()}) + "\n")

    def on_train_begin(self, args, state, control, **kwargs):
        if self.resume_from is None or not self.enabled:
            return
        ckpt = Path(self.resume_from)
        seconds = self.clock.load_seconds
        self._write(
            {
                "event": EVENT_CHECKPOINT_LOAD,
                "step": state.global_step,
                "checkpoint": ckpt.name,
                "saved_by": ((read_marker(ckpt) or {}).get("run") or {}).get("strategy"),
                "seconds": sum(seconds.values()),
                "model_seconds": seconds.get("model", 0.0),
                "optimizer_seconds": seconds.get("optimizer", 0.0),
                "bytes": checkpoint_bytes(ckpt),
            }
        )

    def on_save(self, args, state, control, **kwargs):
        started, self.clock.save_started = self.clock.save_started, None
        if started is None or not self.enabled:
            return
        seconds = time.perf_counter() - started
        ckpt = self.run.checkpoint(state.global_step)
        record = {"event": EVENT_CHECKPOINT_SAVE, "step": state.global_step, "seconds": seconds}
        self._write({**record, "bytes": checkpoint_bytes(ckpt)})
