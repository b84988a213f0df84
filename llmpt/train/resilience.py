"""What a rank does for the supervisor on a cluster (issue 16): die with its launcher, report progress, dump its
stacks when asked, and stop cleanly on a preemption signal.

- **No orphans:** the rank asks the kernel for SIGKILL when its parent (paddle.distributed.launch) exits
  (prctl PR_SET_PDEATHSIG); llmpt asks the same for the launcher when llmpt exits. Killing llmpt by any signal
  therefore ends the launcher and every rank at once, and the devices are released.
- **Progress:** ranks/rank<N>.progress.json holds the rank's last step, its phase and when (one small atomic
  write per step, at the start of a checkpoint save and after it). The supervisor's hang watch reads them.
- **Stacks:** SIGUSR2 makes faulthandler write every thread's Python stack to ranks/rank<N>.stack, from the C
  signal handler, so a rank blocked inside a collective still answers.
- **Preemption:** SIGTERM or train.preempt_signal sets a flag (so does the supervisor's ranks/preempt.json, which a
  rank that had not yet installed its handler cannot miss). At every step end the ranks agree on it with one
  all-reduce (MAX over the world group, as Megatron-LM's --exit-signal-handler does every iteration): all stop
  after the same step, with a checkpoint of it, whatever rank got the signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import os
import signal
import time

from llmpt.run_dir import STACK_SIGNAL, RunDir

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent exits (Linux). False where prctl is missing.
    The parent may already be gone (reparented to init): then exit now."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() == 1:
        os._exit(1)
    return True


def write_progress(run: RunDir, rank: int | str, step: int, phase: str) -> None:
    """ranks/rank<N>.progress.json, replaced atomically (the supervisor never reads half a file)."""
    path = run.rank_progress(rank)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"step": step, "phase": phase, "pid": os.getpid(), "t": time.time()}))
    tmp.replace(path)


def install_stack_dump(run: RunDir, rank: int | str):
    """SIGUSR2 -> every thread's Python stack into ranks/rank<N>.stack (the file stays open for the handler)."""
    f = run.rank_stack(rank).open("w")
    faulthandler.register(STACK_SIGNAL, file=f, all_threads=True, chain=False)
    return f


class PreemptFlag:
    """Set by SIGTERM or the preemption signal in this process, or by the supervisor's ranks/preempt.json."""

    def __init__(self, run: RunDir, preempt_signal: str) -> None:
        self.run = run
        self.signal: str | None = None
        for sig in {signal.SIGTERM, signal.Signals[preempt_signal]}:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.signal = self.signal or signal.Signals(signum).name

    def requested(self) -> str | None:
        if self.signal is None and self.run.preempt_request.exists():
            with contextlib.suppress(OSError, ValueError):
                self.signal = json.loads(self.run.preempt_request.read_text()).get("signal") or "SIGTERM"
        return self.signal


def agree(local: bool) -> bool:
    """Whether any rank says yes: one all-reduce (MAX) of a flag over every rank; the local answer on one rank."""
    import paddle
    import paddle.distributed as dist

    if dist.get_world_size() <= 1:
        return local
    flag = paddle.to_tensor([1 if local else 0], dtype="int32")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(int(flag.numpy()[0]))
