"""The errors llmpt raises, and how the CLI ends for each: one table of exception kind -> exit code -> one line."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """What `llmpt` exits with. ERRORS (below) says which exception ends with which."""

    OK = 0
    FAILED = 1  # a run that was allowed to start failed; or an internal error (a bug in llmpt)
    BAD_INPUT = 2  # refused before anything ran: LlmptError, a usage error, a write the machine refuses
    # a run stopped by a preemption signal (SIGTERM, or train.preempt_signal ahead of a time limit) after every rank
    # finished its step and a complete checkpoint was written: `--resume` continues it exactly. 75 is sysexits.h's
    # EX_TEMPFAIL ("a temporary failure; the user is invited to retry"); the Slurm script requeues on it.
    PREEMPTED = 75
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C (a training run's Ctrl-C is TrainingFailed: 1)
    # 128 + SIGPIPE: stdout's reader went away (`llmpt plan … | head -1`). What the shell reports for any Unix
    # filter in that place (`seq 1000000 | head -1; echo ${PIPESTATUS[0]}` prints 141), so `set -o pipefail`
    # scripts see llmpt like cat or grep; not 0, because the output was cut short.
    OUTPUT_CLOSED = 141


class LlmptError(Exception):
    """A problem with what the user asked for: `message` says what was given and what is allowed,
    `hint` says what to run next."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class TrainingFailed(LlmptError):
    """A run that was allowed to start failed: a rank died, the launcher failed, or Ctrl-C stopped every rank.
    The message names the rank and may carry its last log lines."""


class Preempted(TrainingFailed):
    """Every rank stopped at the same step on a preemption signal, after a complete checkpoint of that step: the run
    is resumable (ExitCode.PREEMPTED). The message names the signal and the checkpoint."""


class OutputClosed(Exception):
    """stdout's reader went away (`| head`). Deliberately not an OSError: typer's main loop would end a
    BrokenPipeError itself (exit 1) before llmpt's handler sees it."""


class LlmptWarning(UserWarning):
    """Something the user should know that does not stop the command (shown as one yellow line)."""


class StrategyError(LlmptError):
    """A strategy name, preset file or strategy/world-size combination that cannot run."""


class ModelError(LlmptError):
    """An unknown model, or a model whose shape or capabilities conflict with the strategy."""


class ConfigError(LlmptError):
    """A config file or --set override that cannot be read or does not fit the schema."""


def describe_validation_error(source: str, exc: Any, model: type | None = None, prefix: str = "") -> str:
    """One line for the first problem in a pydantic ValidationError: `source: a.b: what (got x)`.

    With `model`, an unknown key also lists the keys allowed at that place; `prefix` names the section the
    model was validated as (e.g. "train.").
    """
    err = exc.errors()[0]
    loc = prefix + ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(model, err["loc"][:-1]) if model is not None else []
        tail = f"; allowed: {', '.join(allowed)}" if allowed else ""
        close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1, cutoff=0.6)
        mean = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{source}: unknown key '{loc}'{mean}{tail}"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    msg = msg[0].lower() + msg[1:] if msg else msg
    got = err.get("input")
    shown = "" if isinstance(got, dict) or got is None and err["type"] == "missing" else f" (got {got!r})"
    where = f"{loc}: " if loc else ""  # a check of the whole model (a model_validator) has no location
    return f"{source}: {where}{msg}{shown}"


def _fields_at(model: type, path: tuple[Any, ...]) -> list[str]:
    # Walk nested pydantic models along the error location to list the keys allowed there.
    for key in path:
        field = getattr(model, "model_fields", {}).get(key)
        if field is None or not hasattr(field.annotation, "model_fields"):
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


# ---- how the CLI ends: one table -------------------------------------------------------------------------------

# what the machine refuses when llmpt writes: shown as bad input naming the path
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}
)
_WRITE_HINT = {
    errno.ENOSPC: "free disk space, or write somewhere else",
    errno.EDQUOT: "free space in your quota, or write somewhere else",
    errno.EFBIG: "the file system or ulimit -f caps file size: write somewhere else",
}

Line = tuple[str | None, str | None]  # (message, hint); no message: nothing is printed


@dataclass(frozen=True)
class Ending:
    """How `llmpt` ends for one exception: its exit code and the line on stderr (`label: message; hint: …`)."""

    kind: str
    code: ExitCode
    message: str | None
    hint: str | None = None
    label: str = "error"  # the red word before the message; "" for a bare line
    traceback: bool = False  # re-raise instead (an unexpected error under LLMPT_DEBUG=1)


