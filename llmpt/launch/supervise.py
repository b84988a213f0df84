"""Running the launcher: write run.yaml, start paddle.distributed.launch, follow rank 0, stop every rank on
failure or Ctrl-C, and summarise."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmpt import schemas
from llmpt.errors import LlmptError
from llmpt.fsutil import check_writable, probe_writable, why_unwritable
from llmpt.launch.checkpoints import checkpoints
from llmpt.launch.command import run_launch_command
from llmpt.launch.summary import plot_losses, read_metrics, summarize
from llmpt.run_config import RunConfig, write_run_yaml
from llmpt.run_dir import RunDir

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
    """A new attempt's ranks report afresh: stale pid files and reports would hide a dead rank."""
    run = RunDir(out)
    for p in run.rank_reports() + run.pid_files():
        p.unlink()


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
    dead = []
    for pid_file in run.pid_files():
        rank = run.rank_of(pid_file)
        try:
            pid_text, _, host = pid_file.read_text().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if host.strip() and host.strip() != socket.gethostname():
            continue  # a rank on another node sharing this directory: its own node watches it
        if not run.rank_report(rank).exists() and not _alive(pid):
            dead.append((rank, pid))
    return dead


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
    """Launch this node's ranks of `cfg` and wait; return the summary (also DIR/summary.json, DIR/loss.png)."""
    out = Path(cfg.output_dir)
    run = RunDir(out)
    write_run_yaml(cfg, run.run_yaml)
    log_dir = run.log_dir(cfg.nnodes, cfg.node_rank)
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = run_launch_command(cfg)
    env = dict(os.environ)
    metrics = run.metrics
    with RunDir.launcher_log(log_dir).open("ab") as launcher_log:
        proc = subprocess.Popen(cmd, stdout=launcher_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        seen_dead: list[tuple[str, int]] = []  # in the order the ranks were seen gone
        dead_since = 0.0
        polls = 0
        try:
            while proc.poll() is None:
                if progress and polls % 5 == 0:
                    progress({"records": read_metrics(metrics)})
                polls += 1
                for d in dead_ranks(out):
                    if d not in seen_dead:
                        seen_dead.append(d)
                        dead_since = dead_since or time.monotonic()
                if seen_dead and time.monotonic() - dead_since > DEAD_RANK_GRACE_S:
                    _stop(proc)  # the launcher did not notice (e.g. the rest hang in a collective): stop them
                    rank, pid = _culprit(seen_dead, log_dir)
                    raise TrainingFailed(
                        f"training failed: rank {rank} (pid {pid}) died before finishing; every rank was stopped "
                        f"(logs: {log_dir})",
                        f"see {RunDir.worker_log(log_dir, rank)} ; continue from the last complete checkpoint "
                        "with --resume",
                    )
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            _stop(proc)
            raise TrainingFailed(
                "interrupted: every rank was stopped",
                f"the last complete checkpoint (if any) is kept in {out}; continue with --resume",
            ) from None
    if progress:
        progress({"records": read_metrics(metrics)})
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
        tail = "\n".join("    " + ln for ln in failed[1]) if failed else ""
        raise TrainingFailed(
            f"training failed: {where} (logs: {log_dir})" + (f"\n{tail}" if tail else ""),
            f"see {log_dir}/workerlog.* ; after fixing, continue with --resume",
        )
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


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the launcher's process group (every rank), then SIGKILL whatever is left."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
