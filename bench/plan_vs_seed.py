"""The planner against the seed's 8xA100 table: predicted and reported memory and tokens/card/s, row by row, in
sample and leave-one-out.

    .venv/bin/python bench/plan_vs_seed.py

The planner has two fitted constants, both fitted here by minimax relative error over the seed's rows: the GPU runtime
term (llmpt/planner/estimate.py RUNTIME_MB_GPU) and the A100's matmul efficiency (devices.yaml expected_hfu).
Everything else is counted from shapes or taken from a cited source (datasheets, Paddle's and PaddleNLP's code).
In sample: the shipped constants, every row. Leave-one-out: for each row, both constants refit on the other 10 rows,
then that row predicted.
"""

from __future__ import annotations

from statistics import mean

from llmpt.planner.devices import resolve_device
from llmpt.planner.estimate import RUNTIME_MB_GPU, estimate
from llmpt.planner.seed import fit_matmul_efficiency, fit_runtime_mb, row_layout, seed_table


def _summary(label: str, errors: list[float]) -> str:
    worst = max(errors, key=abs)
    return f"{label}: worst {worst:+.1%}, mean |error| {mean(abs(e) for e in errors):.1%}"


def main() -> None:
    meta, rows = seed_table()
    device = resolve_device(meta["machine"])
    layouts = [row_layout(r) for r in rows]
    ests = [estimate(lay, device) for lay in layouts]
    counted = [e.memory_mb_per_card - RUNTIME_MB_GPU for e in ests]
    mem = [r.memory_mb for r in rows]
    tps = [r.tokens_per_card_per_sec for r in rows]
    print(f"seed table: {len(rows)} rows, {meta['gpus']}x {meta['machine']}, seq {meta['seq_len']}")
    print(
        f"shipped constants: RUNTIME_MB_GPU = {RUNTIME_MB_GPU:.0f}, {device.name} expected_hfu = {device.expected_hfu}"
    )
    fit_rt, fit_eff = fit_runtime_mb(counted, mem), fit_matmul_efficiency(layouts, tps, device)
    print(f"refit on all {len(rows)} rows: RUNTIME_MB_GPU = {fit_rt:.0f}, expected_hfu = {fit_eff:.4f}")
    head = (
        f"{'model':34} {'strategy':13} {'mem seed':>8} {'in':>6} {'loo':>6}   "
        f"{'tok/s seed':>10} {'in':>6} {'loo':>6}  {'MFU':>5}  loo constants"
    )
    print(head)
    print("-" * len(head))
    errs: dict[str, list[float]] = {"mem_in": [], "mem_loo": [], "tps_in": [], "tps_loo": []}
    for i, (r, e) in enumerate(zip(rows, ests, strict=True)):
        rest = [j for j in range(len(rows)) if j != i]
        rt = fit_runtime_mb([counted[j] for j in rest], [mem[j] for j in rest])
        eff = fit_matmul_efficiency([layouts[j] for j in rest], [tps[j] for j in rest], device)
        loo = estimate(layouts[i], device.model_copy(update={"expected_hfu": eff}))
        m_in, m_loo = e.memory_mb_per_card / r.memory_mb - 1, (counted[i] + rt) / r.memory_mb - 1
        t_in, t_loo = (
            e.tokens_per_card_per_sec / r.tokens_per_card_per_sec - 1,
            loo.tokens_per_card_per_sec / tps[i] - 1,
        )
        for k, v in zip(errs, (m_in, m_loo, t_in, t_loo), strict=True):
            errs[k].append(v)
        print(
            f"{r.model[:34]:34} {r.strategy:13} {r.memory_mb:8.0f} {m_in:+6.1%} {m_loo:+6.1%}   "
            f"{r.tokens_per_card_per_sec:10.1f} {t_in:+6.1%} {t_loo:+6.1%}  {e.mfu:5.1%}  {rt:6.0f} MB, {eff:.4f}"
        )
    print(_summary("memory, in sample", errs["mem_in"]))
    print(_summary("memory, leave-one-out", errs["mem_loo"]))
    print(_summary("tokens/card/s, in sample", errs["tps_in"]))
    print(_summary("tokens/card/s, leave-one-out", errs["tps_loo"]))


if __name__ == "__main__":
    main()
