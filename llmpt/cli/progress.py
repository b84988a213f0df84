"""A running job's progress on stderr, fed from rank 0's metrics.jsonl: a live bar on a terminal; in a log that is
not one (Slurm's, a pipe) a plain line at the first step, then every train.progress_every_steps steps or
train.progress_every_s seconds, whichever comes first, and at the last step."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from llmpt.cli._common import err_console
from llmpt.launch.summary import step_times
from llmpt.run_dir import EVENT_BEGIN, EVENT_LOG

MEAN_OVER_STEPS = 10  # tokens/s and the ETA: the mean of the last 10 steps' times


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def snapshot(records: list[dict[str, Any]], max_steps: int, tokens_per_step: int, at: int | None = None) -> dict:
    """step, loss, lr, tokens/s and ETA (seconds) as of step `at` (default: the newest step)."""
    times = step_times(records)
    step = max(times, default=0) if at is None else at
    logs = [r for r in records if r.get("event") == EVENT_LOG and r.get("step", 0) <= step]
    recent = [times[s] for s in sorted(s for s in times if s <= step)[-MEAN_OVER_STEPS:]]
    per_step = sum(recent) / len(recent) if recent else None
    return {
        "step": step,
        "loss": logs[-1]["loss"] if logs else None,
        "learning_rate": logs[-1]["learning_rate"] if logs else None,
        "tokens_per_sec": tokens_per_step / per_step if per_step else None,
        "eta_s": per_step * max(max_steps - step, 0) if per_step else None,
    }


def this_attempt(records: list[dict[str, Any]], since: float) -> list[dict[str, Any]]:
    """The records from this attempt's training start (a begin event at or after `since`, wall-clock seconds): a
    resumed run appends to the metrics of earlier attempts."""
    begins = [i for i, r in enumerate(records) if r.get("event") == EVENT_BEGIN and r.get("t", 0) >= since]
    return records[begins[-1] :] if begins else []


def plain_line(snap: dict[str, Any], max_steps: int) -> str:
    parts = [f"step {snap['step']}/{max_steps}"]
    if snap["loss"] is not None:
        parts += [f"loss {snap['loss']:.4f}", f"lr {snap['learning_rate']:.2e}"]
    if snap["tokens_per_sec"] is not None:
        parts += [f"{snap['tokens_per_sec']:,.0f} tok/s", f"ETA {_clock(snap['eta_s'])}"]
    return " · ".join(parts)


class PlainLines:
    """When to print a plain line: the first step, every `every_steps` steps or `every_s` seconds, the last step."""

    def __init__(self, max_steps: int, every_steps: int, every_s: float, now: Callable[[], float] = time.monotonic):
        self.max_steps = max_steps
        self.every_steps = every_steps
        self.every_s = every_s
        self.now = now
        self.printed_step: int | None = None
        self.printed_at = 0.0

    def due(self, step: int, done: bool = False) -> bool:
        if step <= 0 or step == self.printed_step:
            return False
        first = self.printed_step is None
        last = step >= self.max_steps or done
        cadence = not first and (
            step - self.printed_step >= self.every_steps or self.now() - self.printed_at >= self.every_s
        )
        if first or last or cadence:
            self.printed_step, self.printed_at = step, self.now()
            return True
        return False


def progress_printer(cfg) -> Callable[[dict[str, Any]], None]:
    """The supervisor's progress callback for a resolved run: a rich bar on a terminal, else plain lines."""
    max_steps, tokens = cfg.train.max_steps, cfg.tokens_per_step
    started = time.time()
    if not err_console.is_terminal:
        lines = PlainLines(max_steps, cfg.train.progress_every_steps, cfg.train.progress_every_s)

        def plain(info: dict[str, Any]) -> None:
            records = this_attempt(info["records"], started)
            # every step that ended since the last call, in order: the first and every Nth are printed even when
            # several ended between two polls
            ended = sorted(s for s in step_times(records) if s > (lines.printed_step or 0))
            for i, step in enumerate(ended):
                if lines.due(step, done=info.get("done", False) and i == len(ended) - 1):
                    snap = snapshot(records, max_steps, tokens, at=step)
                    err_console.print(plain_line(snap, max_steps), highlight=False, soft_wrap=True)

        return plain
    return _bar(max_steps, tokens, started)


def _bar(max_steps: int, tokens_per_step: int, started: float) -> Callable[[dict[str, Any]], None]:
    from rich.progress import BarColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("[bold]step[/] {task.completed:>5.0f}/{task.total:.0f}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("lr {task.fields[lr]}"),
        TextColumn("{task.fields[tps]} tok/s"),
        TextColumn("ETA {task.fields[eta]}"),
        console=err_console,
        transient=True,
    )
    state: dict[str, Any] = {"task": None}

    def update(info: dict[str, Any]) -> None:
        if state["task"] is None:
            bar.start()
            state["task"] = bar.add_task("train", total=max_steps, loss="-", lr="-", tps="-", eta="-")
        snap = snapshot(this_attempt(info["records"], started), max_steps, tokens_per_step)
        fields = {}
        if snap["loss"] is not None:
            fields |= {"loss": f"{snap['loss']:.4f}", "lr": f"{snap['learning_rate']:.2e}"}
        if snap["tokens_per_sec"] is not None:
            fields |= {"tps": f"{snap['tokens_per_sec']:,.0f}", "eta": _clock(snap["eta_s"])}
        bar.update(state["task"], completed=snap["step"], **fields)
        if snap["step"] >= max_steps or info.get("done"):
            bar.stop()

    return update
