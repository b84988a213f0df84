"""`llmpt tune MODEL --gpus N`: the fastest layouts that fit, from the planner, before any GPU is spent."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from llmpt import schemas
from llmpt.cli import options as opt
from llmpt.cli._common import console, print_json, print_table
from llmpt.errors import ExitCode, LlmptError
from llmpt.planner.devices import all_devices
from llmpt.resolve.layout import ASSUMED_DEVICE


def tune(
    model: str = opt.MODEL,
    gpus: str = typer.Option("8", "--gpus", help="Devices per node."),
    nnodes: int = opt.NNODES,
    device_type: str = typer.Option(
        None,
        "--device-type",
        help=f"GPU model: {', '.join(d.name for d in all_devices())} (default: {ASSUMED_DEVICE}).",
    ),
    seq_len: int = opt.SEQ_LEN,
    global_batch: int = typer.Option(
        None, "--global-batch", help="Tokens per optimizer step (default: the seed configurations' 262144)."
    ),
    top: int = typer.Option(5, "--top", help="How many layouts to show."),
    rehearse: bool = typer.Option(
        False, "--rehearse", help="Then rehearse the first on CPU ranks (its layout and --set list, the tiny model)."
    ),
    json_out: bool = opt.JSON,
) -> None:
    """Rank every layout the grammar, the matrix and the model allow on these devices by predicted tokens/card/s."""
    from llmpt.launch.command import parse_devices
    from llmpt.models.registry import resolve_model
    from llmpt.planner.batch import SEED_GLOBAL_TOKENS
    from llmpt.planner.devices import resolve_device
    from llmpt.planner.estimate import Layout
    from llmpt.planner.search import fewest_devices
    from llmpt.planner.tune import base_strategy, rank, replica_counts
    from llmpt.resolve import RunRequest, resolve_plan
    from llmpt.resolve.layout import replay_sets

    t0 = time.perf_counter()
    spec = resolve_model(model)
    per_node = len(parse_devices(gpus))
    if nnodes < 1:
        raise LlmptError(f"--nnodes {nnodes}: must be >= 1")
    if top < 1:
        raise LlmptError(f"--top {top}: must be >= 1")
    world = per_node * nnodes
    device = resolve_device(device_type or ASSUMED_DEVICE)
    seq = seq_len or (128 if spec.id.endswith("-tiny") else 4096)  # the CLI's default (llmpt/cli/options.py SEQ_LEN)
    tokens = global_batch or SEED_GLOBAL_TOKENS
    if tokens % seq or tokens < seq:
        raise LlmptError(
            f"--global-batch {tokens}: not a whole number of {seq}-token sequences",
            f"pass a multiple of --seq-len {seq}, e.g. {max(1, tokens // seq) * seq}",
        )
    base_plan = resolve_plan(
        RunRequest(model=spec, strategy=base_strategy(spec, world), gpus=gpus, nnodes=nnodes,
                   seq_len=seq, device="gpu", device_type=device.name, local=False,
                   master="first-node:36017" if nnodes > 1 else None,
                   set_items=("strategy.batch.micro_batch_size=1", "strategy.batch.grad_accum=1"))
    )  # fmt: skip
    base = Layout(spec, base_plan.strategy, base_plan.expansion.degrees, seq, per_node)
    replicas = replica_counts(world, per_node, spec.num_hidden_layers)
    if not any((tokens // seq) % r == 0 for r in replicas):
        fit = min(replicas) * seq * max(1, -(-tokens // (min(replicas) * seq)))
        raise LlmptError(
            f"--global-batch {tokens}: {tokens // seq} sequences of {seq} cannot be split evenly over {world} devices "
            f"(every layout has {', '.join(map(str, replicas))} data-parallel replicas)",
            f"pass --global-batch {fit}, or another device count",
        )
    picked, fitting = rank(base, world, per_node, tokens // seq, device, top)
    doc = {
        "model": spec.id,
        "gpus": world,
        "nnodes": nnodes,
        "device_type": device.name,
        "seq_len": seq,
        "global_batch_tokens": tokens,
        "layouts_that_fit": fitting,
        "candidates": [
            {
                "strategy": c.layout.strategy.name,
                "set": replay_sets(c.layout.strategy, "gpu"),
                "tokens_per_card_per_sec": round(c.speed, 2),
                "memory_mb_per_card": round(c.estimate.memory_mb_per_card, 1),
                "mfu": None if c.estimate.mfu is None else round(c.estimate.mfu, 4),
                "fits": c.fits,
                "why": c.why(),
            }
            for c in picked
        ],
        "min_gpus": None,
        "seconds": None,
    }
    if not picked:
        found = fewest_devices(base, device, base_plan.estimate.capacity_mb)
        doc["min_gpus"] = found[0] if found else None
    doc["seconds"] = round(time.perf_counter() - t0, 2)
    rehearsal = None
    if rehearse and picked:
        from llmpt.rehearse import rehearse as run_rehearsal

        rehearsal = run_rehearsal(
            spec.id, doc["candidates"][0]["strategy"], set_items=tuple(doc["candidates"][0]["set"])
        )
        doc["rehearsal"] = rehearsal.to_dict()
    if json_out:
        print_json(doc, schemas.TUNE)
        _end_rehearsal(rehearsal)
        return
    table = Table(
        title=f"{spec.id} on {world} x {device.name}, seq {seq}, {tokens} tokens per step ({fitting} layouts fit)",
        title_justify="left",
    )
    for col in ("#", "strategy", "tokens/card/s", "MFU", "memory (MB)", "why"):
        table.add_column(col)
    for i, c in enumerate(doc["candidates"], 1):
        mfu = "n/a" if c["mfu"] is None else f"{c['mfu']:.1%}"
        table.add_row(str(i), c["strategy"], f"{c['tokens_per_card_per_sec']:.0f}", mfu,
                      f"{c['memory_mb_per_card']:.0f}", c["why"])  # fmt: skip
    if picked:
        print_table(table)
        best = doc["candidates"][0]
        flags = " ".join([f"--strategy {best['strategy']}", *(f"--set {x}" for x in best["set"])])
        where = f"--gpus {gpus}" + (f" --nnodes {nnodes} --master HOST:PORT --node-rank R" if nnodes > 1 else "")
        console.print(f"run the first: llmpt train {spec.id} {flags} {where}", highlight=False, soft_wrap=True)
    else:
        more = f"; the fewest that fit: {doc['min_gpus']}" if doc["min_gpus"] else ""
        console.print(f"nothing fits on {world} x {device.name}{more}", highlight=False, soft_wrap=True)
    if rehearsal is not None:
        for st in rehearsal.stages:
            mark = {True: "pass", False: "FAIL", None: "not reached"}[st.ok]
            console.print(f"  rehearsal {st.name}: {mark} {st.detail}", highlight=False, soft_wrap=True)
    _end_rehearsal(rehearsal)


def _end_rehearsal(rehearsal) -> None:
    if rehearsal is not None and not rehearsal.passed:
        raise typer.Exit(ExitCode.FAILED)
