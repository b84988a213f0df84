"""The model registry: model ids and aliases -> family, matrix row and offline architecture (registry.yaml)."""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmpt.errors import ModelError
from llmpt.fsutil import load_shipped_yaml

REGISTRY_PATH = Path(__file__).with_name("registry.yaml")

Family = Literal[
    "llama", "qwen", "gpt", "opt", "bloom", "chatglm", "chatglm2", "glm", "qwen2", "mistral",
    "mixtral", "qwen2_moe", "deepseek_v2",
]  # fmt: skip
# families whose PaddleNLP modeling routes tokens to experts (3.0.0b4: mixtral, qwen2_moe, deepseek_v2 modeling)
MOE_FAMILIES = ("mixtral", "qwen2_moe", "deepseek_v2")
# MoE families whose PaddleNLP modeling can split experts across ranks: MoELayer (transformers/moe_layer.py) over
# the data-parallel group. Mixtral's MixtralSparseMoeBlock keeps every expert on every rank.
EXPERT_PARALLEL_FAMILIES = ("qwen2_moe", "deepseek_v2")
# families with DeepSeek's multi-head latent attention (deepseek_v2/modeling.py DeepseekV2Attention)
MLA_FAMILIES = ("deepseek_v2",)

# PaddleNLP's run_pretrain.py pads a from-scratch vocabulary up to a multiple of 128 "for better amp performance"
VOCAB_PAD_MULTIPLE = 128


class RopeScaling(BaseModel):
    """Rotary position scaling, as PaddleNLP's llama modeling (3.0.0b4, LlamaAttention._init_rope) implements it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["llama3", "linear", "ntk", "dynamic_ntk"] = Field(
        description="llama3: Llama-3.1's per-frequency scaling (config rope_scaling); linear, ntk, dynamic_ntk: "
        "PaddleNLP's rope_scaling_type with rope_scaling_factor."
    )
    factor: float = Field(gt=0, description="Scaling factor (Llama-3.1: 8).")
    low_freq_factor: float = Field(1.0, gt=0, description="llama3 only: wavelengths above original/low are scaled.")
    high_freq_factor: float = Field(4.0, gt=0, description="llama3 only: wavelengths below original/high are kept.")
    original_max_position_embeddings: int | None = Field(
        None, ge=1, description="llama3 only: the positions the model was trained on before scaling (Llama-3.1: 8192)."
    )

    @model_validator(mode="after")
    def _llama3_needs_its_original_positions(self) -> RopeScaling:
        if self.type == "llama3" and self.original_max_position_embeddings is None:
            raise ValueError("type llama3 needs original_max_position_embeddings (Llama-3.1: 8192)")
        if self.type == "llama3" and self.low_freq_factor >= self.high_freq_factor:
            raise ValueError("type llama3 needs low_freq_factor < high_freq_factor (Llama-3.1: 1 and 4)")
        return self


class YarnRopeScaling(BaseModel):
    """DeepSeek-V2's YaRN rotary scaling, as its published config carries it and PaddleNLP's deepseek_v2 modeling
    (3.0.0b4, DeepseekV2Attention._init_rope -> DeepseekV2YarnRotaryEmbedding) reads it. A registry value only: the
    user-settable model.rope_scaling is RopeScaling's (the llama modeling has no yarn)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["yarn"] = Field(description="yarn.")
    factor: float = Field(gt=0, description="Scaling factor (DeepSeek-V2: 40).")
    original_max_position_embeddings: int = Field(ge=1, description="Positions before scaling (DeepSeek-V2: 4096).")
    beta_fast: float = Field(gt=0, description="DeepSeek-V2: 32.")
    beta_slow: float = Field(gt=0, description="DeepSeek-V2: 1.")
    mscale: float = Field(gt=0, description="DeepSeek-V2: 0.707.")
    mscale_all_dim: float = Field(gt=0, description="DeepSeek-V2: 0.707 (also scales the attention softmax).")


