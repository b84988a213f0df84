"""Running the launcher: write run.yaml, start paddle.distributed.launch, follow rank 0, stop every rank on
failure or Ctrl-C, and summarise."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmpt.errors import LlmptError
from llmpt.launch.command import Topology, build_launch_command
from llmpt.launch.summary import plot_losses, read_metrics, summarize
from llmpt.run_config import RunConfig, write_run_yaml

ProgressFn = Callable[[dict[str, Any]], None]
_CKPT = re.compile(r"^checkpoint-(\d+)$")
_ERROR = re.compile(r"\b\w+(Error|Exception)\b")


class TrainingFailed(LlmptError):
    """A rank died or the launcher failed; the message names the rank and shows its last log lines."""

    exit_code = 1


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint-N (PaddleNLP writes trainer_state.json last)."""
    if not output_dir.is_dir():
        return None
    done = [
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if (m := _CKPT.match(p.name)) and p.is_dir() and (p / "trainer_state.json").is_file()
    ]
    return max(done)[1] if done else None


def prepare_output_dir(cfg: RunConfig, resume: bool, overwrite: bool) -> RunConfig:
    """Refuse to mix runs: a directory with a previous run needs --resume or --overwrite."""
    out = Path(cfg.output_dir)
    previous = out.is_dir() and (
        any((out / n).exists() for n in ("run.yaml", "metrics.jsonl")) or any(out.glob("checkpoint-*"))
    )
    if resume:
        ckpt = last_checkpoint(out)
        if ckpt is None:
            raise LlmptError(f"--resume: no complete checkpoint in {out}", "train without --resume first")
        return cfg.model_copy(update={"training_args": {**cfg.training_args, "resume_from_checkpoint": str(ckpt)}})
    if previous and not overwrite:
        raise LlmptError(
            f"--output-dir {out} holds a previous run",
            "pass --resume to continue it, --overwrite to start over, or another --output-dir",
        )
    if previous:
        for name in ("metrics.jsonl", "summary.json", "loss.png"):
            (out / name).unlink(missing_ok=True)
        for p in list(out.glob("checkpoint-*")) + list((out / "ranks").glob("rank*.json")):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return cfg


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
    poll_seconds: float = 0.5,
) -> dict[str, Any]:
    """Launch every rank on this node and wait; return the summary (also DIR/summary.json, DIR/loss.png)."""
    out = Path(cfg.output_dir)
    run_yaml = out / "run.yaml"
    write_run_yaml(cfg, run_yaml)
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = build_launch_command(topo, run_yaml, log_dir)
    env = dict(os.environ)
    metrics = out / "metrics.jsonl"
    with (log_dir / "launcher.log").open("ab") as launcher_log:
        proc = subprocess.Popen(cmd, stdout=launcher_log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            while proc.poll() is None:
                if progress:
                    progress({"records": read_metrics(metrics)})
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
        where = f"{failed[0]} failed" if failed else f"the launcher exited with code {proc.returncode}"
        tail = "\n".join("    " + ln for ln in failed[1]) if failed else ""
        raise TrainingFailed(
            f"training failed: {where} (logs: {log_dir})" + (f"\n{tail}" if tail else ""),
            f"see {log_dir}/workerlog.* ; after fixing, continue with --resume",
        )
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
