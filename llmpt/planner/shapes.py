"""Parameter counts and FLOPs of a registry model, laid out the way PaddleNLP builds each family.

The counts are exact for PaddleNLP's classes (tests/integration/test_planner_params.py builds every registry model
under paddle.LazyGuard and compares). They are split by how tensor parallel treats them: matmul weights and the
vocabulary-parallel embedding/head divide by tp; norms, biases and position tables are replicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmpt.models.registry import ModelSpec, paddlenlp_config

# families with LayerNorm + biased 4h-style MLP (GPT-like) versus RMSNorm + gated MLP (LLaMA-like)
GATED = {"llama", "qwen", "chatglm2", "qwen2", "mistral"}
TIED_BY_CLASS = {"gpt", "bloom", "chatglm", "glm"}  # PaddleNLP's causal-LM class reuses the word embedding


@dataclass(frozen=True)
class ParamGroups:
    """Parameter counts (elements) of one model, by group."""

    embed: int  # vocabulary-parallel word embedding
    positions: int  # replicated position tables and embedding norms
    layer_matmul: int  # per decoder layer, divided by tp
    layer_other: int  # per decoder layer, replicated (norms, biases)
    final: int  # final norm
    head: int  # output projection (0 when tied to the embedding)
    layers: int
    vocab: int
    attention: int = 0  # matmul weights of one layer's attention (in layer_matmul): what full_attn recompute repeats
    # Mixture of experts (0 for dense models, whose FFN is in layer_matmul). A dense layer of an MoE model adds
    # dense_ffn (divided by tp); an MoE layer adds moe_matmul (shared experts, divided by tp), moe_other (router
    # and shared-expert gate, replicated) and `experts` (every routed expert: divided by ep, and by tp where the
    # family's experts are tensor-parallel linears), of which one token runs `active_experts` (its top-k).
    moe_layers: int = 0
    dense_ffn: int = 0
    moe_matmul: int = 0
    moe_other: int = 0
    experts: int = 0
    active_experts: int = 0
    experts_split_by_tp: bool = True

    @property
    def dense_layers(self) -> int:
        return self.layers - self.moe_layers

    @property
    def total(self) -> int:
        per_layer = self.layer_matmul + self.layer_other
        moe = self.moe_layers * (self.moe_matmul + self.moe_other + self.experts)
        return (
            self.embed + self.positions + self.layers * per_layer + self.dense_layers * self.dense_ffn + moe
            + self.final + self.head
        )  # fmt: skip

    @property
    def active(self) -> int:
        """Parameters one token runs through: all but the routed experts it is not sent to."""
        return self.total - self.moe_layers * (self.experts - self.active_experts)

    def layer_on_card(self, moe: bool, tp: int, ep: int) -> int:
        """Parameters of one decoder layer (a dense or an MoE one) on one card."""
        common = self.layer_matmul // tp + self.layer_other
        if not moe:
            return common + self.dense_ffn // tp
        split = ep * (tp if self.experts_split_by_tp else 1)
        return common + self.moe_matmul // tp + self.moe_other + self.experts // split


@dataclass(frozen=True)
class Dims:
    hidden: int
    layers: int
    heads: int
    kv_dim: int  # key (= value) projection width
    q_dim: int  # query / attention output width
    ffn: int  # width of one FFN projection
    vocab: int
    gated: bool
    alibi: bool
    v_dim: int = 0  # value width (heads x v_head_dim): MLA's differs from q_dim; 0 = q_dim
    # mixture of experts (moe_layers 0: dense)
    moe_layers: int = 0
    top_k: int = 0
    num_experts: int = 0
    expert_ffn: int = 0  # width of one routed expert
    shared_ffn: int = 0  # total width of the shared expert(s) every token runs
    experts_split_by_tp: bool = True
    gshard_dispatch: bool = False  # deepseek_v2's MoELayer: dense [tokens, experts, capacity] dispatch einsums


_MEMO: dict[tuple, tuple[ModelSpec, Any]] = {}  # (kind, id(spec), seq_len, from_scratch) -> (spec, value)


def _memo(kind: str, compute):
    """dims/param_groups of one (frozen) ModelSpec object, computed once: the planner asks for them a dozen times per
    estimate and `llmpt tune` makes thousands of estimates. Keyed by the object's identity, checked against it."""

    def cached(spec: ModelSpec, seq_len: int, from_scratch: bool = True):
        key = (kind, id(spec), seq_len, from_scratch)
        hit = _MEMO.get(key)
        if hit is not None and hit[0] is spec:
            return hit[1]
        if len(_MEMO) > 4096:
            _MEMO.clear()
        value = compute(spec, seq_len, from_scratch)
        _MEMO[key] = (spec, value)
        return value

    cached.__doc__ = compute.__doc__
    return cached


