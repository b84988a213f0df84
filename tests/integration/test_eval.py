"""Evaluation on the held-out split for real: two CPU ranks of llama-tiny evaluate every train.eval_steps on the
validation documents PaddleNLP's dataset builder splits off by data.split; metrics.jsonl records each evaluation,
summary.json shows them (eval_losses, final_eval_loss)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.integration.conftest import losses

pytest.importorskip("paddlenlp")
pytestmark = [pytest.mark.paddle, pytest.mark.slow]

COMMON = (
    "train", "llama-tiny", "--strategy", "dp2", "--device", "cpu", "--json",
    "--set", "train.report_to=none", "--set", "train.learning_rate=3e-3", "--set", "train.warmup_steps=1",
    "--set", "strategy.batch.micro_batch_size=4", "--set", "strategy.batch.grad_accum=1",
)  # fmt: skip


def documents(env) -> int:
    return json.loads((Path(env["LLMPT_CACHE"]) / "data" / "kjv.manifest.json").read_text())["documents"]


def evals(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]


@pytest.fixture(scope="module")
def every_2(llmpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    return out, llmpt.json(*COMMON, "--max-steps", "6", "--set", "train.eval_steps=2", "-o", out)


def test_eval_loss_is_recorded_at_its_cadence_and_falls(every_2):
    out, summary = every_2
    steps = [e["step"] for e in summary["eval_losses"]]
    values = [e["loss"] for e in summary["eval_losses"]]
    assert steps == [2, 4, 6]
    assert all(math.isfinite(v) for v in values) and values[-1] < values[0] - 0.05, values
    assert summary["final_eval_loss"] == values[-1]
    assert [(e["step"], e["loss"]) for e in evals(out)] == list(zip(steps, values, strict=True))
    assert json.loads((out / "summary.json").read_text())["eval_losses"] == summary["eval_losses"]
    assert len(losses(summary)) == 6  # training logged every step besides


def test_eval_reads_the_validation_documents_of_data_split(llmpt, env, every_2, tmp_path):
    from llmpt.run_config import split_documents

    n = documents(env)
    out, _ = every_2
    assert {tuple(r) for e in evals(out) for r in e["documents"]} == {split_documents("949,50,1", n)[1]}
    other = tmp_path / "split"
    summary = llmpt.json(*COMMON, "--max-steps", "3", "--set", "train.eval_steps=2", "--set", "data.split=80,20,0",
                         "-o", other)  # fmt: skip
    assert [e["step"] for e in summary["eval_losses"]] == [2]
    held_out = {tuple(r) for e in evals(other) for r in e["documents"]}
    assert held_out == {split_documents("80,20,0", n)[1]} != {split_documents("949,50,1", n)[1]}
    lo, hi = held_out.pop()
    assert hi - lo == round(n * 0.2)  # a fifth of the documents held out
