"""The run directory's layout: every path, file name and metrics event name the rank, the supervisor, the summary
and rehearse share. Nothing else spells them.

    <run>/run.yaml              the resolved run (llmpt.run_config); the ranks read it and nothing else
    <run>/metrics.jsonl         rank 0's live feed: one JSON object per event (EVENT_*)
    <run>/ranks/rank<N>.pid     "<pid> <host>", written by rank N at start (the supervisor watches it)
    <run>/ranks/rank<N>.json    rank N's final report (peak memory, tensor bytes); its absence means "not finished"
    <run>/ranks/rank<N>.progress.json  rank N's last progress: {"step", "phase", "t"} (the supervisor's hang watch)
    <run>/ranks/rank<N>.stack   rank N's Python stacks, written when the supervisor asks (SIGUSR2) on a hang
    <run>/ranks/preempt.json    the supervisor's preemption request: {"signal", "t"} (llmpt/train/resilience.py)
    <run>/state.json            the supervisor's account of the run: STATE_* below, step, exit code (llmpt status)
    <run>/logs[/node<R>]/       paddle.distributed.launch's workerlog.<N> and llmpt's launcher.log
    <run>/checkpoint-<step>/    PaddleNLP checkpoints, marked complete by llmpt (llmpt.launch.checkpoints)
    <run>/summary.json, loss.png, vdl/, data_cache/
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path

# metrics.jsonl event names, written by the rank's MetricsCallback, read by the summary and the progress line
EVENT_BEGIN = "begin"  # training loop started: {"step", "max_steps", "t"}
EVENT_STEP = "step"  # an optimizer step ended: {"step", "t"}
EVENT_LOG = "log"  # a logged step: {"step", "loss", "learning_rate", "t"}
EVENT_SAVE = "save"  # a checkpoint was saved: {"step", "t"}
EVENT_EVAL = "eval"  # a validation-split evaluation: {"step", "loss", "documents": [[start, end) per prefix], "t"}
# rank 0's checkpoint timings (llmpt/train/checkpoint_timing.py): a save, from its start to every rank's files and the
# completion marker on disk: {"step", "seconds", "bytes", "t"}; a resume's load, weights and optimizer state:
# {"step", "checkpoint", "saved_by" (its strategy), "seconds", "model_seconds", "optimizer_seconds", "bytes", "t"}
EVENT_CHECKPOINT_SAVE = "checkpoint_save"
EVENT_CHECKPOINT_LOAD = "checkpoint_load"

# state.json's "state": what the supervisor (llmpt train / run-node) last said about the run
STATE_RUNNING = "running"
STATE_FINISHED = "finished"  # every step trained and the final weights saved: --resume trains nothing more
STATE_PREEMPTED = "preempted"  # stopped on a preemption signal after a complete checkpoint: resumable
STATE_FAILED = "failed"  # a rank died or the launcher failed
STATE_STOPPED = "stopped"  # at train.stop_at_step, with a checkpoint: resumable
STATE_HUNG = "hung"  # a rank made no progress for train.hang_timeout_s: stacks in ranks/rank<N>.stack
STATE_INTERRUPTED = "interrupted"  # Ctrl-C
STATES = (
    STATE_RUNNING,
    STATE_FINISHED,
    STATE_PREEMPTED,
    STATE_STOPPED,
    STATE_FAILED,
    STATE_HUNG,
    STATE_INTERRUPTED,
)
# the supervisor's "write your Python stacks" to a rank (faulthandler, registered by llmpt/train/resilience.py)
STACK_SIGNAL = signal.SIGUSR2

_RANK_FILE = re.compile(r"^rank\d+\.(pid|json)$")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def run_yaml(self) -> Path:
        return self.root / "run.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def loss_png(self) -> Path:
        return self.root / "loss.png"

    @property
    def vdl(self) -> Path:
        return self.root / "vdl"

    @property
    def data_cache(self) -> Path:
        return self.root / "data_cache"

    @property
    def ranks(self) -> Path:
        return self.root / "ranks"

    def rank_pid(self, rank: int | str) -> Path:
        return self.ranks / f"rank{rank}.pid"

    def rank_report(self, rank: int | str) -> Path:
        return self.ranks / f"rank{rank}.json"

    def rank_progress(self, rank: int | str) -> Path:
        return self.ranks / f"rank{rank}.progress.json"

    def rank_stack(self, rank: int | str) -> Path:
        return self.ranks / f"rank{rank}.stack"

    @property
    def preempt_request(self) -> Path:
        """Written by the supervisor when it is sent a preemption signal; every rank stops after the same step."""
        return self.ranks / "preempt.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    def pid_files(self) -> list[Path]:
        return sorted(p for p in self.ranks.glob("rank*.pid") if _RANK_FILE.match(p.name))

    def rank_reports(self) -> list[Path]:
        return sorted(p for p in self.ranks.glob("rank*.json") if _RANK_FILE.match(p.name))

    def progress_files(self) -> list[Path]:
        return sorted(self.ranks.glob("rank*.progress.json"))

    @staticmethod
    def rank_of(path: Path) -> str:
        """'1' for ranks/rank1.pid, ranks/rank1.json or ranks/rank1.progress.json."""
        return path.name.removeprefix("rank").split(".", 1)[0]

    def log_dir(self, nnodes: int = 1, node_rank: int | None = None) -> Path:
        """Worker logs: logs/, or logs/nodeR/ when several nodes may share the run directory (each node has a
        workerlog.0)."""
        return self.root / "logs" / (f"node{node_rank or 0}" if nnodes > 1 else "")

    @staticmethod
    def worker_log(log_dir: Path, rank: int | str) -> Path:
        return log_dir / f"workerlog.{rank}"

    @staticmethod
    def worker_logs(log_dir: Path) -> list[Path]:
        """Every rank's log in `log_dir`, in rank order."""
        logs = [p for p in log_dir.glob("workerlog.*") if p.suffix[1:].isdigit()]
        return sorted(logs, key=lambda p: int(p.suffix[1:]))

    @staticmethod
    def log_rank(log: Path) -> str | None:
        """'3' for workerlog.3; None for another file (launcher.log)."""
        return log.suffix[1:] if log.name.startswith("workerlog.") else None

    @staticmethod
    def launcher_log(log_dir: Path) -> Path:
        return log_dir / "launcher.log"

    def checkpoint(self, step: int) -> Path:
        return self.root / f"checkpoint-{step}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Every checkpoint-N directory, oldest first."""
        if not self.root.is_dir():
            return []
        found = ((CHECKPOINT_RE.match(p.name), p) for p in self.root.iterdir())
        return sorted((int(m.group(1)), p) for m, p in found if m and p.is_dir())

    def holds_a_run(self) -> bool:
        """A previous run wrote here (its run.yaml, metrics or a checkpoint)."""
        return self.root.is_dir() and (
            self.run_yaml.exists() or self.metrics.exists() or any(self.root.glob("checkpoint-*"))
        )

    def outputs_of_a_run(self) -> list[Path]:
        """What a new attempt replaces: the previous run's results (not its logs or run.yaml)."""
        return [self.metrics, self.summary, self.loss_png]
