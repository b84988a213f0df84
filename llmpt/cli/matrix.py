"""`llmpt matrix [--model X | --strategy S] [--json]`: the capability matrix, seed-style."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from llmpt.cli._common import console, print_json
from llmpt.models.matrix import STATUS_TEXT, Row, load_matrix, needed_cells, row_supports, runnable_presets
from llmpt.models.registry import all_models, resolve_model
from llmpt.strategies.presets import resolve_strategy

SCHEMA = "llmpt.matrix/1"
STYLE = {"supported": "green", "partial": "yellow", "unsupported": "red", "unlisted": "dim"}


def _verified() -> dict[str, dict[str, dict[str, str]]]:
    from llmpt.rehearse import load_verified

    return load_verified()


def _row_json(row: Row, verified: dict | None = None) -> dict[str, Any]:
    cells = {}
    for k, c in row.cells.items():
        cells[k] = {"status": c.status, "symbol": c.symbol, "source": c.source}
        v = (verified or {}).get(row.name, {}).get(k)
        if v:
            cells[k]["cpu"] = v  # llmpt matrix --verify: verified / failed / gpu-only
    return {"name": row.name, "models": [m.id for m in all_models() if m.matrix_row == row.name], "cells": cells}


def matrix_json(verified: dict | None = None) -> dict[str, Any]:
    """The whole matrix in the documented, stable schema (README: `llmpt matrix --json`)."""
    m = load_matrix()
    return {
        "schema": SCHEMA,
        "columns": [{"key": c.key, "title": c.title, "meaning": c.meaning} for c in m.columns],
        "statuses": STATUS_TEXT,
        "rows": [_row_json(r, verified) for r in m.rows],
    }


def _cell_text(status: str, symbol: str) -> str:
    return f"[{STYLE[status]}]{symbol}[/]"


def matrix(
    model: str = typer.Option(None, "--model", "-m", help="Show one model's row and what each cell means for it."),
    strategy: str = typer.Option(None, "--strategy", "-s", help="List the models that can run this strategy."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (schema llmpt.matrix/1)."),
    verify: bool = typer.Option(False, "--verify", help="Rehearse each supported cell on CPU and store the results."),
    cells: str = typer.Option(None, "--cells", help="With --verify: only these columns, e.g. dp,tp,s2_dp."),
) -> None:
    """The distributed-capability matrix of PaddleNLP's pretraining README, cell by cell."""
    m = load_matrix()
    if verify:
        from llmpt.rehearse import verify_matrix

        def shout(row, col, entry):
            if not json_out:
                console.print(f"{row:12s} {col:6s} {entry['status']:9s} {entry['detail']}", highlight=False)

        verify_matrix(model, [c.strip() for c in cells.split(",")] if cells else None, progress=shout)
        model = None if not json_out else model
    verified = _verified()
    if model:
        spec = resolve_model(model)
        row = m.row(spec.matrix_row)
        runnable = runnable_presets(spec)
        if json_out:
            print_json(
                {"schema": SCHEMA, "model": spec.id, "row": _row_json(row, verified), "runnable_presets": runnable}
            )
            return
        table = Table(title=f"{spec.id} → matrix row {row.name}", title_justify="left")
        for col in ("capability", "cell", "status", "for this model"):
            table.add_column(col)
        for c in m.columns:
            cell = row.cells[c.key]
            v = verified.get(row.name, {}).get(c.key)
            meaning = {
                "supported": "llmpt runs it",
                "partial": "needs --allow-partial",
                "unsupported": "refused (flash attention from a preset is switched off instead)"
                if c.key == "fa"
                else "refused",
                "unlisted": "refused",
            }[cell.status]
            if v:
                meaning += f"; CPU: {v['status']} ({v['source']})"
            table.add_row(c.meaning, _cell_text(cell.status, cell.symbol), STATUS_TEXT[cell.status], meaning)
        console.print(table)
        console.print(f"presets that run {spec.id}: {', '.join(runnable) or 'none'}", highlight=False)
        return
    if strategy:
        s = resolve_strategy(strategy)
        d = s.parallel.dims.smallest(s.name)
        needs = needed_cells(s, d)
        rows = [(r, row_supports(r, needs)) for r in m.rows]
        if json_out:
            print_json(
                {
                    "schema": SCHEMA,
                    "strategy": s.name,
                    "needs": [{"column": n.column, "why": n.why, "optional": n.optional} for n in needs],
                    "rows": [{**_row_json(r, verified), "can_run": ok} for r, ok in rows],
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
        print_json(matrix_json(verified))
        return
    table = Table(title="capability matrix (PaddleNLP pretraining README)", title_justify="left")
    table.add_column("model", no_wrap=True)
    for c in m.columns:
        table.add_column(c.title, justify="center")
    for r in m.rows:
        table.add_row(r.name, *(_cell_with_cpu(r, c.key, verified) for c in m.columns))
    console.print(table)
    console.print("✅ supported · 🚧 partial · ❌ not supported · ⬜ not listed", highlight=False)
    if verified:
        console.print("CPU rehearsal (llmpt matrix --verify): ✓ verified · ✗ failed · G GPU only", highlight=False)


def _cell_with_cpu(row: Row, key: str, verified: dict) -> str:
    cell = row.cells[key]
    v = verified.get(row.name, {}).get(key)
    mark = (
        {"verified": "[green]✓[/]", "failed": "[red]✗[/]", "gpu-only": "[blue]G[/]"}.get(v["status"], "") if v else ""
    )
    return _cell_text(cell.status, cell.symbol) + mark