@dataclass(frozen=True)
class Row:
    kind: str
    matches: Callable[[BaseException], bool]
    code: ExitCode
    line: Callable[[Any], Line]
    label: str = "error"


def _of(*types: type[BaseException]) -> Callable[[BaseException], bool]:
    return lambda e: isinstance(e, types)


def _is_usage_error(e: BaseException) -> bool:
    from typer._click.exceptions import UsageError  # typer's vendored click (no Abort there: that is typer.Abort)

    return isinstance(e, UsageError)


def _is_abort(e: BaseException) -> bool:
    from typer import Abort  # EOFError at a prompt, or typer.Abort raised by a command

    return isinstance(e, Abort)


def _is_refused_write(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in WRITE_ERRNOS and bool(e.filename)


def _quiet(e: BaseException) -> Line:
    return None, None


def _own_line(e: LlmptError) -> Line:
    return e.message, e.hint


def _usage_line(e: Any) -> Line:
    where = e.ctx.command_path if getattr(e, "ctx", None) is not None else "llmpt"
    return f"{where}: {e.format_message()}", f"{where} --help"


def _write_line(e: OSError) -> Line:
    return f"{e.filename}: {e.strerror}", _WRITE_HINT.get(e.errno or 0, "choose a writable location")


def _internal_line(e: BaseException) -> Line:
    return f"{type(e).__name__}: {e} (run with LLMPT_DEBUG=1 for the traceback)", None


def _aborted_line(e: BaseException) -> Line:
    return "aborted", None


# The first row whose kind matches decides: subclasses before their bases. What each prints on stderr:
#   output closed  nothing (and stdout is pointed at /dev/null, so the flush at exit cannot raise again)
#   interrupted    nothing (the terminal shows ^C)
#   aborted        aborted
#   preempted      preempted: SIGTERM: every rank stopped after step 7; checkpoint-7 is complete; hint: --resume
#   run failed     error: training failed: rank 1 was killed by SIGKILL (logs: …)  [+ the rank's last log lines,
#                  then "hint: …" on a line of its own]
#   bad input      error: what was given and what is allowed; hint: what to run next
#   usage          error: llmpt plan: No such option: --bogus; hint: llmpt plan --help
#   write refused  error: PATH: No space left on device; hint: free disk space, or write somewhere else
#   unexpected     internal error: KeyError: 'x' (run with LLMPT_DEBUG=1 for the traceback)  [LLMPT_DEBUG=1: the
#                  traceback instead]
# fmt: off
ERRORS: tuple[Row, ...] = (
    #   kind             matches                             exit code               line, label
    Row("output closed", _of(OutputClosed, BrokenPipeError), ExitCode.OUTPUT_CLOSED, _quiet),
    Row("interrupted",   _of(KeyboardInterrupt),             ExitCode.INTERRUPTED,   _quiet),
    Row("aborted",       _is_abort,                          ExitCode.INTERRUPTED,   _aborted_line, ""),
    Row("preempted",     _of(Preempted),                     ExitCode.PREEMPTED,     _own_line, "preempted"),
    Row("run failed",    _of(TrainingFailed),                ExitCode.FAILED,        _own_line),
    Row("bad input",     _of(LlmptError),                    ExitCode.BAD_INPUT,     _own_line),
    Row("usage",         _is_usage_error,                    ExitCode.BAD_INPUT,     _usage_line),
    Row("write refused", _is_refused_write,                  ExitCode.BAD_INPUT,     _write_line),
    Row("unexpected",    _of(Exception),                     ExitCode.FAILED,        _internal_line, "internal error"),
)
# fmt: on


def _one_line(text: str | None) -> str | None:
    # a YAML parser's or a library's message may span lines (with a caret under a column): joined with "; "
    if text is None or "\n" not in text:
        return text
    return "; ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def ending(exc: BaseException) -> Ending:
    """How the CLI ends for `exc` (an Exception or KeyboardInterrupt): the first row of ERRORS that matches."""
    for row in ERRORS:
        if row.matches(exc):
            message, hint = row.line(exc)
            if row.kind != "run failed":  # one line; only a failed run carries its rank's log lines
                message, hint = _one_line(message), _one_line(hint)
            debug = row.kind == "unexpected" and os.environ.get("LLMPT_DEBUG") == "1"
            return Ending(row.kind, row.code, message, hint, row.label, traceback=debug)
    raise TypeError(f"no way to end on {type(exc).__name__}: only Exception and KeyboardInterrupt are ended")
