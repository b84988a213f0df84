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

Family = Literal["llama", "qwen", "gpt", "opt", "bloom", "chatglm", "chatglm2", "glm", "qwen2", "mistral"]

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
    rope_scaling: RopeScaling | None = Field(None, description="Rotary scaling the published config carries.")
    source: str = Field(description="Where these numbers come from.")
    notes: str = Field("", description="Anything unusual about the model.")

    @property
    def ffn_width(self) -> int:
        """Width of one FFN projection (Qwen v1 stores twice that in intermediate_size)."""
        return self.intermediate_size // 2 if self.family == "qwen" else self.intermediate_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


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


_NAMES = "vocab hidden ffn layers heads kv_heads head_dim positions seq eps alibi tie rope_theta".split()
VOCAB, HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, POSITIONS, SEQ, EPS, ALIBI, TIE, THETA = map(_Field, _NAMES)
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
}  # fmt: skip
# families whose PaddleNLP modeling reads a rope scaling (llama: LlamaAttention._init_rope); the qwen2 and mistral
# modeling build a plain rotary table whatever the config says
ROPE_SCALING_FAMILIES = ("llama",)


def rope_scaling_config(scaling: RopeScaling) -> dict[str, Any]:
    """The PaddleNLP llama config entries for a rope scaling (3.0.0b4: a `rope_scaling` dict with rope_type llama3,
    else rope_scaling_type + rope_scaling_factor)."""
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
    }
    out = {k: fields[v] if isinstance(v, _Field) else v for k, v in CONFIG_TABLE[spec.family].items()}
    out = {k: v for k, v in out.items() if v is not None}  # unset: the config class's default (rope_theta 10000)
    if spec.rope_scaling is not None and spec.family in ROPE_SCALING_FAMILIES:
        out.update(rope_scaling_config(spec.rope_scaling))
    return out
