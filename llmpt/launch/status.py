"""`llmpt status RUN_DIR`: a run's progress, last loss, ranks and checkpoints, read from its files alone (any node
that sees the run directory; nothing is written). A rank's liveness is checked from its pid only on its own host;
elsewhere it is judged by the age of its last progress report."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from llmpt.errors import LlmptError
from llmpt.launch.checkpoints import is_complete
from llmpt.launch.hang import kernel_state
from llmpt.launch.state import read_state
from llmpt.launch.summary import read_metrics
from llmpt.run_dir import EVENT_EVAL, STATE_RUNNING, RunDir

_STATES = {"R": "running", "S": "running", "D": "in uninterruptible I/O", "T": "stopped", "t": "stopped", "Z": "dead"}


def _json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _rank(run: RunDir, rank: str, now: float) -> dict[str, Any]:
    pid_text = (run.rank_pid(rank).read_text() if run.rank_pid(rank).is_file() else "").split()
    pid = int(pid_text[0]) if pid_text and pid_text[0].isdigit() else None
    host = pid_text[1] if len(pid_text) > 1 else None
    progress = _json(run.rank_progress(rank)) or {}
    report = _json(run.rank_report(rank))
    if report is not None:
        process = f"exited ({report.get('stopped', 'finished')})"
    elif pid is None:
        process = "unknown"
    elif host not in (None, socket.gethostname()):
        process = f"on {host}"
    else:
        process = _STATES.get(kernel_state(pid) or "", "gone")
    age = now - progress["t"] if isinstance(progress.get("t"), (int, float)) else None
    return {
        "rank": int(rank) if rank.isdigit() else rank,
        "pid": pid,
        "host": host,
        "process": process,
        "step": progress.get("step"),
        "phase": progress.get("phase"),
        "seconds_since_progress": None if age is None else round(age, 1),
    }


def run_status(output_dir: str | Path) -> dict[str, Any]:
    out = Path(output_dir)
    run = RunDir(out)
    if not out.is_dir():
        raise LlmptError(f"status {out}: no such directory", "pass a run directory (llmpt train -o DIR)")
    if not run.holds_a_run():
        raise LlmptError(f"status {out}: not a run directory (no run.yaml, metrics or checkpoint)", "pass train -o DIR")
    now = time.time()
    config = {}
    try:
        config = yaml.safe_load(run.run_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError):
        pass
    config = config if isinstance(config, dict) else {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    records = read_metrics(run.metrics)
    steps = [r["step"] for r in records if r.get("event") == "step" and isinstance(r.get("step"), int)]
    logs = [r for r in records if r.get("event") == "log"]
    evals = [r for r in records if r.get("event") == EVENT_EVAL]
    state = read_state(out) or {}
    verdict = state.get("state", "unknown")
    if verdict == STATE_RUNNING and state.get("host") == socket.gethostname():
        if kernel_state(int(state.get("pid", 0))) in (None, "Z"):
            verdict = "lost"  # its supervisor is gone without saying how it ended (killed by SIGKILL)
    ranks = sorted({RunDir.rank_of(p) for p in [*run.pid_files(), *run.progress_files(), *run.rank_reports()]})
    last_t = max((r["t"] for r in records if isinstance(r.get("t"), (int, float))), default=None)
    return {
        "output_dir": str(out),
        "model": (config.get("model") or {}).get("id") if isinstance(config.get("model"), dict) else None,
        "strategy": (config.get("strategy") or {}).get("name") if isinstance(config.get("strategy"), dict) else None,
        "state": verdict,
        "state_detail": {k: v for k, v in state.items() if k not in ("state",)},
        "step": max(steps, default=0),
        "max_steps": train.get("max_steps"),
        "last_loss": logs[-1]["loss"] if logs else None,
        "last_eval_loss": evals[-1]["loss"] if evals else None,
        "seconds_since_last_record": None if last_t is None else round(now - last_t, 1),
        "ranks": [_rank(run, r, now) for r in sorted(ranks, key=lambda r: int(r) if r.isdigit() else -1)],
        "checkpoints": [{"step": s, "path": str(p), "complete": is_complete(p)} for s, p in run.checkpoints()],
    }