class ModelSpec(BaseModel):
    """One model: identity, where it sits in the capability matrix, and its architecture."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Canonical id, as PaddleNLP names the weights (e.g. meta-llama/Llama-2-7b).")
    aliases: tuple[str, ...] = Field((), description="Short names people type (e.g. llama2-7b).")
    family: Family = Field(description="Architecture family; Baichuan/Ziya/Linly/FlagAlpha are llama in PaddleNLP.")
    matrix_row: str = Field(description="Row of the capability matrix this model resolves to.")
    seed_weight: bool = Field(False, description="One of the 29 weights PaddleNLP's pretraining README supports.")
    hidden_size: int = Field(ge=1, description="Model width.")
    num_hidden_layers: int = Field(ge=1, description="Decoder layers.")
    num_attention_heads: int = Field(ge=1, description="Query heads.")
    num_key_value_heads: int = Field(ge=1, description="Key/value heads (< heads with GQA/MQA).")
    intermediate_size: int = Field(ge=1, description="FFN width as the model's config states it (Qwen v1: 2x).")
    vocab_size: int = Field(ge=1, description="Vocabulary size as the model's config states it.")
    max_position_embeddings: int = Field(ge=1, description="Context length the model was built for.")
    norm: Literal["rmsnorm", "layernorm"] = Field(description="Normalisation layer.")
    norm_eps: float = Field(gt=0, description="Normalisation epsilon.")
    position: Literal["rope", "alibi", "learned", "rope2d"] = Field(description="Position encoding.")
    activation: Literal["silu", "gelu", "relu", "geglu", "swiglu"] = Field(description="FFN activation.")
    tie_word_embeddings: bool = Field(False, description="Output head shares the embedding matrix.")
    rope_theta: float | None = Field(None, gt=0, description="Rotary base, where not the family's default 10000.")
    rope_scaling: RopeScaling | YarnRopeScaling | None = Field(
        None, description="Rotary scaling the published config carries (yarn: deepseek_v2 only)."
    )
    # mixture of experts (None: a dense FFN). One name across families; `_architecture` maps them to each
    # family's PaddleNLP keys (mixtral num_local_experts, qwen2_moe num_experts, deepseek_v2 n_routed_experts).
    num_experts: int | None = Field(None, ge=1, description="Routed experts per MoE layer.")
    num_experts_per_tok: int | None = Field(None, ge=1, description="Experts each token is routed to (top-k).")
    moe_intermediate_size: int | None = Field(
        None, ge=1, description="FFN width of one routed expert (mixtral: = intermediate_size)."
    )
    num_shared_experts: int | None = Field(
        None, ge=1, description="deepseek_v2: experts every token goes through, each moe_intermediate_size wide."
    )
    shared_expert_intermediate_size: int | None = Field(
        None, ge=1, description="qwen2_moe: width of its one shared expert (gated by a sigmoid shared_expert_gate)."
    )
    first_k_dense_replace: int | None = Field(
        None, ge=0, description="deepseek_v2: leading layers with a dense FFN of intermediate_size."
    )
    norm_topk_prob: bool | None = Field(
        None, description="qwen2_moe/deepseek_v2: renormalise the top-k routing weights to sum to 1."
    )
    router_aux_loss_coef: float | None = Field(
        None, ge=0, description="Load-balancing loss weight (deepseek_v2: aux_loss_alpha)."
    )
    topk_method: Literal["greedy", "group_limited_greedy"] | None = Field(
        None, description="deepseek_v2: top-k over all experts, or over the best topk_group of n_group groups."
    )
    n_group: int | None = Field(None, ge=1, description="deepseek_v2: expert groups (group_limited_greedy).")
    topk_group: int | None = Field(None, ge=1, description="deepseek_v2: groups a token may use.")
    routed_scaling_factor: float | None = Field(
        None, gt=0, description="deepseek_v2: multiplies the routed experts' output."
    )
    # DeepSeek's multi-head latent attention (None: standard attention)
    kv_lora_rank: int | None = Field(None, ge=1, description="MLA: compressed key/value width.")
    q_lora_rank: int | None = Field(
        None, ge=1, description="MLA: compressed query width (None with MLA: queries projected directly)."
    )
    qk_rope_head_dim: int | None = Field(None, ge=1, description="MLA: rotary part of each query/key head.")
    qk_nope_head_dim: int | None = Field(None, ge=1, description="MLA: non-rotary part of each query/key head.")
    v_head_dim: int | None = Field(None, ge=1, description="MLA: value head width.")
    source: str = Field(description="Where these numbers come from.")
    notes: str = Field("", description="Anything unusual about the model.")

    @model_validator(mode="after")
    def _experts_and_latent_attention_fit_the_family(self) -> ModelSpec:
        for problem in _moe_problems(self):
            raise ValueError(problem)
        return self

    @property
    def is_moe(self) -> bool:
        return self.num_experts is not None

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def ffn_width(self) -> int:
        """Width of one FFN projection (Qwen v1 stores twice that in intermediate_size)."""
        return self.intermediate_size // 2 if self.family == "qwen" else self.intermediate_size

    @property
    def head_dim(self) -> int:
        """Width of one query/key head (MLA: its non-rotary and rotary parts; values are v_head_dim wide)."""
        if self.qk_nope_head_dim is not None and self.qk_rope_head_dim is not None:
            return self.qk_nope_head_dim + self.qk_rope_head_dim
        return self.hidden_size // self.num_attention_heads


_MOE_KEYS = ("num_experts", "num_experts_per_tok", "moe_intermediate_size")
_MLA_KEYS = ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
# the fields each MoE family's modeling reads (anything else set on it would be silently ignored)
_FAMILY_KEYS: dict[str, tuple[str, ...]] = {
    "mixtral": (*_MOE_KEYS, "router_aux_loss_coef"),
    "qwen2_moe": (*_MOE_KEYS, "shared_expert_intermediate_size", "norm_topk_prob", "router_aux_loss_coef"),
    "deepseek_v2": (
        *_MOE_KEYS, "num_shared_experts", "first_k_dense_replace", "norm_topk_prob", "router_aux_loss_coef",
        "topk_method", "n_group", "topk_group", "routed_scaling_factor", *_MLA_KEYS, "q_lora_rank",
    ),
}  # fmt: skip
_ALL_EXTRA_KEYS = tuple(dict.fromkeys(k for keys in _FAMILY_KEYS.values() for k in keys))


def _moe_problems(m: ModelSpec) -> list[str]:
    """What is wrong with a model's expert and latent-attention fields, each with every value involved."""
    if m.rope_scaling is not None and (m.rope_scaling.type == "yarn") != (m.family in MLA_FAMILIES):
        # the llama modeling has no yarn; deepseek_v2's reads its rope_scaling as DeepSeek publishes it (yarn)
        return [f"rope_scaling type {m.rope_scaling.type} on {m.family}: yarn is deepseek_v2's, and only yarn ({m.id})"]
    own = _FAMILY_KEYS.get(m.family, ())
    stray = [k for k in _ALL_EXTRA_KEYS if getattr(m, k) is not None and k not in own]
    if stray:
        return [f"{', '.join(stray)}: not read by PaddleNLP's {m.family} modeling ({m.id})"]
    if m.family not in MOE_FAMILIES:
        return []
    missing = [k for k in _MOE_KEYS if getattr(m, k) is None]
    if missing:
        return [f"family {m.family} routes tokens to experts: needs {', '.join(missing)} ({m.id})"]
    assert m.num_experts is not None and m.num_experts_per_tok is not None  # for the type checker
    if m.num_experts_per_tok > m.num_experts:
        return [f"num_experts_per_tok {m.num_experts_per_tok} > num_experts {m.num_experts} ({m.id})"]
    if m.family == "mixtral" and m.moe_intermediate_size != m.intermediate_size:
        # MixtralMLP is built from intermediate_size: an expert of another width cannot be expressed
        return [
            f"mixtral: moe_intermediate_size {m.moe_intermediate_size} != intermediate_size {m.intermediate_size} "
            f"(PaddleNLP's MixtralMLP experts are intermediate_size wide) ({m.id})"
        ]
    if m.family == "qwen2_moe" and m.shared_expert_intermediate_size is None:
        return [f"qwen2_moe: needs shared_expert_intermediate_size (every layer has one shared expert) ({m.id})"]
    if m.family == "deepseek_v2":
        mla = [k for k in _MLA_KEYS if getattr(m, k) is None]
        if mla:
            return [f"deepseek_v2: latent attention needs {', '.join(mla)} ({m.id})"]
        if m.first_k_dense_replace is not None and m.first_k_dense_replace >= m.num_hidden_layers:
            return [
                f"first_k_dense_replace {m.first_k_dense_replace} >= num_hidden_layers {m.num_hidden_layers}: "
                f"no MoE layer left ({m.id})"
            ]
        if m.topk_method == "group_limited_greedy":
            if m.n_group is None or m.topk_group is None:
                return [f"topk_method group_limited_greedy needs n_group and topk_group ({m.id})"]
            if m.num_experts % m.n_group or m.topk_group > m.n_group:
                return [
                    f"group_limited_greedy: n_group {m.n_group} must divide num_experts {m.num_experts} and "
                    f"topk_group {m.topk_group} be <= n_group ({m.id})"
                ]
    return []


