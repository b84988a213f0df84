"""llmpt train's overhead: the same tiny model, data and steps through `llmpt train` and through a bare
PaddleNLP Trainer script (bench/bare_trainer.py), both via paddle.distributed.launch, side by side.

Prints steady-state tokens/s (mean over steps 3..N) and start-up time (launch to first step end) of each,
and the ratio llmpt/bare (target >= 0.98).

    .venv/bin/python bench/train_overhead.py [--steps 60] [--strategy dp2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmpt.launch.summary import read_metrics, step_times

ROOT = Path(__file__).resolve().parents[1]


def steady(records, lo=3) -> float:
    times = step_times(records)
    window = [t for s, t in times.items() if s >= lo]
    return statistics.mean(window)


def first_step_end(records) -> float:
    return min(r["t"] for r in records if r.get("event") == "step")


def run_llmpt(out: Path, steps: int, strategy: str, tokens_per_step: list) -> tuple[float, float]:
    t0 = time.time()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmpt.cli",
            "train",
            "llama-tiny",
            "--strategy",
            strategy,
            "--device",
            "cpu",
            "--max-steps",
            str(steps),
            "-o",
            str(out),
            "--json",
            "--overwrite",
            "--set",
            "train.report_to=none",
            "--set",
            "strategy.batch.micro_batch_size=8",
            "--set",
            "strategy.batch.grad_accum=1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(r.stdout)
    tokens_per_step.append(summary["tokens_per_step"])
    records = read_metrics(out / "metrics.jsonl")
    return steady(records), first_step_end(records) - t0


def run_bare(run_yaml: Path, out: Path, nproc: int) -> tuple[float, float]:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "paddle.distributed.launch",
            "--log_dir",
            str(out / "logs"),
            "--nproc_per_node",
            str(nproc),
            str(ROOT / "bench" / "bare_trainer.py"),
            str(run_yaml),
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    records = read_metrics(out / "bare_steps.jsonl")
    return steady(records), first_step_end(records) - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--strategy", default="dp2")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    nproc = int("".join(c for c in args.strategy if c.isdigit()) or 1)
    res = {"llmpt": [], "bare": []}
    tps: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            out = Path(tmp) / f"llmpt{i}"
            res["llmpt"].append(run_llmpt(out, args.steps, args.strategy, tps))
            res["bare"].append(run_bare(out / "run.yaml", Path(tmp) / f"bare{i}", nproc))
    tokens = tps[0]
    print(
        f"llama-tiny, {args.strategy} on CPU, {args.steps} steps, {tokens} tokens/step, {args.repeat} alternating runs"
    )
    med = {}
    for name, runs in res.items():
        step = statistics.median(r[0] for r in runs)
        start = statistics.median(r[1] for r in runs)
        med[name] = tokens / step
        print(
            f"{name:6s} steady {tokens / step:10,.0f} tokens/s ({step * 1000:6.1f} ms/step)   start-up {start:5.1f} s"
        )
    print(f"ratio llmpt/bare steady-state tokens/s: {med['llmpt'] / med['bare']:.3f}")


if __name__ == "__main__":
    main()
