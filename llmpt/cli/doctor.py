"""`llmpt doctor [--json]`: versions, devices, real numerics, fused kernels, data helper, disk, collectives."""

from __future__ import annotations

from pathlib import Path

import typer

from llmpt import schemas
from llmpt.cli._common import print_json, print_table
from llmpt.errors import ExitCode

STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def doctor(
    output_dir: str = typer.Option(".", "--output-dir", "-o", help="Where runs will write (free disk is checked)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (checks and raw facts)."),
) -> None:
    """Check this machine before a long job; exit 1 if anything fails."""
    from rich import box
    from rich.table import Table

    from llmpt.doctor import collect, disk_facts, judge, report
    from llmpt.errors import LlmptError
    from llmpt.fsutil import check_writable, why_unwritable

    try:  # bad input is refused before the probes run (they take a while), and nothing is created
        check_writable(Path(output_dir))
    except OSError as e:
        raise LlmptError(
            f"--output-dir {output_dir}: runs could not write there: {why_unwritable(Path(output_dir), e)}",
            "pass a writable directory, the one your runs will write to: llmpt doctor -o DIR",
        ) from None
    facts, gloo = collect(Path(output_dir))
    free, shm = disk_facts(Path(output_dir))
    checks = judge(facts, free, shm, gloo)
    out = report(checks, facts)
    if json_out:
        print_json(out, schemas.DOCTOR)
    else:
        table = Table(title="llmpt doctor", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("check", "", "detail"):
            table.add_column(col, overflow="fold")
        for c in checks:
            table.add_row(c.name, f"[{STYLE[c.status]}]{c.status}[/]", c.detail)
        print_table(table)
    if not out["ok"]:
        raise typer.Exit(ExitCode.FAILED)
