"""`llmpt matrix [--model X | --strategy S] [--json]`: the capability matrix, seed-style."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from llmpt.cli._common import console, handles_errors, print_json
from llmpt.models.matrix import STATUS_TEXT, Row, load_matrix, needed_cells, row_supports, runnable_presets
from llmpt.models.registry import all_models, resolve_model
from llmpt.strategies.presets import resolve_strategy
from llmpt.strategies.validate import resolve_degrees

SCHEMA = "llmpt.matrix/1"
STYLE = {"supported": "green", "partial": "yellow", "unsupported": "red", "unlisted": "dim"}


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "name": row.name,
        "models": [m.id for m in all_models() if m.matrix_row == row.name],
        "cells": {k: {"status": c.status, "symbol": c.symbol, "source": c.source} for k, c in row.cells.items()},
    }


def matrix_json() -> dict[str, Any]:
    """The whole matrix in the documented, stable schema (README: `llmpt matrix --json`)."""
    m = load_matrix()
    return {
        "schema": SCHEMA,
        "columns": [{"key": c.key, "title": c.title, "meaning": c.meaning} for c in m.columns],
        "statuses": STATUS_TEXT,
        "rows": [_row_json(r) for r in m.rows],
    }


def _cell_text(status: str, symbol: str) -> str:
    return f"[{STYLE[status]}]{symbol}[/]"


@handles_errors
def matrix(
    model: str = typer.Option(None, "--model", "-m", help="Show one model's row and what each cell means for it."),
    strategy: str = typer.Option(None, "--strategy", "-s", help="List the models that can run this strategy."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (schema llmpt.matrix/1)."),
) -> None:
    """The distributed-capability matrix of PaddleNLP's pretraining README, cell by cell."""
    m = load_matrix()
    if model:
        spec = resolve_model(model)
        row = m.row(spec.matrix_row)
        runnable = runnable_presets(spec)
        if json_out:
            print_json({"schema": SCHEMA, "model": spec.id, "row": _row_json(row), "runnable_presets": runnable})
            return
        table = Table(title=f"{spec.id} → matrix row {row.name}", title_justify="left")
        for col in ("capability", "cell", "status", "for this model"):
            table.add_column(col)
        for c in m.columns:
            cell = row.cells[c.key]
            meaning = {
                "supported": "llmpt runs it",
                "partial": "needs --allow-partial",
                "unsupported": "refused (flash attention from a preset is switched off instead)"
                if c.key == "fa"
                else "refused",
                "unlisted": "refused",
            }[cell.status]
            table.add_row(c.meaning, _cell_text(cell.status, cell.symbol), STATUS_TEXT[cell.status], meaning)
        console.print(table)
        console.print(f"presets that run {spec.id}: {', '.join(runnable) or 'none'}", highlight=False)
        return
    if strategy:
        s = resolve_strategy(strategy)
        d = resolve_degrees(s, s.parallel.model_degree * (s.parallel.dp or 1))
        needs = needed_cells(s, d)
        rows = [(r, row_supports(r, needs)) for r in m.rows]
        if json_out:
            print_json(
                {
                    "schema": SCHEMA,
                    "strategy": s.name,
                    "needs": [{"column": n.column, "why": n.why, "optional": n.optional} for n in needs],
                    "rows": [{**_row_json(r), "can_run": ok} for r, ok in rows],
                }
            )
            return
        table = Table(title=f"who can run {s.name}", title_justify="left")
        table.add_column("model")
        for n in needs:
            table.add_column(m.column(n.column).title + (" (opt.)" if n.optional else ""))
        table.add_column("runs")
        for r, ok in rows:
            cells = [_cell_text(r.cells[n.column].status, r.cells[n.column].symbol) for n in needs]
            table.add_row(r.name, *cells, "[green]yes[/]" if ok else "[red]no[/]")
        console.print(table)
        return
    if json_out:
        print_json(matrix_json())
        return
    table = Table(title="capability matrix (PaddleNLP pretraining README)", title_justify="left")
    table.add_column("model", no_wrap=True)
    for c in m.columns:
        table.add_column(c.title, justify="center")
    for r in m.rows:
        table.add_row(r.name, *(_cell_text(r.cells[c.key].status, r.cells[c.key].symbol) for c in m.columns))
    console.print(table)
    console.print("✅ supported · 🚧 partial · ❌ not supported · ⬜ not listed", highlight=False)
