"""`llmpt rehearse` and `llmpt matrix --verify` for real (CPU ranks through paddle.distributed.launch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("paddlenlp")
pytestmark = [pytest.mark.paddle, pytest.mark.slow]


def llmpt_in(llmpt, cwd: Path, *args):
    """`llmpt ARGS` in `cwd` (rehearse writes ./runs there), exit code left to the test."""
    return llmpt(*args, cwd=cwd, check=False, timeout=900)


def test_rehearse_passes_every_stage_on_the_exact_topology(llmpt, tmp_path):
    settings = ["strategy.batch.micro_batch_size=2", "strategy.batch.grad_accum=2"]
    r = llmpt_in(
        llmpt,
        tmp_path,
        "rehearse",
        "qwen-7b",
        "--strategy",
        "tp2sd2_stage2",
        *(f"--set={x}" for x in settings),
        "--json",
    )
    out = json.loads(r.stdout)
    assert r.returncode == 0, (out, r.stderr[-2000:])
    assert out["ranks"] == 4 and out["passed"] and out["set"] == settings
    assert out["stages"][0]["detail"].endswith("micro batch 2 x 2")
    assert [s["name"] for s in out["stages"]] == [
        "plan (real model, GPU topology)",
        "ranks up",
        "groups formed",
        "loss finite",
        "checkpoint round-trip",
    ]
    assert all(s["ok"] for s in out["stages"])
    assert "4/4 rank logs" in out["stages"][1]["detail"]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # removed after a pass


def test_rehearse_refuses_an_unsupported_cell_before_running(llmpt, tmp_path):
    r = llmpt_in(llmpt, tmp_path, "rehearse", "opt-66b", "--strategy", "tp2", "--json")
    assert r.returncode == 2 and r.stdout == ""
    (line,) = r.stderr.splitlines()  # --json: the refusal is one llmpt.error/1 object
    err = json.loads(line)
    assert err["schema"] == "llmpt.error/1" and err["exit_code"] == 2
    assert err["error"].startswith("facebook/opt-66b does not support tensor parallel (tp2)")
    assert not (tmp_path / "runs").exists()


def test_matrix_verify_stores_results_that_matrix_shows(llmpt, tmp_path):
    r = llmpt_in(llmpt, tmp_path, "matrix", "--verify", "--model", "gpt3-13b", "--cells", "dp,fa")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "GPT3         dp     verified" in r.stdout and "GPT3         fa     gpu-only" in r.stdout
    shown = json.loads(llmpt_in(llmpt, tmp_path, "matrix", "--json").stdout)
    gpt = next(row for row in shown["rows"] if row["name"] == "GPT3")
    assert gpt["cells"]["dp"]["cpu"]["status"] == "verified"
    assert gpt["cells"]["fa"]["cpu"]["status"] == "gpu-only"
    assert "cpu" not in gpt["cells"]["tp"]
    r = llmpt_in(llmpt, tmp_path, "matrix", "--verify", "--cells", "nope")
    assert r.returncode == 2 and "--cells: unknown column 'nope'" in r.stderr