def normalize(name: str) -> str:
    """Case, spaces and underscores do not matter when naming a model: 'OPT 66B' == 'opt-66b'."""
    return name.strip().lower().replace(" ", "-").replace("_", "-")


@lru_cache(maxsize=1)
def load_registry() -> tuple[tuple[ModelSpec, ...], dict[str, ModelSpec]]:
    """All models, and an index from every normalised id, alias and id tail (after the '/') to its model."""
    data = load_shipped_yaml(REGISTRY_PATH)
    models = tuple(ModelSpec.model_validate(m) for m in data["models"])
    index: dict[str, ModelSpec] = {}
    for m in models:
        for key in {normalize(m.id), normalize(m.id.rsplit("/", 1)[-1]), *(normalize(a) for a in m.aliases)}:
            other = index.get(key)
            if other is not None and other.id != m.id:
                raise RuntimeError(f"registry.yaml: name {key!r} is claimed by {other.id} and {m.id}")
            index[key] = m
    return models, index


def all_models() -> tuple[ModelSpec, ...]:
    return load_registry()[0]


def resolve_model(name: str) -> ModelSpec:
    """A model by id, alias or id tail; ModelError with the closest names otherwise."""
    _, index = load_registry()
    spec = index.get(normalize(name))
    if spec is not None:
        return spec
    close = difflib.get_close_matches(normalize(name), list(index), n=3, cutoff=0.6)
    ids = list(dict.fromkeys(index[c].id for c in close))
    raise ModelError(
        f"unknown model '{name}'." + (f" Did you mean {' or '.join(repr(i) for i in ids)}?" if ids else ""),
        "see: llmpt models list",
    )


