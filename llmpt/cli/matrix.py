"""`llmpt matrix [--model X | --strategy S] [--json]`: the capability matrix, seed-style, and where the pinned
PaddleNLP modeling of a row's models has no path for a cell."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from llmpt.cli._common import console, print_json, print_table
from llmpt.errors import LlmptError
from llmpt.models.matrix import (
    CAPABILITY_KEYS,
    COLUMN_CAPABILITIES,
    STATUS_TEXT,
    Row,
    claim_json,
    families_json,
    family_label,
    load_families,
    load_matrix,
    model_supports,
    modeling_cell,
    needed_capabilities,
    needed_cells,
    row_supports,
    runnable_presets,
)
from llmpt.models.registry import ModelSpec, all_models, resolve_model
from llmpt.strategies.presets import resolve_strategy
from llmpt.versions import PADDLENLP

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
        modeling = modeling_cell(row, k)
        if modeling is not None:
            cells[k]["modeling"] = modeling  # does the row's PaddleNLP modeling have a path for it (families.yaml)
    return {"name": row.name, "models": [m.id for m in all_models() if m.matrix_row == row.name], "cells": cells}


def matrix_json(verified: dict | None = None) -> dict[str, Any]:
    """The whole matrix in the documented, stable schema (README: `llmpt matrix --json`)."""
    m = load_matrix()
    return {
        "schema": SCHEMA,
        "columns": [{"key": c.key, "title": c.title, "meaning": c.meaning} for c in m.columns],
        "statuses": STATUS_TEXT,
        "rows": [_row_json(r, verified) for r in m.rows],
        "modeling": families_json(),
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
    # every option checked before --verify spends minutes rehearsing (and writes its results)
    if cells is not None and not verify:
        raise LlmptError(f"--cells {cells}: only with --verify", f"llmpt matrix --verify --cells {cells}")
    if model and strategy:
        raise LlmptError(
            f"--model {model} and --strategy {strategy}: pass one of them",
            f"llmpt matrix --model {model}, or llmpt matrix --strategy {strategy}",
        )
    if model is not None:  # `--model ""` too: not the whole matrix in silence
        resolve_model(model)
    if strategy is not None:
        resolve_strategy(strategy)
    m = load_matrix()
    if verify:
        from llmpt.rehearse import verify_matrix

        def shout(row, col, entry):
            if not json_out:
                console.print(f"{row:12s} {col:6s} {entry['status']:9s} {entry['detail']}", highlight=False)

        verify_matrix(model, [c.strip() for c in cells.split(",")] if cells is not None else None, progress=shout)
        model = None if not json_out else model
    verified = _verified()
    if model:
        spec = resolve_model(model)
        row = m.row(spec.matrix_row)
        runnable = runnable_presets(spec)
        fam = load_families()
        if json_out:
            print_json(
                {
                    "schema": SCHEMA,
                    "model": spec.id,
                    "row": _row_json(row, verified),
                    "runnable_presets": runnable,
                    "family": family_label(spec),
                    "modeling": {k: claim_json(fam.claim(spec, k)) for k in CAPABILITY_KEYS},
                }
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
            missing, caps = _lacking(spec, c.key), COLUMN_CAPABILITIES.get(c.key, ())
            if missing and cell.status in ("supported", "partial"):
                modeling = f"the {family_label(spec)} modeling (below)"
                meaning = (
                    f"refused: no path in {modeling}"
                    if len(missing) == len(caps)
                    else f"{meaning}, except {', '.join(missing)}: no path in {modeling}"
                )
            if v:
                meaning += f"; CPU: {v['status']} ({v['source']})"
            table.add_row(c.meaning, _cell_text(cell.status, cell.symbol), STATUS_TEXT[cell.status], meaning)
        print_table(table)
        console.print(f"presets that run {spec.id}: {', '.join(runnable) or 'none'}", highlight=False)
        _print_modeling(spec)
        return
    if strategy:
        s = resolve_strategy(strategy)
        d = s.parallel.dims.smallest(s.name)
        needs = needed_cells(s, d)
        # a row runs the strategy when its cells allow it and the modeling of at least one of its models has the paths
        rows = []
        for r in m.rows:
            members = [x for x in all_models() if x.matrix_row == r.name]
            run = [x.id for x in members if model_supports(x, s, d)] if row_supports(r, needs) else []
            rows.append((r, bool(run), run))
        if json_out:
            print_json(
                {
                    "schema": SCHEMA,
                    "strategy": s.name,
                    "needs": [{"column": n.column, "why": n.why, "optional": n.optional} for n in needs],
                    "modeling_needs": [
                        {"capability": n.capability, "why": n.why, "optional": n.kernel is not None}
                        for n in needed_capabilities(s, d)
                    ],
                    "rows": [{**_row_json(r, verified), "can_run": ok, "models_that_run": run} for r, ok, run in rows],
                }
            )
            return
        table = Table(title=f"who can run {s.name}", title_justify="left")
        table.add_column("model")
        for n in needs:
            table.add_column(m.column(n.column).title + (" (opt.)" if n.optional else ""))
        table.add_column("runs")
        for r, ok, run in rows:
            cells = [_cell_text(r.cells[n.column].status, r.cells[n.column].symbol) for n in needs]
            members = [x for x in all_models() if x.matrix_row == r.name]
            if ok:
                verdict = "[green]yes[/]" if len(run) == len(members) else f"[yellow]{len(run)} of {len(members)}[/]"
            else:
                verdict = "[red]no[/]" if not row_supports(r, needs) else "[red]no (modeling)[/]"
            table.add_row(r.name, *cells, verdict)
        print_table(table)
        return
    if json_out:
        print_json(matrix_json(verified))
        return
    table = Table(title="capability matrix (PaddleNLP pretraining README)", title_justify="left")
    table.add_column("model", no_wrap=True)
    cells = [[_cell_with_cpu(r, c.key, verified) for c in m.columns] for r in m.rows]
    for i, c in enumerate(m.columns):
        # a cell never wraps (an emoji and its marks); at 80 columns the titles wrap instead ("S1" / "rc")
        width = max(Text.from_markup(row[i]).cell_len for row in cells)
        table.add_column(c.title, justify="center", width=width)
    for r, row in zip(m.rows, cells, strict=True):
        table.add_row(r.name, *row)
    print_table(table)
    console.print("✅ supported · 🚧 partial · ❌ not supported · ⬜ not listed", highlight=False)
    console.print(
        f"[magenta]M[/] PaddleNLP {PADDLENLP}'s modeling has no path (refused) · "
        "[magenta]m[/] some models/granularities only (llmpt matrix --model ID)",
        highlight=False,
    )
    if verified:
        console.print("CPU rehearsal (llmpt matrix --verify): ✓ verified · ✗ failed · G GPU only", highlight=False)


def _cell_with_cpu(row: Row, key: str, verified: dict) -> str:
    cell = row.cells[key]
    v = verified.get(row.name, {}).get(key)
    mark = (
        {"verified": "[green]✓[/]", "failed": "[red]✗[/]", "gpu-only": "[blue]G[/]"}.get(v["status"], "") if v else ""
    )
    modeling = modeling_cell(row, key) if cell.status in ("supported", "partial") else None
    if modeling is not None and modeling["status"] != "supported":
        mark += "[magenta]M[/]" if modeling["status"] == "unsupported" else "[magenta]m[/]"
    return _cell_text(cell.status, cell.symbol) + mark


def _lacking(spec: ModelSpec, column: str) -> list[str]:
    """The paths behind this matrix column that the model's own modeling (family or variant, pp = 1) lacks:
    ['granularity full_attn', 'no_recompute_layers']."""
    fam = load_families()
    caps = COLUMN_CAPABILITIES.get(column, ())
    return [c.replace("recompute_", "granularity ") for c in caps if not fam.claim(spec, c).serves]


CLAIM_STYLE = {"supported": "[green]yes[/]", "unsupported": "[red]no[/]", "always": "[cyan]always[/]"}


def _print_modeling(spec: ModelSpec) -> None:
    """What the model's PaddleNLP modeling implements, with the evidence (families.yaml)."""
    fam = load_families()
    table = Table(title=f"PaddleNLP {PADDLENLP} modeling of {family_label(spec)}", title_justify="left")
    table.add_column("capability")
    table.add_column("path")
    table.add_column("evidence (file: function)", overflow="fold")
    for key in CAPABILITY_KEYS:
        claim = fam.claim(spec, key)
        status = CLAIM_STYLE[claim.status]
        if claim.pipeline is not None:
            status += f" (pp>1: {CLAIM_STYLE[claim.pipeline.status]})"
        table.add_row(fam.capabilities[key].title, status, claim.evidence)
    print_table(table)
