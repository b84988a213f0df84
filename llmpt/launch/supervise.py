"""Running the launcher: write run.yaml, start paddle.distributed.launch, follow rank 0, stop every rank on
failure or Ctrl-C, and summarise."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmpt import schemas
from llmpt.errors import LlmptError, Preempted
from llmpt.fsutil import check_writable, probe_writable, why_unwritable
from llmpt.launch.checkpoints import checkpoints, is_complete
from llmpt.launch.command import RANK_ENTRY, RunPorts, run_launch_command
from llmpt.launch.hang import HangWatch, local_rank_pids
from llmpt.launch.state import write_state
from llmpt.launch.summary import MetricsTail, plot_losses, summarize
from llmpt.run_config import RunConfig, write_run_yaml
from llmpt.run_dir import (
    STATE_FAILED,
    STATE_FINISHED,
    STATE_HUNG,
    STATE_INTERRUPTED,
    STATE_PREEMPTED,
    STATE_RUNNING,
    STATE_STOPPED,
    RunDir,
)

ProgressFn = Callable[[dict[str, Any]], None]
_ERROR = re.compile(r"\b\w+(Error|Exception)\b")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


from llmpt.errors import TrainingFailed  # noqa: E402 - moved to llmpt.errors (the exit-code table)


def check_output_dir(cfg: RunConfig, overwrite: bool) -> None:
    """Every refusal prepare_output_dir makes, made without writing anything: the run directory can be created and
    written, and a previous run in it needs --resume (resolved into cfg.resume_from) or --overwrite."""
    out = Path(cfg.output_dir)
    check_output_writable(out)
    if cfg.resume_from is None and RunDir(out).holds_a_run() and not overwrite:
        raise LlmptError(
            f"--output-dir {out} holds a previous run",
            "pass --resume to continue it, --overwrite to start over, or another --output-dir",
        )


def check_devices_here(cfg: RunConfig) -> None:
    """A run started on this machine (train, run-node) has the devices it names: GPU ranks need an NVIDIA device
    node. (plan, train --dry-run and launch-script check GPU jobs on machines without one: they start nothing.)"""
    if cfg.device == "gpu" and not glob.glob("/dev/nvidia[0-9]*"):
        raise LlmptError(
            "--device gpu: this machine has no NVIDIA GPU (no /dev/nvidia0, /dev/nvidia1, …)",
            "start it on the GPU machine; here check it with --dry-run, or run on CPU ranks with --device cpu",
        )


def check_output_writable(out: Path) -> None:
    """The run directory is, or can be created as, a directory llmpt can write; nothing is created."""
    try:
        check_writable(out)
    except OSError as e:
        raise LlmptError(f"--output-dir {out}: {why_unwritable(out, e)}", "choose a writable --output-dir") from None


def prepare_output_dir(cfg: RunConfig, overwrite: bool) -> None:
    """Make the run directory ready for this attempt. A directory with a previous run needs --resume (resolved into
    cfg.resume_from) or --overwrite: runs are never mixed.

    Every check first (check_output_dir), then the writes: the shipped corpus into the cache when the run reads it
    and it is not there yet, the data hashes verified during resolution into the cache, the run directory."""
    from llmpt.data.prepare import prepare_shipped, remember_verified, verified_cache

    check_output_dir(cfg, overwrite)
    prepare_shipped(cfg.data.prefixes)
    remember_verified(verified_cache())
    out = Path(cfg.output_dir)
    run = RunDir(out)
    _check_writable(out)
    previous = run.holds_a_run()
    if cfg.resume_from is not None:
        _clear_rank_reports(out)
        found = checkpoints(out)
        chosen = next(step for step, p in found if p.name == Path(cfg.resume_from).name)
        for step, p in found:
            if step > chosen:  # a save cut short: its leftovers must not mix into the next save of that step
                shutil.rmtree(p)
        return
    if previous:
        for p in run.outputs_of_a_run():
            p.unlink(missing_ok=True)
        for _, p in run.checkpoints():
            shutil.rmtree(p)
        _clear_rank_reports(out)


def _check_writable(out: Path) -> None:
    """Create the run directory and write in it (at launch: check_output_writable refused what it could)."""
    try:
        probe_writable(out)
    except OSError as e:
        raise LlmptError(
            f"--output-dir {out}: cannot write there ({e.strerror or e})", "choose a writable --output-dir"
        ) from None


def _clear_rank_reports(out: Path) -> None:
    """A new attempt's ranks report afresh: stale pid files and reports would hide a dead rank, stale progress
    would time a hang from the last attempt, a stale preemption request would stop it at once."""
    run = RunDir(out)
    for p in [*run.rank_reports(), *run.pid_files(), *run.progress_files(), *run.ranks.glob("rank*.stack")]:
        p.unlink()
    run.preempt_request.unlink(missing_ok=True)


# paddle.distributed.launch's own account of a dead worker
_CONTAINER_FAILED = re.compile(r"Container rank (\d+) status failed .* code (-?\d+)")
DEAD_RANK_GRACE_S = 5.0  # a rank gone without its report for this long stops the job, whatever the launcher does


def _describe_exit(rank: str, code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"rank {rank} was killed by {name}"
    return f"rank {rank} exited with code {code}"


def _launcher_verdict(log_dir: Path) -> str | None:
    """'rank 1 was killed by SIGKILL' from the launcher's log, if it says which worker failed."""
    log = RunDir.launcher_log(log_dir)
    if not log.is_file():
        return None
    found = _CONTAINER_FAILED.findall(log.read_text(errors="replace"))
    return _describe_exit(*found[0][:1], int(found[0][1])) if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a dead child the launcher has not reaped yet
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def dead_ranks(out: Path) -> list[tuple[str, int]]:
    """Ranks on this node whose process is gone before they wrote their final report: (rank, pid)."""
    run = RunDir(out)
    return [(r, pid) for r, pid in local_rank_pids(out) if not run.rank_report(r).exists() and not _alive(pid)]


