"""The rehearsal model: the family's tiny model reshaped to fit the strategy's tp and pp x vpp."""

from __future__ import annotations

import pytest

from llmpt.models.registry import resolve_model
from llmpt.rehearse import shrink, tiny_of


@pytest.mark.parametrize("model", ["qwen-7b", "llama2-70b", "baichuan2-13b", "chatglm2-6b", "bloom-7b1", "gpt3-13b"])
@pytest.mark.parametrize("tp,stages", [(1, 1), (2, 1), (8, 1), (2, 2), (4, 16), (8, 8)])
def test_shrunk_model_splits_evenly(model, tp, stages):
    tiny = tiny_of(resolve_model(model))
    s = shrink(tiny, tp, stages)
    assert s.family == resolve_model(model).family
    assert s.num_attention_heads % tp == 0 and s.num_key_value_heads % tp == 0 and s.ffn_width % tp == 0
    assert s.num_hidden_layers % stages == 0
    assert s.num_attention_heads // s.num_key_value_heads == tiny.num_attention_heads // tiny.num_key_value_heads
    assert s.hidden_size <= 512  # still tiny


def test_alibi_llamas_rehearse_with_the_alibi_tiny():
    assert tiny_of(resolve_model("baichuan2-13b")).id == "baichuan-tiny"
    assert tiny_of(resolve_model("baichuan2-7b")).id == "llama-tiny"


def test_matrix_verify_rehearses_qwen2_moe_and_deepseek_data_parallel_as_dp_ep():
    """Their MoE layer splits the experts over the data-parallel ranks, so their dp and sr cells rehearse dp2ep2
    (plain dp2 is refused for them); mixtral, which keeps every expert on every rank, and dense models keep dp2."""
    from llmpt.models.registry import resolve_model
    from llmpt.rehearse import VERIFY_STRATEGY, verify_strategy

    for model in ("qwen2-moe-tiny", "deepseek-v2-tiny"):
        got = {c: verify_strategy(resolve_model(model), c) for c in VERIFY_STRATEGY}
        assert got["dp"] == "dp2ep2" and got["sr"] == "dp2ep2_rccore", got
        assert {c: s for c, s in got.items() if c not in ("dp", "sr")} == {
            c: s for c, s in VERIFY_STRATEGY.items() if c not in ("dp", "sr")
        }
    for model in ("mixtral-tiny", "llama-tiny"):
        assert {c: verify_strategy(resolve_model(model), c) for c in VERIFY_STRATEGY} == VERIFY_STRATEGY
