"""The planner against the seed's 8xA100 table: predicted and reported memory and tokens/card/s, row by row.

    .venv/bin/python bench/plan_vs_seed.py [--fit]

--fit also prints the two calibrated constants that minimise the worst relative error over the 11 rows: the GPU
runtime term (llmpt/planner/estimate.py RUNTIME_MB_GPU) and the A100's expected utilisation (devices.yaml).
Everything else in the estimate is counted from shapes, not fitted.
"""

from __future__ import annotations

import argparse

from llmpt.planner.devices import resolve_device
from llmpt.planner.estimate import RUNTIME_MB_GPU
from llmpt.planner.seed import predict, seed_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit", action="store_true", help="print the minimax-fitted runtime term and utilisation")
    args = ap.parse_args()
    meta, rows = seed_table()
    print(f"seed table: {len(rows)} rows, {meta['gpus']}x {meta['machine']}, seq {meta['seq_len']}")
    head = (
        f"{'model':36} {'strategy':14} {'mem pred':>9} {'mem seed':>9} {'ratio':>6}  "
        f"{'tok/s pred':>10} {'tok/s seed':>10} {'ratio':>6}  {'MFU':>5}"
    )
    print(head)
    print("-" * len(head))
    mem_r, tps_r = [], []
    for r in rows:
        e = predict(r)
        mr, tr = e.memory_mb_per_card / r.memory_mb, e.tokens_per_card_per_sec / r.tokens_per_card_per_sec
        mem_r.append((e, r))
        tps_r.append(tr)
        print(
            f"{r.model:36} {r.strategy:14} {e.memory_mb_per_card:9.0f} {r.memory_mb:9.0f} {mr:6.3f}  "
            f"{e.tokens_per_card_per_sec:10.1f} {r.tokens_per_card_per_sec:10.1f} {tr:6.3f}  {e.mfu:5.1%}"
        )
    worst_m = max(abs(e.memory_mb_per_card / r.memory_mb - 1) for e, r in mem_r)
    worst_t = max(abs(t - 1) for t in tps_r)
    print(f"worst relative error: memory {worst_m:.1%}, tokens/card/s {worst_t:.1%} (target: each within 10%)")
    if args.fit:
        # memory: shift the runtime term so the largest over- and under-prediction are equal in relative size
        best = min(
            (max(abs((e.memory_mb_per_card - RUNTIME_MB_GPU + c) / r.memory_mb - 1) for e, r in mem_r), c)
            for c in range(0, 20001, 100)
        )
        hfu = resolve_device(meta["machine"]).expected_hfu
        k = 2 / (min(tps_r) + max(tps_r))  # tokens/s scale ~linearly with the utilisation
        worst = max(abs(t * k - 1) for t in tps_r)
        print(f"fit: RUNTIME_MB_GPU = {best[1]} (worst memory error {best[0]:.1%})")
        print(f"fit: {meta['machine']} expected_hfu = {hfu * k:.3f} (worst tokens/s error {worst:.1%})")


if __name__ == "__main__":
    main()
