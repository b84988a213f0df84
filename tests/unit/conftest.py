from __future__ import annotations

import pytest
from typer.testing import CliRunner

from llmpt.cli.main import app


@pytest.fixture
def cli():
    """Run `llmpt ARGS…` in-process; returns click's Result (stdout and stderr kept apart)."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args))

    return run


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No unit test reads or writes the user's ~/.cache/llmpt (prepared data, matrix --verify results)."""
    monkeypatch.setenv("LLMPT_CACHE", str(tmp_path / "llmpt-cache"))


@pytest.fixture(autouse=True)
def _no_gpu_detection(monkeypatch):
    """The planner's nvidia-smi lookup must not make results depend on the machine the tests run on."""
    monkeypatch.setenv("LLMPT_NO_DETECT", "1")
