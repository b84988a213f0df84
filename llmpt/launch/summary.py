"""A finished run's numbers, measured the way the seed table was: from metrics.jsonl and the ranks' reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmpt.run_config import RunConfig
from llmpt.run_dir import (
    EVENT_BEGIN,
    EVENT_CHECKPOINT_LOAD,
    EVENT_CHECKPOINT_SAVE,
    EVENT_EVAL,
    EVENT_LOG,
    EVENT_STEP,
    RunDir,
)

SPARK = "▁▂▃▄▅▆▇█"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written when the run died
    return out


class MetricsTail:
    """metrics.jsonl read as it grows: each read() parses only the complete lines appended since the last one, so a
    progress line every few seconds costs the new steps, not the whole run (a 100k-step run's file is ~30 MB)."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._offset = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                if f.seek(0, 2) < self._offset:  # replaced by a shorter file (a new run in the same directory)
                    self.records, self._offset = [], 0
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.records
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                self.records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut when a run died, then appended to by the resumed run
        return self.records


def step_times(records: list[dict[str, Any]]) -> dict[int, float]:
    """Seconds each step took: the gap between its step-end event and the previous one."""
    ends = {r["step"]: r["t"] for r in records if r.get("event") in (EVENT_STEP, EVENT_BEGIN)}
    return {s: ends[s] - ends[s - 1] for s in sorted(ends) if s - 1 in ends and s > 0}


def throughput_window(last_step: int) -> tuple[int, int]:
    # PaddleNLP's harness: 10 steps, mean over steps 3..8; longer runs: every step from 3 on
    return (3, 8) if last_step <= 10 else (3, last_step)


def losses(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    by_step = {r["step"]: r for r in records if r.get("event") == EVENT_LOG}
    return [
        {"step": s, "loss": by_step[s]["loss"], "learning_rate": by_step[s]["learning_rate"]} for s in sorted(by_step)
    ]


def eval_losses(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The validation loss of every evaluation (train.eval_steps), by step; a resumed run's repeat wins."""
    by_step = {r["step"]: r for r in records if r.get("event") == EVENT_EVAL}
    return [{"step": s, "loss": by_step[s]["loss"]} for s in sorted(by_step)]


_SAVE_KEYS = ("step", "seconds", "bytes")
_LOAD_KEYS = ("step", "checkpoint", "saved_by", "seconds", "model_seconds", "optimizer_seconds", "bytes")


def checkpoint_saves(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every checkpoint save by step (rank 0's measure: seconds the training paused, bytes on disk); a resumed
    run's repeat wins."""
    by_step = {r["step"]: r for r in records if r.get("event") == EVENT_CHECKPOINT_SAVE}
    return [{k: by_step[s].get(k) for k in _SAVE_KEYS} for s in sorted(by_step)]


def checkpoint_loads(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every resume's load of a checkpoint, in order (weights and optimizer state, seconds on rank 0)."""
    return [{k: r.get(k) for k in _LOAD_KEYS} for r in records if r.get("event") == EVENT_CHECKPOINT_LOAD]


def summarize(cfg: RunConfig) -> dict[str, Any]:
    run = RunDir(cfg.output_dir)
    records = read_metrics(run.metrics)
    times = step_times(records)
    last = max(times, default=0)
    lo, hi = throughput_window(last)
    window = [times[s] for s in range(lo, hi + 1) if s in times] or list(times.values())
    mean_step = sum(window) / len(window) if window else float("nan")
    per_card = cfg.tokens_per_step / mean_step / cfg.world_size if window else float("nan")
    peaks = [json.loads(p.read_text())["peak_memory_mb"] for p in run.rank_reports()]
    curve = losses(records)
    evals = eval_losses(records)
    return {
        "model": cfg.model.id,
        "strategy": cfg.strategy.name,
        "device": cfg.device,
        "world_size": cfg.world_size,
        "seq_len": cfg.data.seq_len,
        "steps": last,
        "tokens_per_step": cfg.tokens_per_step,
        "throughput_window": [lo, hi],
        "mean_step_seconds": mean_step,
        "tokens_per_card_per_sec": per_card,
        "mfu": mfu(cfg, per_card),
        "predicted": _predicted(cfg),
        "peak_memory_mb": max(peaks) if peaks else None,
        "peak_memory_kind": "paddle max_memory_allocated" if cfg.device == "gpu" else "peak RSS of the ranks",
        "losses": curve,
        "final_loss": curve[-1]["loss"] if curve else None,
        "eval_losses": evals,
        "final_eval_loss": evals[-1]["loss"] if evals else None,
        "checkpoint_saves": checkpoint_saves(records),
        "checkpoint_loads": checkpoint_loads(records),
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def checkpoint_line(summary: dict[str, Any]) -> str | None:
    """The text summary's account of checkpoints: saves (count, size, seconds) and each resume's load."""
    saves = [s for s in summary.get("checkpoint_saves") or [] if s.get("seconds") is not None]
    loads = summary.get("checkpoint_loads") or []
    parts = []
    if saves:
        sizes = sorted({s["bytes"] for s in saves if s.get("bytes") is not None})
        size = "" if not sizes else _mib(sizes[0]) if len(sizes) == 1 else f"{_mib(sizes[0])}..{_mib(sizes[-1])}"
        slowest = max(saves, key=lambda s: s["seconds"])
        mean = sum(s["seconds"] for s in saves) / len(saves)
        steps = ", ".join(str(s["step"]) for s in saves[:6]) + (", …" if len(saves) > 6 else "")
        parts.append(
            f"{len(saves)} saved (step {steps}){', ' + size + ' each' if size else ''}, {mean:.2f} s mean, "
            f"{slowest['seconds']:.2f} s max (step {slowest['step']})"
        )
    for ld in loads:
        by = f" (saved by {ld['saved_by']})" if ld.get("saved_by") else ""
        parts.append(
            f"resumed from {ld['checkpoint']}{by} in {ld['seconds']:.2f} s (weights {ld['model_seconds']:.2f} s, "
            f"optimizer {ld['optimizer_seconds']:.2f} s, {_mib(ld['bytes'])})"
        )
    return "checkpoints: " + "; ".join(parts) if parts else None


def mfu(cfg: RunConfig, tokens_per_card_per_sec: float) -> float | None:
    """Model FLOPs utilisation of a GPU run against the planner's device peak; None on CPU or unknown cards."""
    est = cfg.estimate or {}
    if cfg.device != "gpu" or est.get("device") in (None, "cpu") or tokens_per_card_per_sec != tokens_per_card_per_sec:
        return None
    from llmpt.planner.devices import resolve_device

    peak = resolve_device(est["device"]).peak_tflops.get(cfg.strategy.precision.dtype)
    return None if peak is None else tokens_per_card_per_sec * est["model_flops_per_token"] / (peak * 1e12)


def _predicted(cfg: RunConfig) -> dict[str, Any] | None:
    """What llmpt plan predicted for this run, beside what it measured."""
    est = cfg.estimate
    if not est:
        return None
    return {k: est[k] for k in ("device", "memory_mb_per_card", "memory_mb", "tokens_per_card_per_sec")}


def sparkline(values: list[float], width: int = 60) -> str:
    if not values:
        return ""
    if len(values) > width:
        k = len(values) / width
        values = [values[int(i * k)] for i in range(width)]
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in values)


def plot_losses(summary: dict[str, Any], path: Path) -> Path | None:
    """DIR/loss.png; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = [p["step"] for p in summary["losses"]]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, [p["loss"] for p in summary["losses"]], lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{summary['model']} · {summary['strategy']} · {summary['device']} x{summary['world_size']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
