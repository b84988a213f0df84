"""The model registry: model ids and aliases -> family, matrix row and offline architecture (registry.yaml)."""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from llmpt.errors import ModelError

REGISTRY_PATH = Path(__file__).with_name("registry.yaml")

Family = Literal["llama", "qwen", "gpt", "opt", "bloom", "chatglm", "chatglm2", "glm"]

# PaddleNLP's run_pretrain.py pads a from-scratch vocabulary up to a multiple of 128 "for better amp performance"
VOCAB_PAD_MULTIPLE = 128


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
    data = yaml.safe_load(REGISTRY_PATH.read_text(encoding="utf-8"))
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


# families whose PaddleNLP causal-LM class cannot pretrain on plain token windows (measured, see README)
NOT_TRAINABLE: dict[str, str] = {
    "chatglm": "PaddleNLP's ChatGLM (v1) needs a 4-D attention mask and gMASK/BOS tokens in every sample, which "
    "the causal pretraining dataset does not produce",
    "glm": "PaddleNLP has no causal-LM class for GLM (only GLMForConditionalGeneration)",
}
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


def _architecture(spec: ModelSpec, seq_len: int | None, from_scratch: bool) -> dict[str, Any]:
    seq = seq_len or spec.max_position_embeddings
    vocab = padded_vocab(spec.vocab_size) if from_scratch else spec.vocab_size
    positions = max(spec.max_position_embeddings, seq) if from_scratch else spec.max_position_embeddings
    h, layers, heads = spec.hidden_size, spec.num_hidden_layers, spec.num_attention_heads
    f = spec.family
    if f == "llama":
        return {
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": vocab,
            "hidden_size": h,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": spec.num_key_value_heads,
            "max_position_embeddings": positions,
            "seq_length": seq,
            "rms_norm_eps": spec.norm_eps,
            "alibi": spec.position == "alibi",
            "tie_word_embeddings": spec.tie_word_embeddings,
        }
    if f == "qwen":
        return {
            "architectures": ["QWenLMHeadModel"],
            "vocab_size": vocab,
            "hidden_size": h,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            # PaddleNLP's default kv_channels 128 only fits 128-wide heads
            "kv_channels": spec.head_dim,
            "max_position_embeddings": positions,
            "layer_norm_epsilon": spec.norm_eps,
            "no_bias": True,
            "tie_word_embeddings": spec.tie_word_embeddings,
        }
    if f == "gpt":
        return {
            "architectures": ["GPTForCausalLM"],
            "vocab_size": vocab,
            "hidden_size": h,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "max_position_embeddings": positions,
            "seq_length": seq,
            "hidden_activation": "gelu",
            "normalize_before": True,
        }
    if f == "opt":
        return {
            "architectures": ["OPTForCausalLM"],
            "vocab_size": vocab,
            "hidden_size": h,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "max_position_embeddings": positions,
            "hidden_act": "relu",
            "normalize_before": True,
            "word_embed_proj_dim": h,
        }
    if f == "bloom":
        return {
            "architectures": ["BloomForCausalLM"],
            "vocab_size": vocab,
            "hidden_size": h,
            "n_layer": layers,
            "n_head": heads,
            "layer_norm_epsilon": spec.norm_eps,
        }
    if f == "chatglm":
        return {
            "architectures": ["ChatGLMForCausalLM"],
            "vocab_size": vocab,
            "hidden_size": h,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "inner_hidden_size": spec.intermediate_size,
            "max_sequence_length": positions,
            "layernorm_epsilon": spec.norm_eps,
            "position_encoding_2d": True,
        }
    if f == "chatglm2":
        return {
            "architectures": ["ChatGLMv2ForCausalLM"],
            "vocab_size": vocab,
            "hidden_size": h,
            "ffn_hidden_size": spec.intermediate_size,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "kv_channels": spec.head_dim,
            "multi_query_group_num": spec.num_key_value_heads,
            "max_sequence_length": positions,
            "layernorm_epsilon": spec.norm_eps,
            "rmsnorm": True,
            "add_qkv_bias": True,
            "add_bias_linear": False,
        }
    # glm: PaddleNLP's GLM class (GLM-10B style); GLM-130B's GeGLU FFN is not modelled by it
    return {
        "architectures": ["GLMForConditionalGeneration"],
        "vocab_size": vocab,
        "hidden_size": h,
        "num_layers": layers,
        "num_attention_heads": heads,
        "max_sequence_length": positions,
        "layernorm_epsilon": spec.norm_eps,
    }
