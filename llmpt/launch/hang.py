"""The supervisor's hang watch: a rank that makes no progress for train.hang_timeout_s stops the job.

Each rank writes ranks/rank<N>.progress.json at every step end, when a checkpoint save starts and after it
(llmpt/train/resilience.py). The clock starts once a rank reports that training began (loading weights and
building the data index are not timed). On a hang the supervisor names the stalled ranks — a process the kernel
has stopped (state T, e.g. SIGSTOP) or that sits in uninterruptible I/O (D), else the ranks behind the others,
else every rank (all wait in one collective) — and asks every live rank for its Python stacks (SIGUSR2:
faulthandler writes ranks/rank<N>.stack)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from llmpt.run_dir import STACK_SIGNAL, RunDir

STACK_WAIT_S = 5.0  # how long the supervisor waits for the ranks' stack files before it stops the job
_TIMED = ("training", "saving", "evaluating")  # the phases a rank reports once training began
_KERNEL_STATES = {"T": "stopped", "t": "stopped by a debugger", "D": "in uninterruptible I/O", "Z": "a zombie"}


def local_rank_pids(out: Path) -> list[tuple[str, int]]:
    """(rank, pid) of every rank whose pid file says it runs on this host."""
    run = RunDir(out)
    found = []
    for pid_file in run.pid_files():
        try:
            pid_text, _, host = pid_file.read_text().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if host.strip() and host.strip() != socket.gethostname():
            continue  # a rank on another node sharing this directory: its own node watches it
        found.append((run.rank_of(pid_file), pid))
    return found


def kernel_state(pid: int) -> str | None:
    """The process's state letter from /proc (R, S, D, T, Z, …), or None when it is gone or unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class Hang:
    stalled: list[str]  # the ranks named
    why: dict[str, str]  # rank -> what was seen
    seconds: float  # the longest time without progress
    steps: dict[str, int]  # rank -> its last step

    def describe(self) -> str:
        named = ", ".join(f"rank {r} ({self.why[r]})" for r in self.stalled)
        others = {r: s for r, s in self.steps.items() if r not in self.stalled}
        waiting = (
            "; " + ", ".join(f"rank {r} waits after step {s}" for r, s in sorted(others.items(), key=_rank_order))
            if others
            else ""
        )
        return f"no progress for {self.seconds:.0f} s: {named}{waiting}"


def _rank_order(item: tuple[str, int]) -> int:
    return int(item[0]) if item[0].isdigit() else 0


class HangWatch:
    def __init__(self, run: RunDir, timeout_s: float, now=time.time) -> None:
        self.run = run
        self.timeout_s = timeout_s
        self.now = now

    def _progress(self) -> dict[str, dict]:
        found = {}
        for p in self.run.progress_files():
            with contextlib.suppress(OSError, ValueError):
                found[RunDir.rank_of(p)] = json.loads(p.read_text())
        return found

    def training_started(self) -> bool:
        """Whether a rank of this node has reported that training began (so a preemption can wait for its step)."""
        pids = dict(local_rank_pids(self.run.root))
        return any(r in pids and p.get("phase") in _TIMED for r, p in self._progress().items())

    def check(self) -> Hang | None:
        """A Hang when a rank of this node has made no progress for longer than the timeout since training began."""
        if self.timeout_s <= 0:
            return None
        pids = dict(local_rank_pids(self.run.root))
        progress = {r: p for r, p in self._progress().items() if r in pids}
        started = [p["t"] for p in progress.values() if p.get("phase") in _TIMED]
        if not started:
            return None  # still loading: not timed
        finished = {RunDir.rank_of(p) for p in self.run.rank_reports()}
        now = self.now()
        first = min(started)
        # a rank that never reported training is timed from the first rank that did
        ages = {
            r: now - (progress[r]["t"] if progress.get(r, {}).get("phase") in _TIMED else first)
            for r in pids
            if r not in finished
        }
        if not ages or max(ages.values()) <= self.timeout_s:
            return None
        steps = {r: int(progress.get(r, {}).get("step", 0)) for r in ages}
        states = {r: kernel_state(pids[r]) for r in ages}
        why: dict[str, str] = {}
        for r, st in states.items():
            if st in _KERNEL_STATES:
                why[r] = f"process {pids[r]} {_KERNEL_STATES[st]}"
        if not why:
            low = min(steps.values())
            behind = [r for r in ages if steps[r] == low]
            for r in behind if len(behind) < len(ages) else ages:
                phase = progress.get(r, {}).get("phase", "starting")
                why[r] = {
                    "saving": f"last saving a checkpoint at step {steps[r]}",
                    "training": f"last finished step {steps[r]}",
                    "evaluating": f"last evaluating after step {steps[r]}",
                }.get(phase, "never started training")
        stalled = sorted(why, key=lambda r: int(r) if r.isdigit() else 0)
        return Hang(stalled, why, max(ages.values()), steps)

    def dump_stacks(self) -> list[str]:
        """SIGUSR2 to every live rank of this node (a stopped one is continued so that it can answer); wait until
        each has written its stack file or STACK_WAIT_S passed. The ranks whose stack was written."""
        pids = local_rank_pids(self.run.root)
        asked = []
        for rank, pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, STACK_SIGNAL)
                if kernel_state(pid) in ("T", "t"):
                    os.kill(pid, signal.SIGCONT)
                asked.append(rank)
        deadline = time.monotonic() + STACK_WAIT_S
        written: list[str] = []
        while time.monotonic() < deadline:
            written = [r for r in asked if _nonempty(self.run.rank_stack(r))]
            if len(written) == len(asked):
                break
            time.sleep(0.1)
        return written


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