def _dims(spec: ModelSpec, seq_len: int, from_scratch: bool = True) -> Dims:
    vocab = paddlenlp_config(spec, seq_len, from_scratch)["vocab_size"]
    moe = {}
    if spec.num_experts:
        moe = dict(
            moe_layers=spec.num_hidden_layers - (spec.first_k_dense_replace or 0),
            top_k=spec.num_experts_per_tok or 1,
            num_experts=spec.num_experts,
            expert_ffn=spec.moe_intermediate_size or spec.intermediate_size,
            shared_ffn=_shared_ffn(spec),
            experts_split_by_tp=spec.family in EXPERTS_SPLIT_BY_TP,
            gshard_dispatch=spec.family in GSHARD_DISPATCH,
        )
    return Dims(
        v_dim=spec.num_attention_heads * spec.v_head_dim if spec.v_head_dim else 0,
        **moe,
        hidden=spec.hidden_size,
        layers=spec.num_hidden_layers,
        heads=spec.num_attention_heads,
        kv_dim=spec.num_key_value_heads * spec.head_dim,
        q_dim=spec.num_attention_heads * spec.head_dim,
        # PaddleNLP's GLMConfig has no FFN width: its MLP is always 4h wide, plain GELU
        ffn=4 * spec.hidden_size if spec.family == "glm" else spec.ffn_width,
        vocab=vocab,
        gated=spec.family in GATED,
        alibi=spec.position == "alibi",
    )


# Families whose routed experts are tensor-parallel linears (PaddleNLP 3.0.0b4: MixtralMLP and Qwen2MoeMLP build
# Column/RowParallelLinear under tp); deepseek_v2's experts are plain Linear (DeepseekV2MLP with is_moe=True), whole on
# every tp rank, divided only by expert parallel
EXPERTS_SPLIT_BY_TP = {"mixtral", "qwen2_moe"}
# qwen2_moe's and deepseek_v2's sparse blocks are PaddleNLP's MoELayer (paddlenlp/transformers/moe_layer.py): experts
# split over the data-parallel group, tokens dispatched GShard-style (einsum "sec,sm->ecm" and "sec,ecm->sm" over a
# dense [tokens, experts, capacity] mask); mixtral's MixtralSparseMoeBlock gathers each expert's tokens by index
GSHARD_DISPATCH = {"qwen2_moe", "deepseek_v2"}


def _shared_ffn(spec: ModelSpec) -> int:
    """Total width of the FFN every token of an MoE layer runs besides its routed experts."""
    if spec.family == "qwen2_moe":
        return spec.shared_expert_intermediate_size or 0
    return (spec.num_shared_experts or 0) * (spec.moe_intermediate_size or 0)


