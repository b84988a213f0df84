"""How every command line ends: the table in llmpt/errors.py (kind -> exit code -> one line), the one handler that
applies it, and a closed pipe (`llmpt plan … | head -1`) ending quietly."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import warnings

import pytest
import typer
from typer.testing import CliRunner

from llmpt.cli._common import LlmptGroup
from llmpt.errors import (
    ERRORS,
    ConfigError,
    ExitCode,
    LlmptError,
    LlmptWarning,
    ModelError,
    OutputClosed,
    Preempted,
    StrategyError,
    TrainingFailed,
    ending,
)


def test_exit_codes():
    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0),
        ("FAILED", 1),
        ("BAD_INPUT", 2),
        ("PREEMPTED", 75),  # sysexits.h EX_TEMPFAIL
        ("INTERRUPTED", 128 + signal.SIGINT),
        ("OUTPUT_CLOSED", 128 + signal.SIGPIPE),
    ]


def _usage_error():
    from typer._click.exceptions import NoSuchOption  # what typer's parser raises for `llmpt plan --bogus`

    return NoSuchOption("--bogus")


@pytest.mark.parametrize(
    "exc,kind,code,message,hint",
    [
        (OutputClosed(), "output closed", 141, None, None),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), "output closed", 141, None, None),
        (KeyboardInterrupt(), "interrupted", 130, None, None),
        (typer.Abort(), "aborted", 130, "aborted", None),
        (TrainingFailed("training failed: rank 1 was killed by SIGKILL", "llmpt train --resume"), "run failed", 1,
         "training failed: rank 1 was killed by SIGKILL", "llmpt train --resume"),
        (Preempted("preempted by SIGTERM: every rank stopped after step 7", "--resume"), "preempted", 75,
         "preempted by SIGTERM: every rank stopped after step 7", "--resume"),
        (LlmptError("--gpus 3: not a multiple of 2", "pass 2 or 4"), "bad input", 2, "--gpus 3: not a multiple of 2",
         "pass 2 or 4"),
        (StrategyError("unknown strategy 'x'"), "bad input", 2, "unknown strategy 'x'", None),
        (ModelError("unknown model 'y'"), "bad input", 2, "unknown model 'y'", None),
        (ConfigError("a.yaml: not a mapping"), "bad input", 2, "a.yaml: not a mapping", None),
        (_usage_error(), "usage", 2, "llmpt: No such option: --bogus", "llmpt --help"),
        (OSError(errno.ENOSPC, "No space left on device", "/d/x.bin"), "write refused", 2,
         "/d/x.bin: No space left on device", "free disk space, or write somewhere else"),
        (PermissionError(errno.EACCES, "Permission denied", "/d"), "write refused", 2, "/d: Permission denied",
         "choose a writable location"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/d"), "unexpected", 1,
         "FileNotFoundError: [Errno 2] No such file or directory: '/d' (run with LLMPT_DEBUG=1 for the traceback)",
         None),
        (PermissionError(errno.EACCES, "Permission denied"), "unexpected", 1,
         "PermissionError: [Errno 13] Permission denied (run with LLMPT_DEBUG=1 for the traceback)", None),
        (KeyError("x"), "unexpected", 1, "KeyError: 'x' (run with LLMPT_DEBUG=1 for the traceback)", None),
    ],
)  # fmt: skip
def test_the_table_maps_each_kind_to_its_code_and_line(exc, kind, code, message, hint, monkeypatch):
    monkeypatch.delenv("LLMPT_DEBUG", raising=False)
    end = ending(exc)
    assert (end.kind, end.code, end.message, end.hint, end.traceback) == (kind, code, message, hint, False)
    assert end.label == {"unexpected": "internal error", "aborted": "", "preempted": "preempted"}.get(kind, "error")


def test_every_row_is_reached_and_data_errors_are_bad_input():
    from llmpt.data.inputs import DataError

    assert [r.kind for r in ERRORS] == [
        "output closed", "interrupted", "aborted", "preempted", "run failed", "bad input", "usage", "write refused", "unexpected",
    ]  # fmt: skip
    assert ending(DataError("input x: no such file")).code == ExitCode.BAD_INPUT


def test_supervise_raises_the_tables_training_failed():
    from llmpt.launch import supervise

    assert supervise.TrainingFailed is TrainingFailed


def test_llmpt_debug_keeps_the_traceback_of_unexpected_errors_only(monkeypatch):
    monkeypatch.setenv("LLMPT_DEBUG", "1")
    assert ending(KeyError("x")).traceback
    assert not ending(LlmptError("bad")).traceback and not ending(KeyboardInterrupt()).traceback


# ---- the handler, end to end on a throwaway app with the real group class ----------------------------------------


def _end_of(exc: BaseException, warn: str | None = None):
    app = typer.Typer(cls=LlmptGroup, add_completion=False)

    @app.command()
    def boom() -> None:
        if warn:
            warnings.warn(warn, LlmptWarning, stacklevel=1)
        raise exc

    @app.command()
    def fine() -> None:
        """A second command, so that the app is a group, as llmpt's is."""

    return CliRunner().invoke(app, ["boom"])


