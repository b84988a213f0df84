"""`llmpt plan MODEL --strategy NAME --gpus N`: show what a run would be, start nothing."""

from __future__ import annotations

import typer
import yaml
from rich.panel import Panel

from llmpt import schemas
from llmpt.cli import options as opt
from llmpt.cli._common import console, print_json, print_table
from llmpt.errors import ConfigError
from llmpt.launch.command import format_command
from llmpt.overrides import parse_set
from llmpt.planner.devices import all_devices
from llmpt.resolve.layout import ASSUMED_DEVICE, knob_hint


def plan(
    model: str = opt.MODEL,
    strategy: str = opt.STRATEGY_REQUIRED,
    gpus: str = opt.GPUS,
    nnodes: int = opt.NNODES,
    master: str = opt.MASTER,
    node_rank: int = opt.NODE_RANK,
    seq_len: int = opt.SEQ_LEN,
    allow_partial: bool = opt.ALLOW_PARTIAL,
    device_type: str = typer.Option(
        None,
        "--device-type",
        help=f"GPU model for the estimate: {', '.join(d.name for d in all_devices())} "
        f"(default: detected, else {ASSUMED_DEVICE}).",
    ),
    device: str = opt.DEVICE,
    set_items: list[str] = typer.Option(
        None, "--set", help="Strategy override: --set strategy.batch.micro_batch_size=1 (repeatable)."
    ),
    json_out: bool = opt.JSON,
) -> None:
    """Resolve and check a run: strategy, fleet config, PaddleNLP arguments, per-card memory and throughput."""
    from llmpt.resolve import RunRequest, resolve_plan

    unknown = sorted(set(parse_set(list(set_items or []))) - {"strategy"})
    if unknown:
        raise ConfigError(
            f"--set {unknown[0]}.…: llmpt plan takes strategy.* overrides only",
            "e.g. --set strategy.recompute.granularity=full (train.* settings belong to llmpt train)",
        )
    p = resolve_plan(RunRequest(**opt.request_fields(locals()), local=False))
    d = p.to_dict()
    if json_out:
        print_json(d, schemas.PLAN)
        return
    deg = d["degrees"]
    m = d["model"]["config"]
    console.print(
        f"[bold]{p.model.id}[/] ({p.model.family}: hidden {p.model.hidden_size}, {p.model.num_hidden_layers} layers, "
        f"{p.model.num_attention_heads} heads, {p.model.num_key_value_heads} kv heads, vocab {m['vocab_size']}, "
        f"seq {p.seq_len})",
        highlight=False,
    )
    console.print(
        f"[bold]{p.model.id}[/] with [bold]{p.strategy.name}[/] on {d['world_size']} ranks "
        f"({d['nproc_per_node']} x {d['nnodes']} node{'s' if d['nnodes'] > 1 else ''}): "
        + " x ".join(f"{k}{v}" for k, v in deg.items() if v > 1 or k == "dp"),
        highlight=False,
    )
    print_settings(p)
    for title, key in (
        ("fleet hybrid_configs", "hybrid_configs"),
        ("PaddleNLP training arguments", "training_args"),
    ):
        console.print(Panel(yaml.safe_dump(d[key], sort_keys=False).rstrip(), title=title, title_align="left"))
    console.print(Panel(format_command(p.launch_command), title="launch command", title_align="left"))
    for n in p.notes:
        console.print(f"[dim]note:[/] {n}", highlight=False)
    if p.estimate is not None:
        print_estimate(p.estimate)


def print_settings(p) -> None:
    """Every strategy setting, its value and where it came from (name, base profile, preset, planner, file, --set)."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"strategy {p.strategy.name}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("setting", no_wrap=True)
    table.add_column("value", no_wrap=True)
    table.add_column("from", overflow="fold")
    dump = p.strategy.model_dump(mode="json", exclude={"name", "description"})
    for section, values in dump.items():
        for key, value in values.items():
            path = f"{section}.{key}"
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            table.add_row(path, shown or "-", p.sources.get(path, "schema default"))
    print_table(table)


def print_estimate(est) -> None:
    from rich import box
    from rich.table import Table

    where = est.device.name if est.device else "cpu rank"
    table = Table(title=f"per-card estimate ({where})", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("memory", no_wrap=True)
    table.add_column("MB", justify="right")
    for k, v in est.memory_mb.items():
        table.add_row(k.replace("_", " "), f"{v:,.0f}")
    table.add_row("[bold]total[/]", f"[bold]{est.memory_mb_per_card:,.0f}[/]")
    if est.capacity_mb is not None:
        table.add_row("usable on the card" if est.device else "RAM per rank", f"{est.capacity_mb:,.0f}")
    print_table(table)
    if est.tokens_per_card_per_sec is not None:
        console.print(
            f"throughput: ~{est.tokens_per_card_per_sec:,.0f} tokens/card/s, MFU {est.mfu:.1%} "
            f"({est.model_flops_per_token / 1e9:.1f} GFLOPs/token, step {est.step_time_s:.2f} s)",
            highlight=False,
        )
    if est.fits is True:
        console.print("[green]fits[/]", highlight=False)
    elif est.fits is False:
        console.print(f"[red]does not fit[/]: {knob_hint(est)}", highlight=False, soft_wrap=True)
    for n in est.notes:
        console.print(f"[dim]note:[/] {n}", highlight=False)