def _mla_attention(spec: ModelSpec) -> tuple[int, int]:
    """(matmul weights, replicated weights) of DeepSeek's multi-head latent attention (DeepseekV2Attention,
    attention_bias off): q (straight, or through q_lora_rank with its RMSNorm), kv_a_proj_with_mqa to kv_lora_rank +
    the shared rotary key and its RMSNorm, kv_b_proj up to every head's non-rotary key and value, o_proj."""
    h, heads = spec.hidden_size, spec.num_attention_heads
    q_head = spec.head_dim
    if spec.q_lora_rank is None:
        q, norms = h * heads * q_head, 0
    else:
        q, norms = h * spec.q_lora_rank + spec.q_lora_rank * heads * q_head, spec.q_lora_rank
    kv_a = h * (spec.kv_lora_rank + spec.qk_rope_head_dim)
    kv_b = spec.kv_lora_rank * heads * (spec.qk_nope_head_dim + spec.v_head_dim)
    out = heads * spec.v_head_dim * h
    return q + kv_a + kv_b + out, norms + spec.kv_lora_rank


def _moe_param_groups(spec: ModelSpec, vocab: int) -> ParamGroups:
    """The MoE families (mixtral, qwen2_moe, deepseek_v2), as PaddleNLP 3.0.0b4 builds them: every routed expert a
    SwiGLU MLP of moe_intermediate_size without biases (3 h m), a bias-free router (h x experts); qwen2_moe adds one
    shared expert and its sigmoid gate (h x 1), deepseek_v2 n_shared_experts x moe_intermediate_size of shared MLP
    and first_k_dense_replace leading dense layers of intermediate_size."""
    h, heads = spec.hidden_size, spec.num_attention_heads
    if spec.uses_mla:
        attention, attn_other = _mla_attention(spec)
    else:
        q, kv = heads * spec.head_dim, spec.num_key_value_heads * spec.head_dim
        attention, attn_other = h * q + 2 * h * kv + q * h, (q + 2 * kv if spec.family == "qwen2_moe" else 0)
    e, k, m = spec.num_experts, spec.num_experts_per_tok, spec.moe_intermediate_size
    per_expert = 3 * h * m
    shared = 3 * h * _shared_ffn(spec)
    gate = h if spec.family == "qwen2_moe" else 0  # shared_expert_gate: Linear(h, 1)
    return ParamGroups(
        embed=vocab * h,
        positions=0,
        layer_matmul=attention,
        layer_other=attn_other + 2 * h,
        final=h,
        head=0 if spec.tie_word_embeddings else vocab * h,
        layers=spec.num_hidden_layers,
        vocab=vocab,
        attention=attention,
        moe_layers=spec.num_hidden_layers - (spec.first_k_dense_replace or 0),
        dense_ffn=3 * h * spec.intermediate_size,
        moe_matmul=shared,
        moe_other=h * e + gate,
        experts=e * per_expert,
        active_experts=k * per_expert,
        experts_split_by_tp=spec.family in EXPERTS_SPLIT_BY_TP,
    )