@pytest.mark.parametrize(
    "exc,code,stderr",
    [
        (LlmptError("--gpus 3: not a multiple of 2", "pass 2 or 4"), 2,
         "error: --gpus 3: not a multiple of 2; hint: pass 2 or 4\n"),
        (TrainingFailed("training failed: rank 1 exited with code 1 (logs: x)\n  ValueError: y", "see the log"), 1,
         "error: training failed: rank 1 exited with code 1 (logs: x)\n  ValueError: y\n       hint: see the log\n"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/x"), 2,
         "error: /ro/x: Read-only file system; hint: choose a writable location\n"),
        (KeyError("x"), 1, "internal error: KeyError: 'x' (run with LLMPT_DEBUG=1 for the traceback)\n"),
        (KeyboardInterrupt(), 130, ""),
        (typer.Abort(), 130, "aborted\n"),
        (OutputClosed(), 141, ""),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), 141, ""),
    ],
)  # fmt: skip
def test_one_handler_ends_every_kind(exc, code, stderr, monkeypatch):
    monkeypatch.delenv("LLMPT_DEBUG", raising=False)
    r = _end_of(exc)
    assert (r.exit_code, r.stderr) == (code, stderr)


def test_warnings_follow_the_error_line():
    r = _end_of(LlmptError("bad"), warn="option x has no effect")
    assert r.stderr == "error: bad\nwarning: option x has no effect\n"


def test_usage_errors_are_one_line_and_exit_2(cli):
    r = cli("plan", "qwen-7b", "--strategy", "tp2", "--bogus")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "plan --help" in r.stderr


# ---- a closed pipe, for real ---------------------------------------------------------------------------------------

PLAN = ("plan", "qwen-7b", "--strategy", "tp2sd4_stage2", "--gpus", "8")


@pytest.mark.parametrize("args", [PLAN, ("matrix", "--model", "qwen-7b")], ids=["plan", "matrix"])
def test_head_1_gets_its_line_and_llmpt_ends_quietly(args):
    llmpt = subprocess.Popen(
        [sys.executable, "-m", "llmpt.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    head = subprocess.Popen(["head", "-1"], stdin=llmpt.stdout, stdout=subprocess.PIPE, text=True)
    llmpt.stdout.close()  # only head holds the read end now: when head exits, the pipe is closed
    first, _ = head.communicate(timeout=120)
    err = llmpt.stderr.read()
    llmpt.wait(timeout=120)
    assert head.returncode == 0 and first.count("\n") == 1 and "qwen" in first
    assert err == ""  # no traceback, no "Exception ignored" from the flush at exit
    # 141 when llmpt wrote after head left; 0 when all of it fit in the pipe's buffer before
    assert llmpt.returncode in (ExitCode.OK, ExitCode.OUTPUT_CLOSED)
