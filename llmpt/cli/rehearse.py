"""`llmpt rehearse MODEL --strategy NAME`: the exact topology on CPU ranks, pass/fail per stage."""

from __future__ import annotations

import typer
from rich.table import Table

from llmpt import schemas
from llmpt.cli._common import print_json, print_table
from llmpt.errors import ExitCode


def rehearse(
    model: str = typer.Argument(..., help="Model id or alias; rehearsed with its family's tiny model, reshaped."),
    strategy: str = typer.Option(..., "--strategy", "-s", help="Strategy preset/name."),
    output_dir: str = typer.Option(None, "--output-dir", "-o", help="Where the rehearsal runs (kept on failure)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the run directory after a pass."),
    set_items: list[str] = typer.Option(
        None, "--set", help="Override one key for the rehearsal: --set strategy.batch.micro_batch_size=2 (repeatable)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Rehearse a strategy on CPU before spending GPU hours: same ranks, same parallel layout, tiny model."""
    from llmpt.rehearse import rehearse as run

    r = run(model, strategy, output_dir=output_dir, keep=keep, set_items=tuple(set_items or ()))
    if json_out:
        print_json(r.to_dict(), schemas.REHEARSAL)
    else:
        settings = "".join(f" --set {x}" for x in r.settings)
        table = Table(
            title=f"rehearsal: {r.model} · {r.strategy}{settings} · {r.ranks} CPU ranks", title_justify="left"
        )
        for col in ("stage", "result", "detail"):
            table.add_column(col)
        for s in r.stages:
            mark = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[dim]not reached[/]"}[s.ok]
            table.add_row(s.name, mark, s.detail)
        print_table(table)
    if not r.passed:
        raise typer.Exit(ExitCode.FAILED)
