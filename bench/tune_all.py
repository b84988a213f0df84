"""`llmpt tune` over the whole registry: every model on 8, 16, 32 and 64 cards of every known device, in one
process. Prints, per device, how many cases found a layout that fits, how many fit nothing (with the fewest
devices that would), any error, and the slowest ranking (the CLI's target: under 2 s including start-up).

    .venv/bin/python bench/tune_all.py [--worlds 8,16,32,64] [--devices A100-80G,H100-80G] [--models llama2-7b,...]
"""

from __future__ import annotations

import argparse
import time

from llmpt.models.registry import all_models, resolve_model
from llmpt.planner.devices import all_devices, resolve_device
from llmpt.planner.estimate import Layout
from llmpt.planner.search import fewest_devices
from llmpt.planner.tune import base_strategy, rank
from llmpt.resolve import RunRequest, resolve_plan

SEQ = 4096
TOKENS = 2 * 8 * 4 * 4096  # llmpt/planner/batch.py SEED_GLOBAL_TOKENS


def one(model: str, world: int, device_name: str) -> tuple[str, float, str]:
    per_node = min(world, 8)
    nnodes = world // per_node
    spec_seq = 128 if model.endswith("-tiny") else SEQ
    t0 = time.perf_counter()
    base_name = base_strategy(resolve_model(model), world)
    plan = resolve_plan(
        RunRequest(model=model, strategy=base_name, gpus=str(per_node), nnodes=nnodes, seq_len=spec_seq, device="gpu",
                   device_type=device_name, local=False,
                   master="first-node:36017" if nnodes > 1 else None,
                   set_items=("strategy.batch.micro_batch_size=1", "strategy.batch.grad_accum=1"))
    )  # fmt: skip
    device = resolve_device(device_name)
    base = Layout(plan.model, plan.strategy, plan.expansion.degrees, spec_seq, per_node)
    picked, _ = rank(base, world, per_node, TOKENS // spec_seq, device, 1)
    if picked:
        verdict = f"{picked[0].layout.strategy.name} {picked[0].speed:.0f} tok/s"
    else:
        found = fewest_devices(base, device, plan.estimate.capacity_mb)
        verdict = f"nothing fits; fewest {found[0] if found else '> 4096'}"
    return verdict, time.perf_counter() - t0, "fits" if picked else "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="8,16,32,64")
    ap.add_argument("--devices", default=",".join(d.name for d in all_devices()))
    ap.add_argument("--models", default=",".join(m.id for m in all_models()))
    args = ap.parse_args()
    worlds = [int(w) for w in args.worlds.split(",")]
    slowest, errors = (0.0, ""), []
    for device in args.devices.split(","):
        counts = {"fits": 0, "none": 0}
        for model in args.models.split(","):
            for world in worlds:
                try:
                    verdict, seconds, kind = one(model, world, device)
                except Exception as e:  # noqa: BLE001 - a bench reports every failure and goes on
                    errors.append(f"{device} {model} x{world}: {type(e).__name__}: {e}")
                    continue
                counts[kind] += 1
                if seconds > slowest[0]:
                    slowest = (seconds, f"{device} {model} x{world}")
        print(f"{device}: {counts['fits']} fit, {counts['none']} fit nothing", flush=True)
    print(f"slowest: {slowest[0]:.2f} s ({slowest[1]})")
    print(f"errors: {len(errors)}")
    for e in errors:
        print("  " + e)


if __name__ == "__main__":
    main()
