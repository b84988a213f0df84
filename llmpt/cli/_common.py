"""What every command shares: one-line errors (exit 2), warnings on stderr, JSON output."""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from llmpt.errors import LlmptError, LlmptWarning

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def print_error(e: LlmptError) -> None:
    err_console.print(f"[bold red]error:[/] {e.message}", markup=True, highlight=False, soft_wrap=True)
    if e.hint:
        err_console.print(f"       hint: {e.hint}", highlight=False, soft_wrap=True)


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
            except Exception as e:  # noqa: BLE001 - the last line of defence for the user's terminal
                if os.environ.get("LLMPT_DEBUG") == "1":
                    raise
                err_console.print(
                    f"[bold red]internal error:[/] {type(e).__name__}: {e} (run with LLMPT_DEBUG=1 for the traceback)",
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(1) from None
            finally:
                for w in caught:
                    if not issubclass(w.category, LlmptWarning):
                        continue  # third-party import noise (paddle, setuptools, pydantic deprecations)
                    err_console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
