"""What every command shares: the one error handler (ends every command line as llmpt/errors.py's table says),
warnings on stderr, JSON output."""

from __future__ import annotations

import functools
import io
import json
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from typer import rich_utils as typer_rich_utils
from typer.core import TyperGroup

from llmpt import schemas
from llmpt.errors import Ending, ExitCode, LlmptWarning, OutputClosed, ending


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich's own ending is SystemExit(1) right here; the handler ends a closed pipe (ExitCode.OUTPUT_CLOSED)
        self.quiet = True
        raise OutputClosed


console = _Console()
err_console = _Console(stderr=True)
# typer prints --help through consoles of its own (typer.rich_utils._get_rich_console), whose closed-pipe ending is
# rich's SystemExit(1): they are made of this class too, so `llmpt --help | head -1` ends like any output (141)
typer_rich_utils.Console = _Console


def print_ending(end: Ending) -> None:
    """One red line, `error: what was given and what is allowed; hint: what to run next`. A failed run's message
    may carry the failing rank's log lines; its hint then follows on a line of its own."""
    if end.message is None:
        return
    label = f"[bold red]{end.label}:[/] " if end.label else ""
    hint = f"hint: {escape(end.hint)}" if end.hint else ""
    if "\n" in end.message:
        err_console.print(f"{label}{escape(end.message)}", highlight=False, soft_wrap=True)
        if hint:
            err_console.print(f"       {hint}", highlight=False, soft_wrap=True)
        return
    line = f"{label}{escape(end.message)}" + (f"; {hint}" if hint else "")
    err_console.print(line, highlight=False, soft_wrap=True)


def json_ending(end: Ending, warned: list[str]) -> dict[str, Any] | None:
    """`--json`: the ending as one object for stderr (None when nothing is printed: a closed pipe, Ctrl-C)."""
    if end.message is None:
        return None
    return {
        "schema": schemas.ERROR,
        "kind": end.kind,
        "error": end.message,
        "hint": end.hint,
        "exit_code": int(end.code),
        "warnings": warned,
    }


def _llmpt_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    # the rest is third-party import noise (paddle, setuptools, pydantic deprecations)
    return [str(w.message) for w in caught if issubclass(w.category, LlmptWarning)]


def _print_warnings(warned: list[str]) -> None:
    for w in warned:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)


def wants_json(args: list[str]) -> bool:
    """The command line asks for JSON: `--json` before any `--` (decided from argv, not from parsed options, so that
    a usage error, raised before any option is parsed, is JSON too)."""
    args = args[: args.index("--")] if "--" in args else args
    return "--json" in args


def _stdout_to_devnull() -> None:
    # the conventional end for a closed pipe (docs.python.org/3/library/signal.html#note-on-sigpipe): what is
    # still buffered goes to /dev/null, so the interpreter's flush at exit does not raise again on stderr
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file descriptor (CliRunner's capture): nothing will flush to a closed pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def exit_code_of(run: Callable[[], Any], as_json: bool = False) -> int:
    """The one error handler: run a command line and end it as llmpt.errors.ERRORS says (exit code, one line on
    stderr), then show the LlmptWarnings it raised. `as_json` (the command line has --json): an error is one JSON
    object on stderr (schema llmpt.error/1) with the warnings inside it. (A command that succeeds prints its JSON
    document on stdout; its warnings stay lines for the person reading stderr.)"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rv = run()
            sys.stdout.flush()  # a closed pipe shows here, inside the handler, not in the flush at exit
            _print_warnings(_llmpt_warnings(caught))
            return rv if isinstance(rv, int) else ExitCode.OK  # typer returns a typer.Exit's code
        except (Exception, KeyboardInterrupt) as e:
            end = ending(e)
            if end.traceback:
                _print_warnings(_llmpt_warnings(caught))
                raise
            if end.code == ExitCode.OUTPUT_CLOSED:
                _stdout_to_devnull()
            if not as_json:
                print_ending(end)
                _print_warnings(_llmpt_warnings(caught))
            elif (obj := json_ending(end, _llmpt_warnings(caught))) is not None:
                sys.stderr.write(json.dumps(obj, ensure_ascii=False) + "\n")
            return end.code


class LlmptGroup(TyperGroup):
    """The `llmpt` group: every command line, usage errors included, ends through exit_code_of."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        run = functools.partial(super().main, args, prog_name, complete_var, standalone_mode=False, **extra)
        if not standalone_mode:
            return run()
        argv = list(sys.argv[1:] if args is None else args)
        sys.exit(int(exit_code_of(run, as_json=wants_json(argv))))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError as e:  # a plain write (print_json, typer.echo) to a closed pipe
            raise OutputClosed from e  # why not BrokenPipeError: see OutputClosed


def _as_text(cell: Any) -> Text:
    if isinstance(cell, Text):
        return cell
    return Text.from_markup(cell) if isinstance(cell, str) else Text(str(cell))


def table_fits(table: Table, width: int) -> bool:
    """The table, rendered `width` columns wide, shows every word of every cell whole: no "…", no id or number
    folded over two lines (multi-word cells may wrap between words)."""
    probe = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False, legacy_windows=False)
    probe.print(table)
    out = probe.file.getvalue()
    cells = [_as_text(c).plain for col in table.columns for c in col.cells]
    if out.count("…") > sum(c.count("…") for c in cells):
        return False
    lines = out.splitlines()
    return all(any(w in ln for ln in lines) for c in cells for w in c.split())


def print_table(table: Table, out: Console | None = None) -> None:
    """A table as wide as it needs, or, when the terminal is narrower (`COLUMNS=80`, a pipe), stacked: each row's
    first cell on a line of its own, then its other cells as `column: value`, wrapped between values. Never a
    cut id."""
    out = out or console
    if table_fits(table, out.width):
        out.print(table)
        return
    if table.title:
        out.print(Text(str(table.title), style="italic"))
    for i in range(table.row_count):
        cells = [_as_text(list(col.cells)[i]) for col in table.columns]
        out.print(Text.assemble(cells[0], style="bold"), soft_wrap=True)
        parts = []
        for col, cell in zip(table.columns[1:], cells[1:], strict=True):
            if not cell.plain.strip():
                continue
            header = _as_text(col.header).plain.strip()
            parts.append(Text.assemble(f"{header}: " if header else "", cell))
        for line in _pack(parts, out.width - _INDENT):
            out.print(Padding(line, (0, 0, 0, _INDENT), expand=False))


_INDENT = 4


def _pack(parts: list[Text], width: int) -> list[Text]:
    """`column: value` parts on lines of at most `width` cells, broken only between parts (a part wider than a
    line gets a line of its own, wrapped between its words)."""
    lines: list[Text] = []
    for part in parts:
        if lines and lines[-1].cell_len + 3 + part.cell_len <= width:
            lines[-1].append(" · ")
            lines[-1].append_text(part)
        else:
            lines.append(part.copy())
    return lines


def print_json(obj: dict[str, Any], schema: str | None = None) -> None:
    """One JSON document on stdout: an object whose `schema` key names it (llmpt/schemas.py), first."""
    doc = {"schema": schema, **obj} if schema else obj
    if not isinstance(doc, dict) or doc.get("schema") not in schemas.ALL:
        raise TypeError(f"a --json document needs a schema from llmpt/schemas.py, got {str(doc)[:60]}")
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")
