"""What the integration modules share: an isolated environment, `llmpt` in a subprocess, the shipped corpus
prepared once per session, and the loss curve out of a run summary.

Scopes: the corpus is prepared once per session (it never changes); each module gets its own LLMPT_CACHE with
a copy of it, so a module's runs (module-scoped fixtures) are shared by its tests while what one module leaves
in the cache (matrix --verify results, verified-data records) cannot change another module's results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def losses(summary: dict) -> list[float]:
    """The loss of every logged step of a run summary (`llmpt train --json`), in order."""
    return [p["loss"] for p in summary["losses"]]


@dataclass(frozen=True)
class PreparedCorpus:
    prefix: Path  # PREFIX of PREFIX.bin / .idx / .manifest.json
    result: Any  # llmpt.data.prepare.PrepareResult (imported lazily: it pulls in the tokenizer)


@pytest.fixture(scope="session")
def shipped_corpus(tmp_path_factory) -> PreparedCorpus:
    """The shipped corpus (llmpt/assets/corpus), prepared once for the whole session."""
    from llmpt.data.prepare import prepare_data

    prefix = tmp_path_factory.mktemp("shipped") / "kjv"
    return PreparedCorpus(prefix, prepare_data(None, output=str(prefix)))


@pytest.fixture(scope="module")
def env(tmp_path_factory, shipped_corpus) -> dict[str, str]:
    """os.environ with this module's own LLMPT_CACHE, holding the prepared shipped corpus where `llmpt train`
    looks for it (<cache>/data/kjv), so no run prepares it again."""
    cache = tmp_path_factory.mktemp("cache")
    (cache / "data").mkdir()
    src = shipped_corpus.prefix
    for f in src.parent.glob(f"{src.name}.*"):
        shutil.copy2(f, cache / "data" / f.name.replace(src.name, "kjv", 1))
    return dict(os.environ, LLMPT_CACHE=str(cache))


@pytest.fixture(scope="module")
def llama_tiny_init(tmp_path_factory) -> Path:
    """llama-tiny's initial weights (vocabulary 2048), saved once per module: the runs a module compares all start
    from them."""
    out = tmp_path_factory.mktemp("init") / "llama-tiny"
    subprocess.run(
        [sys.executable, "-m", "llmpt.train.init_weights", "llama-tiny", str(out), "--vocab-size", "2048"],
        check=True,
        capture_output=True,
    )
    return out


class Llmpt:
    """`python -m llmpt.cli ARGS…` in a subprocess with the module's environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    @staticmethod
    def argv(*args: str) -> list[str]:
        return [sys.executable, "-m", "llmpt.cli", *map(str, args)]

    def __call__(
        self, *args: Any, check: bool = True, timeout: float = 600, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion; with `check`, a non-zero exit fails the test with the end of stderr."""
        r = subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env, cwd=cwd, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"llmpt {' '.join(map(str, args))} exited {r.returncode}\n{r.stderr[-3000:]}")
        return r

    def json(self, *args: Any, timeout: float = 600, cwd: Path | None = None) -> Any:
        """Run a `--json` command that must succeed; its stdout, parsed."""
        return json.loads(self(*args, timeout=timeout, cwd=cwd).stdout)

    def start(self, *args: Any, **popen: Any) -> subprocess.Popen[str]:
        """Start without waiting (several launchers at once, or a run to interrupt); stdout/stderr piped."""
        return subprocess.Popen(
            self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env, **popen
        )


@pytest.fixture(scope="module")
def llmpt(env) -> Llmpt:
    return Llmpt(env)