def _culprit(seen_dead: list[tuple[str, int]], log_dir: Path) -> tuple[str, int]:
    """The rank that caused the failure: the first seen gone whose log ends without an error (killed from outside:
    SIGKILL, the OOM killer), else the first seen gone. Its peers die of the loss with a gloo/NCCL error."""
    clean = [d for d in seen_dead if not _log_shows_error(RunDir.worker_log(log_dir, d[0]))]
    return (clean or seen_dead)[0]


def _log_shows_error(log: Path) -> bool:
    if not log.is_file():
        return False
    lines = log.read_text(errors="replace").splitlines()[-200:]
    return any("Traceback" in ln or "terminate called" in ln or _ERROR.search(ln) for ln in lines)


def _failed_rank(log_dir: Path) -> tuple[str, list[str]] | None:
    """The first worker log that shows an error, and its last lines."""
    for p in [*RunDir.worker_logs(log_dir), RunDir.launcher_log(log_dir)]:
        if not p.is_file():
            continue
        lines = _ANSI.sub("", p.read_text(errors="replace")).splitlines()  # Paddle colours its log lines
        if any("Traceback" in ln or _ERROR.search(ln) for ln in lines[-200:]):
            tail = [ln for ln in lines if ln.strip()][-15:]
            rank = RunDir.log_rank(p)
            return (f"rank {rank}" if rank is not None else "the launcher"), tail
    return None


