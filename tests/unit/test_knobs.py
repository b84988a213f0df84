"""The planner's suggestions are runnable: replayed through `llmpt plan`, every first knob plans, fits and gives the
estimate it promised; when nothing fits on the given devices, the knob names more devices and a layout that fits."""

from __future__ import annotations

import itertools

import pytest

from llmpt.resolve import RunRequest, resolve_plan
from llmpt.strategies.grammar import parse_name

MODELS = ["llama-7b", "llama-13b", "llama2-70b", "qwen-7b", "qwen-14b", "baichuan2-13b", "gpt3-13b", "bloom-7b1"]
STRATEGIES = ["dp1", "dp8", "tp2", "tp8", "sd8_stage1", "tp2sd4_stage2", "tp2sd2_stage2", "pp2", "tp4pp2", "sd4_stage3"]
CARDS = ["A100-80G", "A100-40G", "RTX-4090", "H100-80G"]


def _cases():
    for model, strategy, card in itertools.product(MODELS, STRATEGIES, CARDS):
        try:
            p = resolve_plan(RunRequest(model=model, strategy=strategy, device_type=card, local=False))
        except Exception:  # noqa: BLE001 - a layout the shape or matrix refuses has no estimate to replay
            continue
        if p.estimate.fits is False:
            yield p


CASES = list(_cases())


def test_there_are_cases_of_both_kinds():
    kinds = {p.estimate.knob is not None and p.estimate.knob["more_devices"] for p in CASES}
    assert len(CASES) > 40 and kinds == {True, False}


@pytest.mark.parametrize("plan", CASES, ids=lambda p: f"{p.model.id}-{p.strategy.name}-{p.estimate.device.name}")
def test_first_knob_replays_to_a_fitting_plan(plan):
    k = plan.estimate.knob
    if k is None:  # nothing fits even on many devices: only a model that cannot be split at all
        assert plan.model.family in ("opt", "bloom", "glm", "chatglm"), plan.model.id
        return
    parse_name(k["strategy"])  # a name the grammar takes
    again = resolve_plan(
        RunRequest(
            model=plan.model.id,
            strategy=k["strategy"],
            set_items=tuple(k["set"]),
            gpus=str(k["gpus"]),
            nnodes=k["nnodes"],
            master="node0:8090" if k["nnodes"] > 1 else None,
            device_type=plan.estimate.device.name,
            local=False,
        )
    )
    assert again.strategy.name == k["strategy"]
    assert again.estimate.fits is True
    assert again.estimate.memory_mb_per_card == pytest.approx(k["memory_mb_per_card"], abs=0.1)
    if k["tokens_per_card_per_sec"] is not None:
        assert again.estimate.tokens_per_card_per_sec == pytest.approx(k["tokens_per_card_per_sec"], abs=0.01)
