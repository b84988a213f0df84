"""`llmpt presets list | show NAME | validate FILE`."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.table import Table

from llmpt import schemas
from llmpt.cli._common import console, print_json, print_table
from llmpt.strategies.presets import list_presets, load_strategy_file, resolve_strategy
from llmpt.strategies.schema import Strategy

app = typer.Typer(help="List, show and validate strategy presets.", no_args_is_help=True)

JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _ranks(s: Strategy) -> str:
    d = s.parallel.dims
    return str(d.world_size) if d.resolved else f"{d.model_degree}·k"


def _summary(s: Strategy) -> dict[str, object]:
    p = s.parallel
    return {
        "name": s.name,
        "ranks": p.dims.world_size if p.dims.resolved else None,
        "min_ranks": p.dims.min_ranks,
        "dp": p.dp,
        "tp": p.tp,
        "pp": p.pp,
        "sharding": p.sharding,
        "stage": p.stage if p.sharding > 1 else None,
        "recompute": s.recompute.granularity,
        "precision": s.precision.dtype + (f" {s.precision.amp_level}" if s.precision.dtype != "fp32" else ""),
        "micro_batch_size": s.batch.micro_batch_size,
        "grad_accum": s.batch.grad_accum,
        "description": s.description,
    }


@app.command("list")
def list_cmd(json_out: bool = JSON_OPT) -> None:
    """The shipped presets. A name without dpN runs on any multiple of its ranks (dp = the multiple)."""
    strategies = [resolve_strategy(n) for n in list_presets()]
    if json_out:
        print_json({"presets": [_summary(s) for s in strategies]}, schemas.PRESETS)
        return
    table = Table(title="llmpt strategy presets", title_justify="left")
    for col in ("name", "ranks", "tp", "pp", "sd", "stage", "recompute", "precision", "mbs×acc", "description"):
        table.add_column(col, no_wrap=col != "description", overflow="ellipsis" if col == "description" else "fold")
    for s in strategies:
        p = s.parallel
        table.add_row(
            s.name,
            _ranks(s),
            str(p.tp),
            str(p.pp),
            str(p.sharding),
            str(p.stage) if p.sharding > 1 else "-",
            s.recompute.granularity,
            s.precision.dtype + (f" {s.precision.amp_level}" if s.precision.dtype != "fp32" else ""),
            f"{s.batch.micro_batch_size}×{s.batch.grad_accum}",
            s.description,
        )
    print_table(table)


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="A preset or strategy name, e.g. tp2sd4_stage2."),
    json_out: bool = JSON_OPT,
) -> None:
    """The fully resolved strategy behind NAME."""
    s = resolve_strategy(name)
    data = s.model_dump(mode="json")
    if json_out:
        print_json(data, schemas.STRATEGY)
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command("validate")
def validate_cmd(
    file: Path = typer.Argument(..., help="A strategy YAML file: `name:` (or the file's stem) plus preset sections."),
    json_out: bool = JSON_OPT,
) -> None:
    """Check a strategy file without running anything."""
    s = load_strategy_file(file)
    if json_out:
        print_json({"file": str(file), "valid": True, "strategy": s.model_dump(mode="json")}, schemas.STRATEGY_CHECK)
    else:
        console.print(f"[green]ok[/] {file}: strategy {s.name} ({_ranks(s)} ranks)", highlight=False)
