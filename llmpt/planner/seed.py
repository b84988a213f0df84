"""The seed's 8xA100 performance table (seed_table.yaml) and the planner's prediction for each row."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llmpt.fsutil import load_shipped_yaml
from llmpt.planner.devices import resolve_device
from llmpt.planner.estimate import Estimate, Layout, estimate

SEED_TABLE = Path(__file__).with_name("seed_table.yaml")


@dataclass(frozen=True)
class SeedRow:
    model: str
    strategy: str
    micro_batch: int
    accumulation: int
    tokens_per_card_per_sec: float
    memory_mb: float
    config: str
    recompute: str = "off"


@lru_cache(maxsize=1)
def seed_table() -> tuple[dict, tuple[SeedRow, ...]]:
    data = load_shipped_yaml(SEED_TABLE)
    rows = tuple(SeedRow(**r) for r in data.pop("rows"))
    return data, rows


def row_layout(row: SeedRow, **changes) -> Layout:
    """The layout PaddleNLP ran for a row: its strategy with the config file's batch, on the table's machine.

    `changes` override seq_len / micro_batch / accumulation / strategy (for what-if tests)."""
    from llmpt.resolve import RunRequest, resolve_plan

    meta, _ = seed_table()
    seq_len = changes.get("seq_len", meta["seq_len"])
    batch = {
        "micro_batch_size": changes.get("micro_batch", row.micro_batch),
        "grad_accum": changes.get("accumulation", row.accumulation),
    }
    plan = resolve_plan(
        RunRequest(
            model=row.model,
            strategy=changes.get("strategy", row.strategy),
            gpus=str(meta["gpus"]),
            seq_len=seq_len,
            set_items=tuple(f"strategy.batch.{k}={v}" for k, v in batch.items()),
            device="gpu",
            device_type=meta["machine"],
            local=False,
        )
    )
    if plan.strategy.recompute.granularity != row.recompute and "strategy" not in changes:
        raise ValueError(f"{row.model}: preset recompute {plan.strategy.recompute.granularity} != {row.recompute}")
    return Layout(plan.model, plan.strategy, plan.expansion.degrees, seq_len, meta["gpus"], from_scratch=False)


def predict(row: SeedRow, **changes) -> Estimate:
    meta, _ = seed_table()
    return estimate(row_layout(row, **changes), resolve_device(meta["machine"]))


# ---- the two fitted constants, refit on any subset of rows (bench/plan_vs_seed.py: in sample and leave-one-out) ----


def _bisect(f, lo: float, hi: float, steps: int = 60) -> float:
    """The root of an increasing f on [lo, hi]."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def fit_runtime_mb(counted_mb: list[float], measured_mb: list[float]) -> float:
    """The runtime term (estimate.RUNTIME_MB_GPU) that makes the largest over- and under-prediction of memory equal in
    relative size: prediction = counted tensors + runtime, so each row's error is linear in it."""

    def gap(c: float) -> float:
        over = max((n + c) / m - 1 for n, m in zip(counted_mb, measured_mb, strict=True))
        under = max(1 - (n + c) / m for n, m in zip(counted_mb, measured_mb, strict=True))
        return over - under

    return _bisect(gap, -50000.0, 50000.0)


def fit_matmul_efficiency(layouts: list[Layout], measured_tps: list[float], device) -> float:
    """The matmuls' share of peak (devices.yaml expected_hfu) that makes the largest over- and under-prediction of
    tokens/card/s equal in relative size (each row's prediction grows with it)."""

    def gap(eff: float) -> float:
        dev = device.model_copy(update={"expected_hfu": eff})
        r = [estimate(lay, dev).tokens_per_card_per_sec / m for lay, m in zip(layouts, measured_tps, strict=True)]
        return max(x - 1 for x in r) - max(1 - x for x in r)

    return _bisect(gap, 0.05, 1.0, steps=40)
