"""What every command shares: the one error handler (ends every command line as llmpt/errors.py's table says),
warnings on stderr, JSON output."""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from llmpt.errors import Ending, ExitCode, LlmptWarning, OutputClosed, ending


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich's own ending is SystemExit(1) right here; the handler ends a closed pipe (ExitCode.OUTPUT_CLOSED)
        self.quiet = True
        raise OutputClosed


console = _Console()
err_console = _Console(stderr=True)


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


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        if not issubclass(w.category, LlmptWarning):
            continue  # third-party import noise (paddle, setuptools, pydantic deprecations)
        err_console.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)


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


def exit_code_of(run: Callable[[], Any]) -> int:
    """The one error handler: run a command line and end it as llmpt.errors.ERRORS says (exit code, one line on
    stderr), then show the LlmptWarnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rv = run()
            sys.stdout.flush()  # a closed pipe shows here, inside the handler, not in the flush at exit
            return rv if isinstance(rv, int) else ExitCode.OK  # typer returns a typer.Exit's code
        except (Exception, KeyboardInterrupt) as e:
            end = ending(e)
            if end.traceback:
                raise
            if end.code == ExitCode.OUTPUT_CLOSED:
                _stdout_to_devnull()
            print_ending(end)
            return end.code
        finally:
            _print_warnings(caught)


class LlmptGroup(TyperGroup):
    """The `llmpt` group: every command line, usage errors included, ends through exit_code_of."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        run = functools.partial(super().main, args, prog_name, complete_var, standalone_mode=False, **extra)
        if not standalone_mode:
            return run()
        sys.exit(int(exit_code_of(run)))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError as e:  # a plain write (print_json, typer.echo) to a closed pipe
            raise OutputClosed from e  # why not BrokenPipeError: see OutputClosed


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
