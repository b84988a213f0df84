"""Running the launcher: write run.yaml, start paddle.distributed.launch, follow rank 0, stop every rank on
failure or Ctrl-C, and summarise."""

from __future__ import annotations

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

from llmpt.errors import LlmptError
from llmpt.fsutil import probe_writable
from llmpt.launch.checkpoints import checkpoints, last_complete
from llmpt.launch.command import Topology, build_launch_command, log_dir_for
from llmpt.launch.summary import plot_losses, read_metrics, summarize
from llmpt.run_config import RunConfig, write_run_yaml

ProgressFn = Callable[[dict[str, Any]], None]
_ERROR = re.compile(r"\b\w+(Error|Exception)\b")


class TrainingFailed(LlmptError):
    """A rank died or the launcher failed; the message names the rank and shows its last log lines."""

    exit_code = 1


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint-N (marked by llmpt after every rank finished saving)."""
    return last_complete(output_dir)


def prepare_output_dir(cfg: RunConfig, resume: bool, overwrite: bool) -> RunConfig:
    """Refuse to mix runs: a directory with a previous run needs --resume or --overwrite."""
    out = Path(cfg.output_dir)
    _check_writable(out)
    previous = out.is_dir() and (
        any((out / n).exists() for n in ("run.yaml", "metrics.jsonl")) or any(out.glob("checkpoint-*"))
    )
    if resume:
        ckpt = last_checkpoint(out)
        if ckpt is None:
            raise LlmptError(f"--resume: no complete checkpoint in {out}", "train without --resume first")
        _clear_rank_reports(out)
        chosen = int(ckpt.name.split("-")[1])
        for step, p in checkpoints(out):
            if step > chosen:  # a save cut short: its leftovers must not mix into the next save of that step
                shutil.rmtree(p)
        return cfg.model_copy(update={"training_args": {**cfg.training_args, "resume_from_checkpoint": str(ckpt)}})
    if previous and not overwrite:
        raise LlmptError(
            f"--output-dir {out} holds a previous run",
            "pass --resume to continue it, --overwrite to start over, or another --output-dir",
        )
    if previous:
        for name in ("metrics.jsonl", "summary.json", "loss.png"):
            (out / name).unlink(missing_ok=True)
        for p in out.glob("checkpoint-*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        _clear_rank_reports(out)
    return cfg


def _check_writable(out: Path) -> None:
    """The run directory can be created and written, checked before anything in it is touched."""
    try:
        probe_writable(out)
    except OSError as e:
        raise LlmptError(
            f"--output-dir {out}: cannot write there ({e.strerror or e})", "choose a writable --output-dir"
        ) from None


def _clear_rank_reports(out: Path) -> None:
    """A new attempt's ranks report afresh: stale pid files and reports would hide a dead rank."""
    for p in list((out / "ranks").glob("rank*.json")) + list((out / "ranks").glob("rank*.pid")):
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
    log = log_dir / "launcher.log"
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
    dead = []
    for pid_file in sorted((out / "ranks").glob("rank*.pid")):
        rank = pid_file.stem.removeprefix("rank")
        try:
            pid_text, _, host = pid_file.read_text().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if host.strip() and host.strip() != socket.gethostname():
            continue  # a rank on another node sharing this directory: its own node watches it
        if not (out / "ranks" / f"rank{rank}.json").exists() and not _alive(pid):
            dead.append((rank, pid))
    return dead


def _culprit(seen_dead: list[tuple[str, int]], log_dir: Path) -> tuple[str, int]:
    """The rank that caused the failure: the first seen gone whose log ends without an error (killed from outside:
    SIGKILL, the OOM killer), else the first seen gone. Its peers die of the loss with a gloo/NCCL error."""
    clean = [d for d in seen_dead if not _log_shows_error(log_dir / f"workerlog.{d[0]}")]
    return (clean or seen_dead)[0]


def _log_shows_error(log: Path) -> bool:
    if not log.is_file():
        return False
    lines = log.read_text(errors="replace").splitlines()[-200:]
    return any("Traceback" in ln or "terminate called" in ln or _ERROR.search(ln) for ln in lines)


def _failed_rank(log_dir: Path) -> tuple[str, list[str]] | None:
    """The first worker log that shows an error, and its last lines."""
    logs = sorted(log_dir.glob("workerlog.*"), key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    for p in [*logs, log_dir / "launcher.log"]:
        if not p.is_file():
            continue
        lines = p.read_text(errors="replace").splitlines()
        if any("Traceback" in ln or _ERROR.search(ln) for ln in lines[-200:]):
            tail = [ln for ln in lines if ln.strip()][-15:]
            return (p.name.replace("workerlog.", "rank ") if p.name.startswith("workerlog") else "the launcher"), tail
    return None


def run_training(
    cfg: RunConfig,
    topo: Topology,
    progress: ProgressFn | None = None,
    poll_seconds: float = 0.1,
) -> dict[str, Any]:
    """Launch every rank on this node and wait; return the summary (also DIR/summary.json, DIR/loss.png)."""
    out = Path(cfg.output_dir)
    run_yaml = out / "run.yaml"
    write_run_yaml(cfg, run_yaml)
    log_dir = log_dir_for(out, topo)
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = build_launch_command(topo, run_yaml, log_dir)
    env = dict(os.environ)
    metrics = out / "metrics.jsonl"
    with (log_dir / "launcher.log").open("ab") as launcher_log:
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
                        f"see {log_dir}/workerlog.{rank} ; continue from the last complete checkpoint with --resume",
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
        if seen_dead and not _log_shows_error(log_dir / f"workerlog.{rank}"):
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
    if topo.nnodes > 1 and (topo.node_rank or 0) != 0:
        # rank 0 lives on node 0 and writes the metrics; this node only reports that its ranks finished
        return {"node_rank": topo.node_rank, "ranks_finished": True, "summary": f"on node 0, {out}/summary.json"}
    summary = summarize(cfg)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_losses(summary, out / "loss.png")
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