def _param_groups(spec: ModelSpec, seq_len: int, from_scratch: bool = True) -> ParamGroups:
    cfg = paddlenlp_config(spec, seq_len, from_scratch)
    d = dims(spec, seq_len, from_scratch)
    h, f, v, q, kv = d.hidden, d.ffn, d.vocab, d.q_dim, d.kv_dim
    if spec.num_experts:
        return _moe_param_groups(spec, v)
    positions = cfg.get("max_position_embeddings") or cfg.get("max_sequence_length") or 0
    fam = spec.family
    if fam in ("llama", "mistral"):
        attention = h * q + 2 * h * kv + q * h
        mm, other, final = attention + 3 * h * f, 2 * h, h
        pos = 0
    elif fam == "qwen2":  # llama's layout plus biases on q, k and v
        attention = h * q + 2 * h * kv + q * h
        mm, other, final = attention + 3 * h * f, q + 2 * kv + 2 * h, h
        pos = 0
    elif fam == "qwen":
        attention = 3 * h * h + h * h
        mm, other, final = attention + 3 * h * f, 3 * h + 2 * h, h
        pos = 0
    elif fam == "chatglm2":
        qkv = q + 2 * kv
        attention = h * qkv + q * h
        mm, other, final = attention + 2 * h * f + f * h, qkv + 2 * h, h
        pos = 0
    else:  # gpt, opt, bloom, chatglm, glm: biased q/k/v/out and fc1/fc2, two LayerNorms
        attention = 4 * h * h
        mm, other, final = attention + 2 * h * f, 4 * h + f + h + 4 * h, 2 * h
        pos = {
            "gpt": positions * h,
            "opt": (positions + 2) * h,  # OPT's learned positions carry an offset of 2
            "bloom": 2 * h,  # word_embeddings_layernorm
            "chatglm": 0,  # 2-D rotary, no table
            "glm": (2 if cfg.get("block_position_encoding", True) else 1) * (positions + 1) * h,
        }[fam]
    # OPT's class keeps its own head matrix whatever the config says; Qwen2ForCausalLM follows tie_word_embeddings
    tied = fam in TIED_BY_CLASS or (fam == "qwen2" and bool(cfg.get("tie_word_embeddings")))
    return ParamGroups(
        embed=v * h,
        positions=pos,
        layer_matmul=mm,
        layer_other=other,
        final=final,
        head=0 if tied else v * h,
        layers=d.layers,
        vocab=v,
        attention=attention,
    )


# Families whose every PaddleNLP attention layer builds its own rotary cos/sin table of max_position_embeddings rows
# at construction (llama: LlamaAttention._init_rope, float32 whatever the dtype; qwen2: Qwen2RotaryEmbedding, float32;
# mistral: MistralRotaryEmbedding, cast to the default dtype). Buffers, not parameters, and sized by the model's
# positions, not the sequence: Llama-3.1's 131072 positions take 128 MiB per layer, 4 GiB for the 8B at any seq_len.
ROTARY_PER_LAYER = {"llama": 4, "qwen2": 4, "mistral": None}  # bytes per element; None: the compute dtype's


def rotary_table_bytes(spec: ModelSpec, seq_len: int, from_scratch: bool, dtype_bytes: int) -> int:
    """One decoder layer's rotary cos and sin tables (0 for families without per-layer tables, and ALiBi llamas)."""
    if spec.family not in ROTARY_PER_LAYER or spec.position != "rope":
        return 0
    cfg = paddlenlp_config(spec, seq_len, from_scratch)
    rows = cfg["max_position_embeddings"]
    if cfg.get("rope_scaling_type") in ("linear", "ntk"):  # their tables hold max_position_embeddings x factor rows
        rows = int(rows * cfg["rope_scaling_factor"])
    return 2 * rows * spec.head_dim * (ROTARY_PER_LAYER[spec.family] or dtype_bytes)


def forward_flops_per_token(spec: ModelSpec, seq_len: int, from_scratch: bool = True) -> tuple[float, float]:
    """(matmul FLOPs, attention FLOPs) of one token's forward pass: 2 per weight the token runs through (an MoE
    layer: its shared part, the router and its top-k experts, not the others), 2*s*width per layer for QK^T and as
    much for AV (MLA: AV over the value width).

    The attention term counts the full s x s product (the usual convention, as Megatron and PaddleNLP report it)."""
    g = param_groups(spec, seq_len, from_scratch)
    d = dims(spec, seq_len, from_scratch)
    moe = g.moe_layers * (g.moe_matmul + g.moe_other + g.active_experts)
    # the head multiplies even when tied
    matmul = 2.0 * (g.layers * g.layer_matmul + g.dense_layers * g.dense_ffn + moe + g.vocab * d.hidden)
    attention = 2.0 * seq_len * (d.q_dim + (d.v_dim or d.q_dim)) * g.layers
    return matmul, attention


dims = _memo("dims", _dims)
param_groups = _memo("param_groups", _param_groups)
