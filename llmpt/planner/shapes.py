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

    @property
    def total(self) -> int:
        per_layer = self.layer_matmul + self.layer_other
        return self.embed + self.positions + self.layers * per_layer + self.final + self.head


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
    return Dims(
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


def _param_groups(spec: ModelSpec, seq_len: int, from_scratch: bool = True) -> ParamGroups:
    cfg = paddlenlp_config(spec, seq_len, from_scratch)
    d = dims(spec, seq_len, from_scratch)
    h, f, v, q, kv = d.hidden, d.ffn, d.vocab, d.q_dim, d.kv_dim
    positions = cfg.get("max_position_embeddings") or cfg.get("max_sequence_length") or 0
    fam = spec.family
    if fam in ("llama", "mistral"):
        mm, other, final = h * q + 2 * h * kv + q * h + 3 * h * f, 2 * h, h
        pos = 0
    elif fam == "qwen2":  # llama's layout plus biases on q, k and v
        mm, other, final = h * q + 2 * h * kv + q * h + 3 * h * f, q + 2 * kv + 2 * h, h
        pos = 0
    elif fam == "qwen":
        mm, other, final = 3 * h * h + h * h + 3 * h * f, 3 * h + 2 * h, h
        pos = 0
    elif fam == "chatglm2":
        qkv = q + 2 * kv
        mm, other, final = h * qkv + q * h + 2 * h * f + f * h, qkv + 2 * h, h
        pos = 0
    else:  # gpt, opt, bloom, chatglm, glm: biased q/k/v/out and fc1/fc2, two LayerNorms
        mm, other, final = 4 * h * h + 2 * h * f, 4 * h + f + h + 4 * h, 2 * h
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
    """(matmul FLOPs, attention FLOPs) of one token's forward pass: 2 per weight, 4*s*width per layer for QK^T, AV.

    The attention term counts the full s x s product (the usual convention, as Megatron and PaddleNLP report it)."""
    g = param_groups(spec, seq_len, from_scratch)
    d = dims(spec, seq_len, from_scratch)
    matmul = 2.0 * (g.layers * g.layer_matmul + g.vocab * d.hidden)  # the head multiplies even when tied
    attention = 4.0 * seq_len * d.q_dim * g.layers
    return matmul, attention


dims = _memo("dims", _dims)
param_groups = _memo("param_groups", _param_groups)
