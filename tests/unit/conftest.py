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


@pytest.fixture
def prefix(tmp_path):
    """A prepared prefix of two documents (500 token ids < 900) without a manifest: enough for --dry-run."""
    import numpy as np

    from llmpt.data.mmap import index_bytes

    ids = np.arange(1, 501, dtype=np.uint16) % 900
    (tmp_path / "d.bin").write_bytes(ids.tobytes())
    (tmp_path / "d.idx").write_bytes(index_bytes(np.array([200, 300], np.int32), np.arange(3), np.dtype(np.uint16)))
    return str(tmp_path / "d")
