"""state.json: the supervisor's account of a run (llmpt/run_dir.py's STATE_*), written atomically at each change,
read by `llmpt status`, by `--resume` (a finished run stays finished) and by run-node on a requeue."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from llmpt.run_dir import CHECKPOINT_RE, STATE_FINISHED, STATES, RunDir


def write_state(out: Path | str, state: str, **fields: Any) -> dict[str, Any]:
    """Record `state` (one of STATES) with `fields` (step, max_steps, exit_code, message, …), replacing the last."""
    assert state in STATES, state
    run = RunDir(out)
    record = {"state": state, **fields, "host": socket.gethostname(), "pid": os.getpid(), "t": time.time()}
    tmp = run.state.with_name(f".{run.state.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(run.state)
    return record


def read_state(out: Path | str) -> dict[str, Any] | None:
    """The last recorded state, or None (no run, or one from before llmpt recorded states, or unreadable)."""
    try:
        record = json.loads(RunDir(out).state.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("state") in STATES else None


def finished_at(out: Path | str) -> int | None:
    """The step a run in `out` finished at (every step trained, final weights saved), or None if it did not finish."""
    record = read_state(out)
    if record is None or record["state"] != STATE_FINISHED:
        return None
    step = record.get("step")
    return step if isinstance(step, int) else None


def nothing_left(output_dir: Path | str, resume_from: str | None, max_steps: int) -> str | None:
    """Why a --resume would train nothing: the run finished at (or past) max_steps, or the checkpoint it would continue
    is already there (PaddleNLP would still take one more step). None when there are steps left to train."""
    done = finished_at(output_dir)
    if done is not None and done >= max_steps:
        return f"{output_dir}: this run finished at step {done} (max_steps {max_steps}); nothing to train"
    m = CHECKPOINT_RE.match(Path(resume_from).name) if resume_from else None
    if m and int(m.group(1)) >= max_steps:
        return f"{output_dir}: {m.group(0)} is at step {m.group(1)}, max_steps is {max_steps}; nothing to train"
    return None