def padded_vocab(vocab_size: int, multiple: int = VOCAB_PAD_MULTIPLE) -> int:
    return -(-vocab_size // multiple) * multiple


# families llmpt train refuses, with the measured reason (see README): none today. ChatGLM v1 and GLM train on
# their generation layout (llmpt/train/inputs.py).
NOT_TRAINABLE: dict[str, str] = {}
# The special tokens each family's training layout puts in every sample (llmpt/train/inputs.py), by the config key
# that holds the id.
ADDED_TOKENS: dict[str, tuple[str, ...]] = {
    "chatglm": ("gmask_token_id", "bos_token_id"),
    "glm": ("gmask_token_id", "bos_token_id"),
}


def added_token_ids(family: str, tokenizer_vocab: int, config: dict[str, Any]) -> dict[str, int]:
    """The ids of the family's ADDED_TOKENS: a checkpoint's own where its config has them inside its vocabulary
    (ChatGLM-6B: [gMASK] 130001, <sop> 130004); else the first ids after the data tokenizer's vocabulary, which
    the tokenizer never produces, so no text token is mistaken for one (the modeling finds the context's end as the
    first BOS). The caller sizes the vocabulary to hold them (padded_vocab(tokenizer_vocab + len(ids)))."""
    keys = ADDED_TOKENS.get(family, ())
    if keys and all(0 <= config.get(k, -1) < config["vocab_size"] for k in keys):
        return {k: config[k] for k in keys}
    return {k: tokenizer_vocab + i for i, k in enumerate(keys)}


# PaddleNLP's model_type (its config.json and AutoConfig name) of each family
MODEL_TYPE: dict[str, str] = {
    "llama": "llama",
    "qwen": "qwen",
    "gpt": "gpt",
    "opt": "opt",
    "bloom": "bloom",
    "chatglm": "chatglm",
    "chatglm2": "chatglm_v2",
    "glm": "glm",
    "qwen2": "qwen2",
    "mistral": "mistral",
    "mixtral": "mixtral",
    "qwen2_moe": "qwen2_moe",
    "deepseek_v2": "deepseek_v2",
}
# The config keys each family's PaddleNLP modeling reads its dropout probabilities from (3.0.0b4). Llama and
# ChatGLM v1 build no dropout layers at all: a dropout asked of them is refused, not silently dropped.
DROPOUT_KEYS: dict[str, tuple[str, ...]] = {
    "llama": (),
    "qwen": ("emb_dropout_prob", "attn_dropout_prob"),
    "gpt": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "opt": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "bloom": ("hidden_dropout", "attention_dropout"),
    "chatglm": (),
    "chatglm2": ("hidden_dropout", "attention_dropout"),
    "glm": ("embedding_dropout_prob", "attention_dropout_prob", "output_dropout_prob"),
    # qwen2: only scaled_dot_product_attention's F.dropout on the attention weights (the path without flash
    # attention); mistral builds no dropout layer at all
    "qwen2": ("attention_dropout",),
    "mistral": (),
    # the MoE families: like qwen2, F.dropout on the attention weights only (3.0.0b4 modeling)
    "mixtral": ("attention_dropout",),
    "qwen2_moe": ("attention_dropout",),
    "deepseek_v2": ("attention_dropout",),
}


def dropout_config(spec: ModelSpec, p: float) -> dict[str, float]:
    """The config entries that set `p` as the model's dropout; ModelError if its modeling has none."""
    keys = DROPOUT_KEYS[spec.family]
    if p > 0 and not keys:
        raise ModelError(
            f"train.dropout {p}: PaddleNLP's {spec.family} modeling has no dropout layers ({spec.id})",
            "leave train.dropout at 0",
        )
    return dict.fromkeys(keys, p)


def paddlenlp_config(spec: ModelSpec, seq_len: int | None = None, from_scratch: bool = True) -> dict[str, Any]:
    """The PaddleNLP config dict (keys of that family's config class) that training builds the model from.

    From scratch, as PaddleNLP's run_pretrain.py does: vocab padded to a multiple of 128 and
    max_position_embeddings raised to the sequence length.
    """
    return {"model_type": MODEL_TYPE[spec.family], **_architecture(spec, seq_len, from_scratch)}


class _Field(str):
    """A value of the config table filled from the model (see `_architecture`), not a constant."""


_NAMES = "vocab hidden ffn layers heads kv_heads head_dim positions seq eps alibi tie rope_theta theta10k".split()
VOCAB, HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, POSITIONS, SEQ, EPS, ALIBI, TIE, THETA, THETA10K = map(
    _Field, _NAMES
)
# THETA10K: rope_theta always written, 10000 when the model sets none, for the config classes whose own default is
# not 10000 (3.0.0b4: MixtralConfig and Qwen2MoeConfig default to 1e6); the MoE fields are filled by their own name
_MOE_FIELDS = {k: _Field(k) for k in _ALL_EXTRA_KEYS}
# mixtral adds router_aux_loss_coef x its load-balancing loss to the loss only when output_router_logits is on
# (MixtralForCausalLM.forward), which its config class defaults to off: on wherever the model states a coefficient
AUX_LOSS_ON = _Field("aux_loss_on")
# rope_theta where the model sets none: the RoPE paper's base, which the registry's `rope_theta` field assumes
DEFAULT_ROPE_THETA = 10000.0
# Each family's PaddleNLP config keys (3.0.0b4 config classes), filled from the registry's architecture fields; the
# other values are constants of that family's layout. tests/integration/test_model_configs.py builds every one.
CONFIG_TABLE: dict[str, dict[str, Any]] = {
    "llama": {
        "architectures": ["LlamaForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": FFN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": POSITIONS, "seq_length": SEQ, "rms_norm_eps": EPS, "alibi": ALIBI,
        "tie_word_embeddings": TIE, "rope_theta": THETA,
    },
    "qwen": {
        "architectures": ["QWenLMHeadModel"], "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": FFN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "kv_channels": HEAD_DIM,  # PaddleNLP's default kv_channels 128 only fits 128-wide heads
        "max_position_embeddings": POSITIONS, "layer_norm_epsilon": EPS, "no_bias": True, "tie_word_embeddings": TIE,
    },
    "gpt": {
        "architectures": ["GPTForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": FFN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "max_position_embeddings": POSITIONS,
        "seq_length": SEQ, "hidden_activation": "gelu", "normalize_before": True,
    },
    "opt": {
        "architectures": ["OPTForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": FFN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "max_position_embeddings": POSITIONS,
        "hidden_act": "relu", "normalize_before": True, "word_embed_proj_dim": HIDDEN,
    },
    "bloom": {
        "architectures": ["BloomForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN, "n_layer": LAYERS,
        "n_head": HEADS, "layer_norm_epsilon": EPS,
    },
    "chatglm": {
        "architectures": ["ChatGLMForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "inner_hidden_size": FFN,
        "max_sequence_length": POSITIONS, "layernorm_epsilon": EPS, "position_encoding_2d": True,
    },
    "chatglm2": {
        "architectures": ["ChatGLMv2ForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN, "ffn_hidden_size": FFN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "kv_channels": HEAD_DIM,
        "multi_query_group_num": KV_HEADS, "max_sequence_length": POSITIONS, "layernorm_epsilon": EPS,
        "rmsnorm": True, "add_qkv_bias": True, "add_bias_linear": False,
    },
    # glm: PaddleNLP's GLM class (GLM-10B style); GLM-130B's GeGLU FFN is not modelled by it
    "glm": {
        "architectures": ["GLMForConditionalGeneration"], "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "num_layers": LAYERS, "num_attention_heads": HEADS, "max_sequence_length": POSITIONS, "layernorm_epsilon": EPS,
    },
    # qwen2: Qwen2/Qwen2.5 (PaddleNLP's qwen2 modeling: q/k/v with bias, GQA, RMSNorm, SwiGLU)
    "qwen2": {
        "architectures": ["Qwen2ForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": FFN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": POSITIONS, "seq_length": SEQ, "rms_norm_eps": EPS, "tie_word_embeddings": TIE,
        "rope_theta": THETA,
    },
    "mistral": {
        "architectures": ["MistralForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": POSITIONS, "rms_norm_eps": EPS,
        "tie_word_embeddings": TIE, "rope_theta": THETA,
    },
    # mixtral: Mistral's attention, every FFN a routed MoE of num_local_experts experts of intermediate_size
    "mixtral": {
        "architectures": ["MixtralForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": POSITIONS, "seq_length": SEQ,
        "rms_norm_eps": EPS, "tie_word_embeddings": TIE, "rope_theta": THETA10K,
        "num_local_experts": _MOE_FIELDS["num_experts"], "num_experts_per_tok": _MOE_FIELDS["num_experts_per_tok"],
        "router_aux_loss_coef": _MOE_FIELDS["router_aux_loss_coef"], "output_router_logits": AUX_LOSS_ON,
    },
    # qwen2_moe: Qwen2's attention; every layer sparse (its modeling ignores decoder_sparse_step) with one shared
    # expert beside the routed ones
    "qwen2_moe": {
        "architectures": ["Qwen2MoeForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": POSITIONS, "seq_length": SEQ,
        "rms_norm_eps": EPS, "tie_word_embeddings": TIE, "rope_theta": THETA10K,
        "num_experts": _MOE_FIELDS["num_experts"], "num_experts_per_tok": _MOE_FIELDS["num_experts_per_tok"],
        "moe_intermediate_size": _MOE_FIELDS["moe_intermediate_size"],
        "shared_expert_intermediate_size": _MOE_FIELDS["shared_expert_intermediate_size"],
        "norm_topk_prob": _MOE_FIELDS["norm_topk_prob"], "router_aux_loss_coef": _MOE_FIELDS["router_aux_loss_coef"],
    },
    # deepseek_v2: latent attention (MLA), first_k_dense_replace dense layers then MoE layers of routed and shared
    # experts; moe_layer_freq 1 and softmax scoring as in every DeepSeek-V2 config
    "deepseek_v2": {
        "architectures": ["DeepseekV2ForCausalLM"], "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": POSITIONS, "seq_length": SEQ,
        "rms_norm_eps": EPS, "tie_word_embeddings": TIE, "rope_theta": THETA10K,
        "n_routed_experts": _MOE_FIELDS["num_experts"], "num_experts_per_tok": _MOE_FIELDS["num_experts_per_tok"],
        "moe_intermediate_size": _MOE_FIELDS["moe_intermediate_size"],
        "n_shared_experts": _MOE_FIELDS["num_shared_experts"],
        "first_k_dense_replace": _MOE_FIELDS["first_k_dense_replace"],
        "norm_topk_prob": _MOE_FIELDS["norm_topk_prob"], "aux_loss_alpha": _MOE_FIELDS["router_aux_loss_coef"],
        "topk_method": _MOE_FIELDS["topk_method"], "n_group": _MOE_FIELDS["n_group"],
        "topk_group": _MOE_FIELDS["topk_group"], "routed_scaling_factor": _MOE_FIELDS["routed_scaling_factor"],
        "kv_lora_rank": _MOE_FIELDS["kv_lora_rank"], "q_lora_rank": _MOE_FIELDS["q_lora_rank"],
        "qk_rope_head_dim": _MOE_FIELDS["qk_rope_head_dim"], "qk_nope_head_dim": _MOE_FIELDS["qk_nope_head_dim"],
        "v_head_dim": _MOE_FIELDS["v_head_dim"], "moe_layer_freq": 1, "scoring_func": "softmax",
        "attention_bias": False,
    },
}  # fmt: skip
# config keys whose None is the model's, not "unset": DeepseekV2Config defaults q_lora_rank to 1536, while
# DeepSeek-V2-Lite projects its queries directly (q_lora_rank null)
_NONE_IS_A_VALUE = {"deepseek_v2": ("q_lora_rank",)}
# deepseek_v2's topk_method default is the misspelt "gready" (3.0.0b4), which moe_gate.py does not recognise
_MOE_DEFAULTS = {"deepseek_v2": {"topk_method": "greedy"}}
# families whose PaddleNLP modeling reads a rope scaling (llama: LlamaAttention._init_rope); the qwen2 and mistral
# modeling build a plain rotary table whatever the config says
ROPE_SCALING_FAMILIES = ("llama",)


def rope_scaling_config(scaling: RopeScaling | YarnRopeScaling) -> dict[str, Any]:
    """The PaddleNLP llama config entries for a rope scaling (3.0.0b4: a `rope_scaling` dict with rope_type llama3,
    else rope_scaling_type + rope_scaling_factor); yarn: deepseek_v2's `rope_scaling` dict, as published."""
    if isinstance(scaling, YarnRopeScaling):
        return {"rope_scaling": scaling.model_dump()}
    if scaling.type == "llama3":
        return {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": scaling.factor,
                "low_freq_factor": scaling.low_freq_factor,
                "high_freq_factor": scaling.high_freq_factor,
                "original_max_position_embeddings": scaling.original_max_position_embeddings,
            }
        }
    return {"rope_scaling_type": scaling.type, "rope_scaling_factor": scaling.factor}


def _architecture(spec: ModelSpec, seq_len: int | None, from_scratch: bool) -> dict[str, Any]:
    seq = seq_len or spec.max_position_embeddings
    fields = {
        VOCAB: padded_vocab(spec.vocab_size) if from_scratch else spec.vocab_size,
        HIDDEN: spec.hidden_size,
        FFN: spec.intermediate_size,
        LAYERS: spec.num_hidden_layers,
        HEADS: spec.num_attention_heads,
        KV_HEADS: spec.num_key_value_heads,
        HEAD_DIM: spec.head_dim,
        POSITIONS: max(spec.max_position_embeddings, seq) if from_scratch else spec.max_position_embeddings,
        SEQ: seq,
        EPS: spec.norm_eps,
        ALIBI: spec.position == "alibi",
        TIE: spec.tie_word_embeddings,
        THETA: spec.rope_theta,
        THETA10K: spec.rope_theta or DEFAULT_ROPE_THETA,
        **{f: getattr(spec, f) for f in _MOE_FIELDS.values()},
        AUX_LOSS_ON: bool(spec.router_aux_loss_coef),
    }
    table = CONFIG_TABLE[spec.family]
    out = {k: fields[v] if isinstance(v, _Field) else v for k, v in table.items()}
    keep = _NONE_IS_A_VALUE.get(spec.family, ())
    # unset: the config class's default (rope_theta 10000), or llmpt's where that default is unusable
    out = {**_MOE_DEFAULTS.get(spec.family, {}), **{k: v for k, v in out.items() if v is not None or k in keep}}
    if spec.rope_scaling is not None and (
        spec.family in ROPE_SCALING_FAMILIES or isinstance(spec.rope_scaling, YarnRopeScaling)
    ):
        out.update(rope_scaling_config(spec.rope_scaling))
    return out