def run_training(cfg: RunConfig, progress: ProgressFn | None = None, poll_seconds: float = 0.1) -> dict[str, Any]:
    """Launch this node's ranks of `cfg` and wait; return the summary (also DIR/summary.json, DIR/loss.png).

    Ends with TrainingFailed when a rank dies or hangs or the launcher fails, Preempted when a preemption signal
    stopped the run after a complete checkpoint; DIR/state.json records how it ended (llmpt status reads it)."""
    out = Path(cfg.output_dir)
    run = RunDir(out)
    write_run_yaml(cfg, run.run_yaml)
    log_dir = run.log_dir(cfg.nnodes, cfg.node_rank)
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = run_launch_command(cfg)
    env = dict(os.environ)
    if cfg.master:  # the store and group-store ports derived from --master's (checked free before the first write)
        env.update(RunPorts(int(cfg.master.rpartition(":")[2])).env())
    metrics = MetricsTail(run.metrics)
    steps = {"max_steps": cfg.train.max_steps, "node_rank": cfg.node_rank or 0}
    write_state(out, STATE_RUNNING, **steps)
    hangs = HangWatch(run, cfg.train.hang_timeout_s)
    with RunDir.launcher_log(log_dir).open("ab") as launcher_log, Preemption(run, cfg.train.preempt_signal) as preempt:
        # the launcher ignores the preemption signal (sent to every process of a job, it would kill it) and dies
        # with llmpt (PR_SET_PDEATHSIG); its ranks die with it (llmpt/train/resilience.py)
        with preempt.ignored():
            proc = subprocess.Popen(
                cmd, stdout=launcher_log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        seen_dead: list[tuple[str, int]] = []  # in the order the ranks were seen gone
        dead_since = 0.0
        polls = 0
        try:
            while proc.poll() is None:
                if progress and polls % 5 == 0:
                    progress({"records": metrics.read()})
                polls += 1
                for d in dead_ranks(out):
                    if d not in seen_dead:
                        seen_dead.append(d)
                        dead_since = dead_since or time.monotonic()
                if seen_dead and time.monotonic() - dead_since > DEAD_RANK_GRACE_S:
                    _stop(proc, out)  # the launcher did not notice (e.g. the rest hang in a collective): stop them
                    rank, pid = _culprit(seen_dead, log_dir)
                    write_state(out, STATE_FAILED, **steps, rank=rank)
                    raise TrainingFailed(
                        f"training failed: rank {rank} (pid {pid}) died before finishing; every rank was stopped "
                        f"(logs: {log_dir})",
                        f"see {RunDir.worker_log(log_dir, rank)} ; continue from the last complete checkpoint "
                        "with --resume",
                    )
                if preempt.signal is not None and not hangs.training_started():
                    # nothing to save yet (the ranks load, or wait for their peers): stop now, not after a step
                    _stop(proc, out)
                    _end_preempted(cfg, run, {}, preempt.signal, steps)
                if polls % 10 == 0 and (hang := hangs.check()) is not None:
                    hangs.dump_stacks()
                    _stop(proc, out)
                    write_state(out, STATE_HUNG, **steps, ranks=hang.stalled)
                    raise TrainingFailed(
                        f"training hung: {hang.describe()}; every live rank's Python stack is in "
                        f"{run.ranks}/rank<N>.stack; every rank was stopped",
                        f"see {run.ranks}/rank{hang.stalled[0]}.stack and {log_dir}; continue from the last complete "
                        "checkpoint with --resume (train.hang_timeout_s sets the limit)",
                    )
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            _stop(proc, out)
            write_state(out, STATE_INTERRUPTED, **steps)
            raise TrainingFailed(
                "interrupted: every rank was stopped",
                f"the last complete checkpoint (if any) is kept in {out}; continue with --resume",
            ) from None
    if progress:
        progress({"records": metrics.read(), "done": True})
    stopped = _how_ranks_stopped(run)
    if preempt.signal is not None or "preempted" in stopped.values():
        _end_preempted(cfg, run, stopped, preempt.signal, steps)
    if proc.returncode != 0:
        failed = _failed_rank(log_dir)
        verdict = _launcher_verdict(log_dir)
        seen_dead += [d for d in dead_ranks(out) if d not in seen_dead]
        rank, pid = _culprit(seen_dead, log_dir) if seen_dead else ("", 0)
        if seen_dead and not _log_shows_error(RunDir.worker_log(log_dir, rank)):
            if not (verdict or "").startswith(f"rank {rank} "):
                # the launcher names the first failed worker in rank order, which may be a peer that died of the loss
                then = f"; then {verdict}" if verdict else ""
                verdict = f"rank {rank} (pid {pid}) died{then}"
        where = verdict or (f"{failed[0]} failed" if failed else f"the launcher exited with code {proc.returncode}")
        if proc.returncode < 0:  # killed from outside: its ranks died with it (PR_SET_PDEATHSIG)
            killed = _describe_exit("", proc.returncode).replace("rank  was", "was")
            where = f"the launcher (pid {proc.pid}) {killed}; its ranks were stopped with it"
        tail = "\n".join("    " + ln for ln in failed[1]) if failed else ""
        write_state(out, STATE_FAILED, **steps, exit_code=proc.returncode)
        raise TrainingFailed(
            f"training failed: {where} (logs: {log_dir})" + (f"\n{tail}" if tail else ""),
            f"see {log_dir}/workerlog.* ; after fixing, continue with --resume",
        )
    last = max((s for s in _rank_steps(run).values()), default=cfg.train.max_steps)
    write_state(out, STATE_FINISHED if cfg.train.stop_at_step is None else STATE_STOPPED, **steps, step=last)
    if cfg.nnodes > 1 and (cfg.node_rank or 0) != 0:
        # rank 0 lives on node 0 and writes the metrics; this node only reports that its ranks finished
        return {
            "schema": schemas.NODE_SUMMARY,
            "node_rank": cfg.node_rank,
            "ranks_finished": True,
            "summary": f"on node 0, {run.summary}",
        }
    summary = {"schema": schemas.RUN_SUMMARY, **summarize(cfg)}  # also summary.json: the same document
    run.summary.write_text(json.dumps(summary, indent=1) + "\n")
    plot_losses(summary, run.loss_png)
    return summary


def _rank_reports(run: RunDir) -> dict[str, dict]:
    reports = {}
    for p in run.rank_reports():
        with contextlib.suppress(OSError, ValueError):
            reports[RunDir.rank_of(p)] = json.loads(p.read_text())
    return reports


def _how_ranks_stopped(run: RunDir) -> dict[str, str]:
    """rank -> "finished" | "preempted" | "stop_at_step", from the final reports the ranks wrote."""
    return {r: str(rep.get("stopped")) for r, rep in _rank_reports(run).items() if rep.get("stopped")}


def _rank_steps(run: RunDir) -> dict[str, int]:
    return {r: int(rep["step"]) for r, rep in _rank_reports(run).items() if isinstance(rep.get("step"), int)}


def _end_preempted(cfg: RunConfig, run: RunDir, stopped: dict[str, str], signame: str | None, steps: dict) -> None:
    """A preemption signal reached the run: Preempted if this node's ranks all stopped after the same step and its
    checkpoint is complete, or if the run ended anyway (a signal during the last step: a finished run returns)."""
    if stopped and all(v == "finished" for v in stopped.values()):
        return  # the signal came during the final step or the final save: the run is complete
    step_of = _rank_steps(run)
    found = {step: p for step, p in checkpoints(run.root) if is_complete(p)}
    steps_stopped = {step_of.get(r) for r, v in stopped.items() if v == "preempted"}
    signame = signame or next(
        (str(rep.get("signal")) for rep in _rank_reports(run).values() if rep.get("signal")), "a preemption signal"
    )
    if len(steps_stopped) == 1 and (step := steps_stopped.pop()) in found:
        write_state(run.root, STATE_PREEMPTED, **steps, step=step, signal=signame)
        if cfg.nnodes == 1 or (cfg.node_rank or 0) == 0:
            summary = {"schema": schemas.RUN_SUMMARY, **summarize(cfg)}
            run.summary.write_text(json.dumps(summary, indent=1) + "\n")
        raise Preempted(
            f"{signame}: every rank stopped after step {step} of {cfg.train.max_steps}; {found[step].name} is "
            f"complete ({run.root})",
            "continue it exactly with the same command and --resume (llmpt run-node --resume on a cluster)",
        )
    newest = max(found, default=None)
    kept = f"the newest complete checkpoint is checkpoint-{newest}" if newest else "no checkpoint was saved yet"
    write_state(run.root, STATE_PREEMPTED, **steps, step=newest, signal=signame)
    raise Preempted(
        f"{signame}: every rank stopped before it could save a step of this attempt ({kept}; {run.root})",
        "continue with --resume" if newest else "start it again (without --resume)",
    )


def _runs_rank_entry(pid: int) -> bool:
    try:
        return str(RANK_ENTRY).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _die_with_parent() -> None:
    # in the launcher, between fork and exec: SIGKILL when llmpt exits (Linux; elsewhere nothing)
    _PRCTL(1, int(signal.SIGKILL), 0, 0, 0) if _PRCTL is not None else None


def _libc_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()


class Preemption:
    """While the ranks run: SIGTERM and the run's preemption signal make the ranks stop after the same step with a
    checkpoint (ranks/preempt.json, which every rank reads at each step end); Ctrl-C still stops everything."""

    def __init__(self, run: RunDir, preempt_signal: str) -> None:
        self.run = run
        self.signals = (signal.SIGTERM, signal.Signals[preempt_signal])
        self.signal: str | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._on_signal) for s in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    @contextlib.contextmanager
    def ignored(self):
        """The preemption signal ignored while the launcher starts, so that it inherits SIG_IGN for it."""
        sig = self.signals[1]
        if sig not in self.previous:
            yield
            return
        signal.signal(sig, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self.signal is not None:
            return
        self.signal = signal.Signals(signum).name
        self.run.ranks.mkdir(parents=True, exist_ok=True)
        tmp = self.run.preempt_request.with_name(".preempt.json.tmp")
        tmp.write_text(json.dumps({"signal": self.signal, "t": time.time()}))
        tmp.replace(self.run.preempt_request)


def _stop(proc: subprocess.Popen, out: Path) -> None:
    """SIGKILL every rank of this node (each runs in its own session) and the launcher: a hard stop (SIGTERM would
    now mean "preempt": finish the step and save)."""
    for _, pid in local_rank_pids(out):
        if _runs_rank_entry(pid):  # not a stranger that got a dead rank's pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
