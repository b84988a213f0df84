"""Parameter counts of a mixture-of-experts registry model, laid out as PaddleNLP 3.0.0b4 builds each MoE family.

Exact for PaddleNLP's classes: tests/integration/test_moe_registry.py builds every MoE registry model under
paddle.LazyGuard, compares these totals with the class's and with the published checkpoint totals. "Active" is what
one token touches: everything but the routed experts it is not sent to (its top-k of num_experts, per MoE layer).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmpt.models.registry import ModelSpec, padded_vocab


@dataclass(frozen=True)
class MoeCounts:
    """Parameter counts (elements) of one MoE model."""

    total: int
    active: int
    moe_layers: int  # layers whose FFN is routed (deepseek_v2: after first_k_dense_replace dense ones)
    per_expert: int  # one routed expert (gate, up and down projections)
    routed: int  # all routed experts of all MoE layers: what expert parallel divides by ep
    router: int  # one MoE layer's router (gate) weight

    @property
    def routed_per_layer(self) -> int:
        return self.routed // self.moe_layers


def moe_counts(spec: ModelSpec, from_scratch: bool = True) -> MoeCounts:
    """Total, active and expert parameters of `spec` (a model whose family routes tokens to experts)."""
    if not spec.is_moe:
        raise ValueError(f"{spec.id} is not a mixture-of-experts model")
    assert spec.num_experts and spec.num_experts_per_tok and spec.moe_intermediate_size  # validated by ModelSpec
    h, layers, heads = spec.hidden_size, spec.num_hidden_layers, spec.num_attention_heads
    vocab = padded_vocab(spec.vocab_size) if from_scratch else spec.vocab_size
    e, k, m = spec.num_experts, spec.num_experts_per_tok, spec.moe_intermediate_size
    per_expert = 3 * h * m  # gate_proj, up_proj (h x m) and down_proj (m x h), no biases in any family
    router = h * e  # one gate weight, no bias (mixtral Linear, Qwen2MoeGate, DeepseekV2 MoEGate weight)
    norms = 2 * h  # input and post-attention RMSNorm
    if spec.uses_mla:
        attention = _mla(spec)
    else:
        kv = spec.num_key_value_heads * spec.head_dim
        q = heads * spec.head_dim
        attention = h * q + 2 * h * kv + q * h
        if spec.family == "qwen2_moe":  # q, k and v carry biases (Qwen2MoeAttention)
            attention += q + 2 * kv
    dense_layers = spec.first_k_dense_replace or 0
    moe_layers = layers - dense_layers
    shared = 0
    if spec.family == "qwen2_moe":
        assert spec.shared_expert_intermediate_size is not None
        shared = 3 * h * spec.shared_expert_intermediate_size + h  # one shared expert and its sigmoid gate (h x 1)
    elif spec.num_shared_experts:
        shared = 3 * h * m * spec.num_shared_experts  # deepseek: one MLP n_shared_experts x moe_intermediate wide
    moe_layer = attention + norms + router + shared + e * per_expert
    dense_layer = attention + norms + 3 * h * spec.intermediate_size
    head = 0 if spec.tie_word_embeddings else vocab * h
    total = vocab * h + dense_layers * dense_layer + moe_layers * moe_layer + h + head
    return MoeCounts(
        total=total,
        active=total - moe_layers * (e - k) * per_expert,
        moe_layers=moe_layers,
        per_expert=per_expert,
        routed=moe_layers * e * per_expert,
        router=router,
    )


def _mla(spec: ModelSpec) -> int:
    """DeepSeek's multi-head latent attention (DeepseekV2Attention without tensor parallel; attention_bias off)."""
    assert spec.kv_lora_rank and spec.qk_rope_head_dim and spec.qk_nope_head_dim and spec.v_head_dim
    h, heads = spec.hidden_size, spec.num_attention_heads
    q_head = spec.qk_nope_head_dim + spec.qk_rope_head_dim
    if spec.q_lora_rank is None:
        q = h * heads * q_head
    else:  # q_a_proj, its RMSNorm, q_b_proj
        q = h * spec.q_lora_rank + spec.q_lora_rank + spec.q_lora_rank * heads * q_head
    kv_a = h * (spec.kv_lora_rank + spec.qk_rope_head_dim) + spec.kv_lora_rank  # kv_a_proj_with_mqa and its norm
    kv_b = spec.kv_lora_rank * heads * (spec.qk_nope_head_dim + spec.v_head_dim)
    out = heads * spec.v_head_dim * h
    return q + kv_a + kv_b + out


def short_count(n: int) -> str:
    """46702792704 -> '46.7B'; 0.5B-scale and tiny models in M / K."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
