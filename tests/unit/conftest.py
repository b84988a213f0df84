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
