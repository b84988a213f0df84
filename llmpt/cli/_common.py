"""What every command shares: one-line errors (exit 2), warnings on stderr, JSON output."""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from llmpt.errors import LlmptError, LlmptWarning

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

# what the machine refuses when llmpt writes: shown as bad input (exit 2) naming the path
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}
_WRITE_HINT = {
    0: "choose a writable location",
    errno.ENOSPC: "free disk space, or write somewhere else",
    errno.EDQUOT: "free space in your quota, or write somewhere else",
    errno.EFBIG: "the file system or ulimit -f caps file size: write somewhere else",
}


def print_error(e: LlmptError) -> None:
    """Bad input: one line, `error: what was given and what is allowed; hint: what to run next`. A failed run's
    message may carry the failing rank's log lines; its hint then follows on a line of its own."""
    hint = f"hint: {escape(e.hint)}" if e.hint else ""
    if "\n" in e.message:
        err_console.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
        if hint:
            err_console.print(f"       {hint}", highlight=False, soft_wrap=True)
        return
    line = f"[bold red]error:[/] {escape(e.message)}" + (f"; {hint}" if hint else "")
    err_console.print(line, highlight=False, soft_wrap=True)


def handles_errors(fn: F) -> F:
    """Turn LlmptError into one red line + hint and exit code 2; surface warnings; hide tracebacks
    of unexpected errors unless LLMPT_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return fn(*args, **kwargs)
            except LlmptError as e:
                print_error(e)
                raise typer.Exit(e.exit_code) from None
            except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
                raise
            except OSError as e:
                if e.errno not in _WRITE_ERRNOS or not e.filename:
                    raise
                print_error(LlmptError(f"{e.filename}: {e.strerror}", _WRITE_HINT.get(e.errno, _WRITE_HINT[0])))
                raise typer.Exit(2) from None
            except Exception as e:  # noqa: BLE001 - the last line of defence for the user's terminal
                if os.environ.get("LLMPT_DEBUG") == "1":
                    raise
                err_console.print(
                    f"[bold red]internal error:[/] {type(e).__name__}: {escape(str(e))} "
                    "(run with LLMPT_DEBUG=1 for the traceback)",
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(1) from None
            finally:
                for w in caught:
                    if not issubclass(w.category, LlmptWarning):
                        continue  # third-party import noise (paddle, setuptools, pydantic deprecations)
                    err_console.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
