"""ModelSpec's mixture-of-experts and latent-attention fields: validated per family, mapped to each PaddleNLP
config class's own keys (3.0.0b4)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmpt.models.registry import ModelSpec, paddlenlp_config, resolve_model

BASE = dict(
    id="x/moe", family="qwen2_moe", matrix_row="Qwen2-MoE", hidden_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, intermediate_size=128, vocab_size=1000,
    max_position_embeddings=256, norm="rmsnorm", norm_eps=1e-6, position="rope", activation="swiglu", source="test",
)  # fmt: skip
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=64)
MLA = dict(kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16)


def _error(**fields) -> str:
    with pytest.raises(ValidationError) as e:
        ModelSpec(**{**BASE, **fields})
    return e.value.errors()[0]["msg"].removeprefix("Value error, ")


@pytest.mark.parametrize(
    "fields,message",
    [
        ({**MOE, "num_experts_per_tok": 5}, "num_experts_per_tok 5 > num_experts 4 (x/moe)"),
        ({"num_experts": 4}, "family qwen2_moe routes tokens to experts: needs num_experts_per_tok, "),
        ({**MOE, "shared_expert_intermediate_size": None}, "qwen2_moe: needs shared_expert_intermediate_size"),
        ({**MOE, "kv_lora_rank": 16}, "kv_lora_rank: not read by PaddleNLP's qwen2_moe modeling (x/moe)"),
        ({"family": "llama", "num_experts": 8}, "num_experts: not read by PaddleNLP's llama modeling (x/moe)"),
        (
            {"family": "mixtral", "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
            "mixtral: moe_intermediate_size 32 != intermediate_size 128",
        ),
        (
            {"family": "deepseek_v2", "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
             "kv_lora_rank": 16},
            "deepseek_v2: latent attention needs qk_rope_head_dim, qk_nope_head_dim, v_head_dim (x/moe)",
        ),
        (
            {"family": "deepseek_v2", "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
             **MLA, "topk_method": "group_limited_greedy", "n_group": 3, "topk_group": 2},
            "group_limited_greedy: n_group 3 must divide num_experts 8",
        ),
    ],
)  # fmt: skip
def test_bad_expert_fields_are_refused_naming_them(fields, message):
    assert _error(**fields).startswith(message)


def test_each_family_gets_its_own_config_keys():
    mixtral = paddlenlp_config(resolve_model("mixtral-8x7b"), seq_len=4096)
    assert (mixtral["num_local_experts"], mixtral["num_experts_per_tok"], mixtral["rope_theta"]) == (8, 2, 1e6)
    assert "num_experts" not in mixtral and "moe_intermediate_size" not in mixtral  # MixtralMLP: intermediate_size
    qwen = paddlenlp_config(resolve_model("qwen1.5-moe-a2.7b"), seq_len=4096)
    assert (qwen["num_experts"], qwen["moe_intermediate_size"], qwen["shared_expert_intermediate_size"]) == (
        60, 1408, 5632
    )  # fmt: skip
    lite = paddlenlp_config(resolve_model("deepseek-v2-lite"), seq_len=4096)
    # q_lora_rank None is the model's (queries projected directly), not DeepseekV2Config's default 1536
    assert "q_lora_rank" in lite and lite["q_lora_rank"] is None
    assert (lite["n_routed_experts"], lite["n_shared_experts"], lite["first_k_dense_replace"]) == (64, 2, 1)
    assert (lite["topk_method"], lite["aux_loss_alpha"], lite["scoring_func"]) == ("greedy", 0.001, "softmax")
    assert lite["rope_scaling"] == {
        "type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0,
        "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 0.707,
    }  # fmt: skip
    v2 = paddlenlp_config(resolve_model("deepseek-v2"), seq_len=4096)
    assert (v2["topk_method"], v2["n_group"], v2["topk_group"], v2["routed_scaling_factor"]) == (
        "group_limited_greedy", 8, 3, 16.0
    )  # fmt: skip
    assert resolve_model("deepseek-v2").head_dim == 192  # MLA query/key head: 128 non-rotary + 64 rotary


def test_mixtral_trains_with_the_load_balancing_loss_its_model_states():
    """MixtralForCausalLM adds router_aux_loss_coef x the load-balancing loss only with output_router_logits on (its
    config default is off): on where the model states a coefficient, off where it states none."""
    big = paddlenlp_config(resolve_model("mixtral-8x7b"), seq_len=4096)
    assert (big["router_aux_loss_coef"], big["output_router_logits"]) == (0.02, True)
    tiny = paddlenlp_config(resolve_model("mixtral-tiny"), seq_len=64)
    assert (tiny["router_aux_loss_coef"], tiny["output_router_logits"]) == (0.02, True)
    stated_none = ModelSpec(**{**BASE, "id": "x/mix", "family": "mixtral", "matrix_row": "Mixtral",
                               "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 128})  # fmt: skip
    assert paddlenlp_config(stated_none, seq_len=64)["output_router_logits"] is False
