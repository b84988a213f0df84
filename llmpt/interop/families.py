"""The conversion table: for each trainable family, how PaddleNLP 3.0.0b4's tensors and config keys map to the
Hugging Face layout of the same model, and back. One entry per family (CONVERSIONS); a family the registry grows
(Llama-3, Qwen2, Mistral, ...) is one more entry.

Each entry says, per tensor, which PaddleNLP name(s) and which Hugging Face name hold it and how (Rule.kind):
  copy     the same array (embeddings, norms, biases; Conv1D weights, which torch stores [in, out] as Paddle does)
  linear   transposed: paddle.nn.Linear stores [in, out], torch.nn.Linear [out, in]
  concat   several PaddleNLP tensors are one Hugging Face tensor, concatenated on the last axis (GPT-2's c_attn)
and how the configs translate (to_hf / from_hf), refusing with the reason any variant whose equations the other side
does not implement. The names follow PaddleNLP's own `_get_name_mappings` (llama, gpt, opt, bloom, qwen,
chatglm_v2 modeling.py); tests/integration/test_interop_reference.py proves every entry numerically against a
numpy implementation of the Hugging Face equations (reference_forward.py).

Also here, because they are facts about PaddleNLP's tensors: their shapes from a config (paddle_shapes), the fused
tensors some configurations train with (FUSED, split back to the plain names before conversion), and how tensor
parallel splits them (tp_parts, for merging the shards of a checkpoint)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Shape = tuple[int, ...]


class ConversionRefused(ValueError):
    """A config whose model the other layout cannot express; the message says which key and why."""


@dataclass(frozen=True)
class Rule:
    """One Hugging Face tensor and the PaddleNLP tensor(s) it holds."""

    paddle: tuple[str, ...]
    hf: str
    kind: str  # copy | linear | concat

    def hf_shape(self, shapes: dict[str, Shape]) -> Shape:
        parts = [shapes[p] for p in self.paddle]
        if self.kind == "linear":
            return tuple(reversed(parts[0]))
        if self.kind == "concat":
            return (*parts[0][:-1], sum(s[-1] for s in parts))
        return parts[0]

    def to_hf(self, arrays: list[Any]):
        import numpy as np

        if self.kind == "linear":
            return np.ascontiguousarray(arrays[0].T)
        if self.kind == "concat":
            return np.concatenate(arrays, axis=-1)
        return arrays[0]

    def from_hf(self, array: Any, shapes: dict[str, Shape]) -> list[Any]:
        import numpy as np

        if self.kind == "linear":
            return [np.ascontiguousarray(array.T)]
        if self.kind == "concat":
            cuts = np.cumsum([shapes[p][-1] for p in self.paddle])[:-1]
            return [np.ascontiguousarray(a) for a in np.split(array, cuts, axis=-1)]
        return [array]


@dataclass(frozen=True)
class Head:
    """The output projection: PaddleNLP's name (None: PaddleNLP always ties it to the embedding), Hugging Face's,
    the rule kind, and whether the two may be tied (then Hugging Face's file omits it and its config says so)."""

    paddle: str | None
    hf: str
    kind: str
    embedding: str  # PaddleNLP name of the input embedding it may be tied to


@dataclass(frozen=True)
class Conversion:
    family: str
    paddle_model_type: str
    hf_model_types: tuple[str, ...]
    hf_prefix: str  # the base-model prefix of Hugging Face names, which older checkpoints omit (gpt2, bloom-560m)
    rules: Callable[[dict[str, Any]], list[Rule]]
    head: Callable[[dict[str, Any]], Head | None]
    paddle_shapes: Callable[[dict[str, Any]], dict[str, Shape]]
    to_hf: Callable[[dict[str, Any], bool], dict[str, Any]]
    from_hf: Callable[[dict[str, Any]], dict[str, Any]]
    # Hugging Face tensors that are buffers, not weights: present in some files, recomputed by the model
    hf_ignored: tuple[str, ...] = ()
    remote_code: str | None = None  # the Hugging Face repository whose modeling code loads this layout
    notes: str = ""


def _layers(cfg: dict[str, Any]) -> int:
    return int(cfg.get("num_hidden_layers") or cfg.get("n_layer"))


def _get(cfg: dict[str, Any], key: str, default: Any = None) -> Any:
    value = cfg.get(key)
    return default if value is None else value


def _refuse_unless(cfg: dict[str, Any], key: str, allowed: tuple, default: Any, why: str) -> None:
    value = cfg.get(key, default)
    if value not in allowed:
        shown = " or ".join(repr(a) for a in allowed)
        raise ConversionRefused(f"config.json {key} {value!r}: only {shown} converts ({why})")


def _ids(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if isinstance(cfg.get(k), int)}


def _common_hf(dtype: str) -> dict[str, Any]:
    return {"torch_dtype": dtype, "use_cache": True}


# ---- llama (Hugging Face LlamaForCausalLM) ---------------------------------------------------------------------


def _llama_rules(c: dict[str, Any]) -> list[Rule]:
    rules = [Rule(("llama.embed_tokens.weight",), "model.embed_tokens.weight", "copy")]
    for i in range(_layers(c)):
        p, h = f"llama.layers.{i}.", f"model.layers.{i}."
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                     "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):  # fmt: skip
            rules.append(Rule((f"{p}{name}.weight",), f"{h}{name}.weight", "linear"))
        for name in ("input_layernorm", "post_attention_layernorm"):
            rules.append(Rule((f"{p}{name}.weight",), f"{h}{name}.weight", "copy"))
    rules.append(Rule(("llama.norm.weight",), "model.norm.weight", "copy"))
    return rules


def _llama_head(c: dict[str, Any]) -> Head | None:
    if c.get("tie_word_embeddings"):
        return None  # tied: neither side stores a head
    return Head("lm_head.weight", "lm_head.weight", "linear", "llama.embed_tokens.weight")


def _llama_shapes(c: dict[str, Any]) -> dict[str, Shape]:
    h, v, f = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    nh = c["num_attention_heads"]
    kv = _get(c, "num_key_value_heads", nh) * (h // nh)
    s: dict[str, Shape] = {"llama.embed_tokens.weight": (v, h)}
    for i in range(_layers(c)):
        p = f"llama.layers.{i}."
        s |= {f"{p}self_attn.q_proj.weight": (h, h), f"{p}self_attn.k_proj.weight": (h, kv),
              f"{p}self_attn.v_proj.weight": (h, kv), f"{p}self_attn.o_proj.weight": (h, h),
              f"{p}mlp.gate_proj.weight": (h, f), f"{p}mlp.up_proj.weight": (h, f), f"{p}mlp.down_proj.weight": (f, h),
              f"{p}input_layernorm.weight": (h,), f"{p}post_attention_layernorm.weight": (h,)}  # fmt: skip
    s["llama.norm.weight"] = (h,)
    if not c.get("tie_word_embeddings"):
        s["lm_head.weight"] = (h, v)
    return s


def _llama_to_hf(c: dict[str, Any], tied: bool) -> dict[str, Any]:
    if c.get("alibi"):
        raise ConversionRefused(
            "alibi true (Baichuan-style ALiBi): Hugging Face's LlamaForCausalLM has no ALiBi, and Baichuan's own "
            "layout is remote code llmpt does not write; export with --format paddle"
        )
    if c.get("rope_scaling_type"):
        raise ConversionRefused(f"rope_scaling_type {c['rope_scaling_type']!r}: not converted to Hugging Face's")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **_rope_llama_config(c),
        "rope_scaling": _llama3_scaling(c.get("rope_scaling")),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        **_ids(c),
    }


LLAMA3_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def _llama3_scaling(scaling: Any) -> dict[str, Any] | None:
    """Llama-3.1's rope_scaling, the same dict in both layouts (PaddleNLP 3.0.0b4's LlamaAttention._init_rope reads
    rope_type llama3 and these four keys); None for none; ConversionRefused for any other scaling, whose
    equations llmpt has not checked against Hugging Face's."""
    if scaling is None:
        return None
    kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else None
    if kind != "llama3" or any(not isinstance(scaling.get(k), (int, float)) for k in LLAMA3_SCALING_KEYS):
        raise ConversionRefused(
            f"config.json rope_scaling {scaling!r}: only None or Llama-3.1's llama3 scaling (factor, "
            "low/high_freq_factor, original_max_position_embeddings) converts"
        )
    return {"rope_type": "llama3", **{k: scaling[k] for k in LLAMA3_SCALING_KEYS}}


def _llama_from_hf(h: dict[str, Any]) -> dict[str, Any]:
    _refuse_unless(h, "hidden_act", ("silu",), "silu", "PaddleNLP's llama MLP is SwiGLU")
    scaling = _llama3_scaling(h.get("rope_scaling"))
    _refuse_unless(h, "attention_bias", (False,), False, "PaddleNLP's llama projections have no bias")
    _refuse_unless(h, "mlp_bias", (False,), False, "PaddleNLP's llama MLP has no bias")
    heads = h["num_attention_heads"]
    _refuse_unless(h, "head_dim", (None, h["hidden_size"] // heads), None, "PaddleNLP takes hidden_size / heads")
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": h["vocab_size"],
        "hidden_size": h["hidden_size"],
        "intermediate_size": h["intermediate_size"],
        "num_hidden_layers": h["num_hidden_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": _get(h, "num_key_value_heads", heads),
        "max_position_embeddings": _get(h, "max_position_embeddings", 2048),
        "rms_norm_eps": _get(h, "rms_norm_eps", 1e-6),
        "rope_theta": _get(h, "rope_theta", 10000.0),
        **({"rope_scaling": scaling} if scaling else {}),
        "alibi": False,
        "tie_word_embeddings": bool(h.get("tie_word_embeddings", False)),
        "initializer_range": _get(h, "initializer_range", 0.02),
        **_ids(h),
    }


# ---- qwen2 and mistral (Hugging Face Qwen2ForCausalLM, MistralForCausalLM): llama's layout under their own prefix,
# qwen2 with biases on q, k and v (PaddleNLP's qwen2/mistral modeling.py _get_name_mappings) -------------------------

_PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip


def _rope_llama_rules(prefix: str, qkv_bias: bool) -> Callable[[dict[str, Any]], list[Rule]]:
    def rules(c: dict[str, Any]) -> list[Rule]:
        out = [Rule((f"{prefix}.embed_tokens.weight",), "model.embed_tokens.weight", "copy")]
        for i in range(_layers(c)):
            p, h = f"{prefix}.layers.{i}.", f"model.layers.{i}."
            out += [Rule((f"{p}{name}.weight",), f"{h}{name}.weight", "linear") for name in _PROJECTIONS]
            if qkv_bias:
                out += [Rule((f"{p}self_attn.{x}_proj.bias",), f"{h}self_attn.{x}_proj.bias", "copy") for x in "qkv"]
            for name in ("input_layernorm", "post_attention_layernorm"):
                out.append(Rule((f"{p}{name}.weight",), f"{h}{name}.weight", "copy"))
        out.append(Rule((f"{prefix}.norm.weight",), "model.norm.weight", "copy"))
        return out

    return rules


def _rope_llama_shapes(prefix: str, qkv_bias: bool) -> Callable[[dict[str, Any]], dict[str, Shape]]:
    def shapes(c: dict[str, Any]) -> dict[str, Shape]:
        h, v, f, nh = c["hidden_size"], c["vocab_size"], c["intermediate_size"], c["num_attention_heads"]
        kv = _get(c, "num_key_value_heads", nh) * (h // nh)
        s: dict[str, Shape] = {f"{prefix}.embed_tokens.weight": (v, h)}
        for i in range(_layers(c)):
            p = f"{prefix}.layers.{i}."
            s |= {f"{p}self_attn.q_proj.weight": (h, h), f"{p}self_attn.k_proj.weight": (h, kv),
                  f"{p}self_attn.v_proj.weight": (h, kv), f"{p}self_attn.o_proj.weight": (h, h),
                  f"{p}mlp.gate_proj.weight": (h, f), f"{p}mlp.up_proj.weight": (h, f),
                  f"{p}mlp.down_proj.weight": (f, h)}  # fmt: skip
            if qkv_bias:
                s |= {f"{p}self_attn.q_proj.bias": (h,), f"{p}self_attn.k_proj.bias": (kv,),
                      f"{p}self_attn.v_proj.bias": (kv,)}  # fmt: skip
            s |= {f"{p}input_layernorm.weight": (h,), f"{p}post_attention_layernorm.weight": (h,)}
        s[f"{prefix}.norm.weight"] = (h,)
        if not c.get("tie_word_embeddings"):
            s["lm_head.weight"] = (h, v)
        return s

    return shapes


def _rope_llama_head(prefix: str) -> Callable[[dict[str, Any]], Head | None]:
    def head(c: dict[str, Any]) -> Head | None:
        if c.get("tie_word_embeddings"):
            return None  # tied: neither side stores a head (Qwen2-0.5B/1.5B, Qwen2.5-0.5B/1.5B/3B)
        return Head("lm_head.weight", "lm_head.weight", "linear", f"{prefix}.embed_tokens.weight")

    return head


def _rope_llama_config(c: dict[str, Any]) -> dict[str, Any]:
    """The keys llama, qwen2 and mistral share, in Hugging Face's names (the same as PaddleNLP's)."""
    return {
        "vocab_size": c["vocab_size"],
        "hidden_size": c["hidden_size"],
        "intermediate_size": c["intermediate_size"],
        "num_hidden_layers": _layers(c),
        "num_attention_heads": c["num_attention_heads"],
        "num_key_value_heads": _get(c, "num_key_value_heads", c["num_attention_heads"]),
        "max_position_embeddings": c["max_position_embeddings"],
        "rms_norm_eps": _get(c, "rms_norm_eps", 1e-6),
        "rope_theta": _get(c, "rope_theta", 10000.0),
        "tie_word_embeddings": bool(c.get("tie_word_embeddings")),
        "initializer_range": _get(c, "initializer_range", 0.02),
    }


def _rope_llama_from_hf(h: dict[str, Any], family: str) -> dict[str, Any]:
    _refuse_unless(h, "hidden_act", ("silu",), "silu", f"PaddleNLP's {family} MLP is SwiGLU")
    _refuse_unless(h, "rope_scaling", (None,), None, f"PaddleNLP 3.0.0b4's {family} builds a plain rotary table")
    heads = h["num_attention_heads"]
    _refuse_unless(h, "head_dim", (None, h["hidden_size"] // heads), None, "PaddleNLP takes hidden_size / heads")
    return _rope_llama_config(h)


def _qwen2_to_hf(c: dict[str, Any], tied: bool) -> dict[str, Any]:
    if c.get("rope_scaling_type"):
        raise ConversionRefused(
            f"rope_scaling_type {c['rope_scaling_type']!r}: PaddleNLP's qwen2 never applied it, Hugging Face's would"
        )
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **_rope_llama_config(c),
            "hidden_act": "silu", "rope_scaling": None, "use_sliding_window": False, "attention_dropout": 0.0,
            **_ids(c)}  # fmt: skip


def _qwen2_from_hf(h: dict[str, Any]) -> dict[str, Any]:
    _refuse_unless(h, "use_sliding_window", (False,), False, "PaddleNLP's qwen2 attends over the whole window")
    return {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], **_rope_llama_from_hf(h, "qwen2"),
            "seq_length": _get(h, "max_position_embeddings", 32768), **_ids(h)}  # fmt: skip


def _mistral_to_hf(c: dict[str, Any], tied: bool) -> dict[str, Any]:
    # PaddleNLP's mistral attends over the whole causal window (its sliding_window is never applied): the export says
    # so, rather than the window a released config may name
    return {"architectures": ["MistralForCausalLM"], "model_type": "mistral", **_rope_llama_config(c),
            "hidden_act": "silu", "sliding_window": None, "attention_dropout": 0.0, **_ids(c)}  # fmt: skip


def _mistral_from_hf(h: dict[str, Any]) -> dict[str, Any]:
    # a released sliding_window (Mistral-7B-v0.1: 4096) is kept in the config but PaddleNLP never applies it: the
    # same equations up to that many tokens
    window = {"sliding_window": h["sliding_window"]} if isinstance(h.get("sliding_window"), int) else {}
    return {"model_type": "mistral", "architectures": ["MistralForCausalLM"], **_rope_llama_from_hf(h, "mistral"),
            **window, **_ids(h)}  # fmt: skip


# ---- qwen v1 (Hugging Face remote code: Qwen/Qwen-7B modeling_qwen.QWenLMHeadModel) ---------------------------


def _qwen_rules(c: dict[str, Any]) -> list[Rule]:
    rules = [Rule(("qwen.wte.weight",), "transformer.wte.weight", "copy")]
    for i in range(_layers(c)):
        p, h = f"qwen.h.{i}.", f"transformer.h.{i}."
        rules += [
            Rule((f"{p}ln_1.weight",), f"{h}ln_1.weight", "copy"),
            Rule((f"{p}attn.c_attn.weight",), f"{h}attn.c_attn.weight", "linear"),
            Rule((f"{p}attn.c_attn.bias",), f"{h}attn.c_attn.bias", "copy"),
            Rule((f"{p}attn.c_proj.weight",), f"{h}attn.c_proj.weight", "linear"),
            Rule((f"{p}ln_2.weight",), f"{h}ln_2.weight", "copy"),
            Rule((f"{p}mlp.w1.weight",), f"{h}mlp.w1.weight", "linear"),
            Rule((f"{p}mlp.w2.weight",), f"{h}mlp.w2.weight", "linear"),
            Rule((f"{p}mlp.c_proj.weight",), f"{h}mlp.c_proj.weight", "linear"),
        ]
    rules.append(Rule(("qwen.ln_f.weight",), "transformer.ln_f.weight", "copy"))
    return rules


def _qwen_shapes(c: dict[str, Any]) -> dict[str, Shape]:
    h, v, f = c["hidden_size"], c["vocab_size"], c["intermediate_size"] // 2
    s: dict[str, Shape] = {"qwen.wte.weight": (v, h)}
    for i in range(_layers(c)):
        p = f"qwen.h.{i}."
        s |= {f"{p}ln_1.weight": (h,), f"{p}attn.c_attn.weight": (h, 3 * h), f"{p}attn.c_attn.bias": (3 * h,),
              f"{p}attn.c_proj.weight": (h, h), f"{p}ln_2.weight": (h,), f"{p}mlp.w1.weight": (h, f),
              f"{p}mlp.w2.weight": (h, f), f"{p}mlp.c_proj.weight": (f, h)}  # fmt: skip
    return s | {"qwen.ln_f.weight": (h,), "lm_head.weight": (h, v)}


def _qwen_to_hf(c: dict[str, Any], tied: bool) -> dict[str, Any]:
    heads = c["num_attention_heads"]
    return {
        "architectures": ["QWenLMHeadModel"],
        "model_type": "qwen",
        "auto_map": {
            "AutoConfig": "Qwen/Qwen-7B--configuration_qwen.QWenConfig",
            "AutoModelForCausalLM": "Qwen/Qwen-7B--modeling_qwen.QWenLMHeadModel",
        },
        "vocab_size": c["vocab_size"],
        "hidden_size": c["hidden_size"],
        "intermediate_size": c["intermediate_size"],
        "num_hidden_layers": _layers(c),
        "num_attention_heads": heads,
        "kv_channels": _get(c, "kv_channels", c["hidden_size"] // heads),
        "max_position_embeddings": c["max_position_embeddings"],
        "seq_length": _get(c, "seq_length", c["max_position_embeddings"]),
        "layer_norm_epsilon": _get(c, "layer_norm_epsilon", 1e-6),
        "rotary_pct": _get(c, "rotary_pct", 1.0),
        "rotary_emb_base": _get(c, "rotary_emb_base", 10000),
        "use_dynamic_ntk": _get(c, "use_dynamic_ntk", True),
        "use_logn_attn": _get(c, "use_logn_attn", True),
        "use_flash_attn": "auto",
        "scale_attn_weights": True,
        "no_bias": True,
        "tie_word_embeddings": False,
        "emb_dropout_prob": _get(c, "emb_dropout_prob", 0.0),
        "attn_dropout_prob": _get(c, "attn_dropout_prob", 0.0),
        "initializer_range": _get(c, "initializer_range", 0.02),
    }


def _qwen_from_hf(h: dict[str, Any]) -> dict[str, Any]:
    _refuse_unless(h, "no_bias", (True,), True, "PaddleNLP's qwen has biases only in c_attn")
    _refuse_unless(h, "tie_word_embeddings", (False,), False, "PaddleNLP's qwen has its own lm_head")
    _refuse_unless(h, "scale_attn_weights", (True,), True, "PaddleNLP's qwen always scales by 1/sqrt(head_dim)")
    heads = h["num_attention_heads"]
    return {
        "model_type": "qwen",
        "architectures": ["QWenLMHeadModel"],
        "vocab_size": h["vocab_size"],
        "hidden_size": h["hidden_size"],
        "intermediate_size": h["intermediate_size"],
        "num_hidden_layers": h["num_hidden_layers"],
        "num_attention_heads": heads,
        "kv_channels": _get(h, "kv_channels", h["hidden_size"] // heads),
        "max_position_embeddings": _get(h, "max_position_embeddings", 8192),
        "seq_length": _get(h, "seq_length", 2048),
        "layer_norm_epsilon": _get(h, "layer_norm_epsilon", 1e-6),
        "rotary_pct": _get(h, "rotary_pct", 1.0),
        "rotary_emb_base": _get(h, "rotary_emb_base", 10000),
        "use_dynamic_ntk": _get(h, "use_dynamic_ntk", True),
        "use_logn_attn": _get(h, "use_logn_attn", True),
        "no_bias": True,
        "tie_word_embeddings": False,
        "initializer_range": _get(h, "initializer_range", 0.02),
    }


# ---- gpt (PaddleNLP's GPT-3 modeling <-> Hugging Face GPT2LMHeadModel) ----------------------------------------
# PaddleNLP's GPT is GPT-2's architecture: pre-LayerNorm (eps 1e-5, fixed), learned positions, GELU with the tanh
# approximation (gelu_new), attention scaled by 1/sqrt(head_dim), the head always tied to the word embedding. It keeps
# q, k and v apart where GPT-2's Conv1D c_attn holds them side by side ([in, 3*out]); Conv1D stores [in, out] as
# Paddle's Linear does, so nothing is transposed.


def _gpt_rules(c: dict[str, Any]) -> list[Rule]:
    rules = [
        Rule(("gpt.embeddings.word_embeddings.weight",), "transformer.wte.weight", "copy"),
        Rule(("gpt.embeddings.position_embeddings.weight",), "transformer.wpe.weight", "copy"),
    ]
    for i in range(_layers(c)):
        p, h = f"gpt.decoder.layers.{i}.", f"transformer.h.{i}."
        for t in ("weight", "bias"):
            rules += [
                Rule((f"{p}norm1.{t}",), f"{h}ln_1.{t}", "copy"),
                Rule(tuple(f"{p}self_attn.{x}_proj.{t}" for x in "qkv"), f"{h}attn.c_attn.{t}", "concat"),
                Rule((f"{p}self_attn.out_proj.{t}",), f"{h}attn.c_proj.{t}", "copy"),
                Rule((f"{p}norm2.{t}",), f"{h}ln_2.{t}", "copy"),
                Rule((f"{p}linear1.{t}",), f"{h}mlp.c_fc.{t}", "copy"),
                Rule((f"{p}linear2.{t}",), f"{h}mlp.c_proj.{t}", "copy"),
            ]
    rules += [Rule((f"gpt.decoder.norm.{t}",), f"transformer.ln_f.{t}", "copy") for t in ("weight", "bias")]
    return rules


def _gpt_shapes(c: dict[str, Any]) -> dict[str, Shape]:
    h, v, f, pos = c["hidden_size"], c["vocab_size"], c["intermediate_size"], c["max_position_embeddings"]
    s: dict[str, Shape] = {"gpt.embeddings.word_embeddings.weight": (v, h),
                           "gpt.embeddings.position_embeddings.weight": (pos, h)}  # fmt: skip
    for i in range(_layers(c)):
        p = f"gpt.decoder.layers.{i}."
        for x in ("q", "k", "v", "out"):
            s |= {f"{p}self_attn.{x}_proj.weight": (h, h), f"{p}self_attn.{x}_proj.bias": (h,)}
        s |= {f"{p}linear1.weight": (h, f), f"{p}linear1.bias": (f,), f"{p}linear2.weight": (f, h),
              f"{p}linear2.bias": (h,)}  # fmt: skip
        s |= {f"{p}{n}.{t}": (h,) for n in ("norm1", "norm2") for t in ("weight", "bias")}
    return s | {"gpt.decoder.norm.weight": (h,), "gpt.decoder.norm.bias": (h,)}


def _gpt_to_hf(c: dict[str, Any], tied: bool) -> dict[str, Any]:
    _refuse_unless(c, "normalize_before", (True,), True, "GPT-2 is pre-LayerNorm")
    _refuse_unless(c, "hidden_activation", ("gelu",), "gelu", "PaddleNLP applies it as gelu_new, GPT-2's default")
    _refuse_unless(c, "scale_qk_coeff", (1.0,), 1.0, "GPT-2 scales attention by 1/sqrt(head_dim) only")
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c["vocab_size"],
        "n_positions": c["max_position_embeddings"],
        "n_embd": c["hidden_size"],
        "n_layer": _layers(c),
        "n_head": c["num_attention_heads"],
        "n_inner": c["intermediate_size"],
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": _get(c, "hidden_dropout_prob", 0.1),
        "embd_pdrop": _get(c, "hidden_dropout_prob", 0.1),
        "attn_pdrop": _get(c, "attention_probs_dropout_prob", 0.1),
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "initializer_range": _get(c, "initializer_range", 0.02),
        **_ids(c),
    }


def _gpt_from_hf(h: dict[str, Any]) -> dict[str, Any]:
    _refuse_unless(h, "activation_function", ("gelu_new", "gelu_pytorch_tanh"), "gelu_new",
                   "PaddleNLP's GPT applies GELU's tanh approximation")  # fmt: skip
    _refuse_unless(h, "layer_norm_epsilon", (1e-5,), 1e-5, "PaddleNLP's GPT fixes LayerNorm's epsilon at 1e-5")
    _refuse_unless(h, "scale_attn_weights", (True,), True, "PaddleNLP's GPT scales attention by 1/sqrt(head_dim)")
    _refuse_unless(h, "scale_attn_by_inverse_layer_idx", (False,), False, "PaddleNLP's GPT has no per-layer scale")
    _refuse_unless(h, "tie_word_embeddings", (True,), True, "PaddleNLP's GPT always ties its head to wte")
    _refuse_unless(h, "add_cross_attention", (False,), False, "a decoder-only model has no cross-attention")
    n_embd = h.get("n_embd", h.get("hidden_size"))
    return {
        "model_type": "gpt",
        "architectures": ["GPTForCausalLM"],
        "vocab_size": h["vocab_size"],
        "hidden_size": n_embd,
        "num_hidden_layers": h.get("n_layer", h.get("num_hidden_layers")),
        "num_attention_heads": h.get("n_head", h.get("num_attention_heads")),
        "intermediate_size": _get(h, "n_inner", 4 * n_embd),
        "max_position_embeddings": h.get("n_positions", h.get("max_position_embeddings")),
        "hidden_activation": "gelu",
        "normalize_before": True,
        "hidden_dropout_prob": _get(h, "resid_pdrop", 0.1),
        "attention_probs_dropout_prob": _get(h, "attn_pdrop", 0.1),
        "initializer_range": _get(h, "initializer_range", 0.02),
        **_ids(h),
    }


# ---- opt (Hugging Face OPTForCausalLM) -------------------------------------------------------------------------
# PaddleNLP's OPTForCausalLM keeps its own head (lm_head.decoder_weight), untied even when the Hugging Face model
# ties it: imported, it starts as a copy of the embedding; exported, it is written (and the config says untied)
# unless it still equals the embedding. Positions carry OPT's offset of 2 rows on both sides.


def _opt_rules(c: dict[str, Any]) -> list[Rule]:
    rules = [
        Rule(("opt.embeddings.word_embeddings.weight",), "model.decoder.embed_tokens.weight", "copy"),
        Rule(("opt.embeddings.position_embeddings.weight",), "model.decoder.embed_positions.weight", "copy"),
    ]
    for i in range(_layers(c)):
        p, h = f"opt.decoder.layers.{i}.", f"model.decoder.layers.{i}."
        for x in ("q", "k", "v", "out"):
            rules += [Rule((f"{p}self_attn.{x}_proj.weight",), f"{h}self_attn.{x}_proj.weight", "linear"),
                      Rule((f"{p}self_attn.{x}_proj.bias",), f"{h}self_attn.{x}_proj.bias", "copy")]  # fmt: skip
        rules += [
            Rule((f"{p}linear1.weight",), f"{h}fc1.weight", "linear"),
            Rule((f"{p}linear1.bias",), f"{h}fc1.bias", "copy"),
            Rule((f"{p}linear2.weight",), f"{h}fc2.weight", "linear"),
            Rule((f"{p}linear2.bias",), f"{h}fc2.bias", "copy"),
        ]
        for t in ("weight", "bias"):
            rules += [Rule((f"{p}norm1.{t}",), f"{h}self_attn_layer_norm.{t}", "copy"),
                      Rule((f"{p}norm2.{t}",), f"{h}final_layer_norm.{t}", "copy")]  # fmt: skip
    rules += [Rule((f"opt.decoder.final_layer_norm.{t}",), f"model.decoder.final_layer_norm.{t}", "copy")
              for t in ("weight", "bias")]  # fmt: skip
    return rules


def _opt_shapes(c: dict[str, Any]) -> dict[str, Shape]:
    h, v, f, pos = c["hidden_size"], c["vocab_size"], c["intermediate_size"], c["max_position_embeddings"]
    s: dict[str, Shape] = {"opt.embeddings.word_embeddings.weight": (v, h),
                           "opt.embeddings.position_embeddings.weight": (pos + 2, h)}  # fmt: skip
    for i in range(_layers(c)):
        p = f"opt.decoder.layers.{i}."
        for x in ("q", "k", "v", "out"):
            s |= {f"{p}self_attn.{x}_proj.weight": (h, h), f"{p}self_attn.{x}_proj.bias": (h,)}
        s |= {f"{p}linear1.weight": (h, f), f"{p}linear1.bias": (f,), f"{p}linear2.weight": (f, h),
              f"{p}linear2.bias": (h,)}  # fmt: skip
        s |= {f"{p}{n}.{t}": (h,) for n in ("norm1", "norm2") for t in ("weight", "bias")}
    s |= {"opt.decoder.final_layer_norm.weight": (h,), "opt.decoder.final_layer_norm.bias": (h,)}
    return s | {"lm_head.decoder_weight": (v, h)}


def _opt_to_hf(c: dict[str, Any], tied: bool) -> dict[str, Any]:
    _refuse_unless(c, "normalize_before", (True,), True, "only pre-LayerNorm OPT is converted")
    _refuse_unless(c, "hidden_act", ("relu",), "relu", "OPT's activation")
    _refuse_unless(c, "word_embed_proj_dim", (c["hidden_size"], None), None, "project_in/out are not converted")
    return {
        "architectures": ["OPTForCausalLM"],
        "model_type": "opt",
        "vocab_size": c["vocab_size"],
        "hidden_size": c["hidden_size"],
        "num_hidden_layers": _layers(c),
        "ffn_dim": c["intermediate_size"],
        "num_attention_heads": c["num_attention_heads"],
        "max_position_embeddings": c["max_position_embeddings"],
        "word_embed_proj_dim": c["hidden_size"],
        "do_layer_norm_before": True,
        "_remove_final_layer_norm": False,
        "activation_function": "relu",
        "dropout": _get(c, "hidden_dropout_prob", 0.1),
        "attention_dropout": _get(c, "attention_probs_dropout_prob", 0.0),
        "layerdrop": 0.0,
        "init_std": _get(c, "initializer_range", 0.02),
        "enable_bias": True,
        "layer_norm_elementwise_affine": True,
        "tie_word_embeddings": tied,
        **_ids(c),
    }


def _opt_from_hf(h: dict[str, Any]) -> dict[str, Any]:
    _refuse_unless(h, "do_layer_norm_before", (True,), True, "post-LayerNorm OPT (opt-350m) is not converted")
    _refuse_unless(h, "_remove_final_layer_norm", (False,), False, "PaddleNLP's OPT keeps the final LayerNorm")
    _refuse_unless(h, "word_embed_proj_dim", (h["hidden_size"], None), None,
                   "project_in/out (opt-350m) are not converted")  # fmt: skip
    _refuse_unless(h, "activation_function", ("relu",), "relu", "PaddleNLP's OPT applies F.relu")
    _refuse_unless(h, "enable_bias", (True,), True, "PaddleNLP's OPT linears have biases")
    _refuse_unless(h, "layer_norm_elementwise_affine", (True,), True, "PaddleNLP's LayerNorms are affine")
    return {
        "model_type": "opt",
        "architectures": ["OPTForCausalLM"],
        "vocab_size": h["vocab_size"],
        "hidden_size": h["hidden_size"],
        "num_hidden_layers": h["num_hidden_layers"],
        "intermediate_size": h["ffn_dim"],
        "num_attention_heads": h["num_attention_heads"],
        "max_position_embeddings": _get(h, "max_position_embeddings", 2048),
        "hidden_act": "relu",
        "normalize_before": True,
        "word_embed_proj_dim": h["hidden_size"],
        "hidden_dropout_prob": _get(h, "dropout", 0.1),
        "attention_probs_dropout_prob": _get(h, "attention_dropout", 0.0),
        "initializer_range": _get(h, "init_std", 0.02),
        "enable_bias": True,
        **_ids(h),
    }


# ---- bloom (Hugging Face BloomForCausalLM) ---------------------------------------------------------------------
# Both sides keep query_key_value fused with the same layout ([heads, 3, head_dim] on the output axis).


def _bloom_rules(c: dict[str, Any]) -> list[Rule]:
    rules = [Rule(("bloom.word_embeddings.weight",), "transformer.word_embeddings.weight", "copy")]
    rules += [Rule((f"bloom.word_embeddings_layernorm.{t}",), f"transformer.word_embeddings_layernorm.{t}", "copy")
              for t in ("weight", "bias")]  # fmt: skip
    for i in range(_layers(c)):
        p, h = f"bloom.h.{i}.", f"transformer.h.{i}."
        for name in ("self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h",
                     "mlp.dense_4h_to_h"):  # fmt: skip
            rules += [Rule((f"{p}{name}.weight",), f"{h}{name}.weight", "linear"),
                      Rule((f"{p}{name}.bias",), f"{h}{name}.bias", "copy")]  # fmt: skip
        for name in ("input_layernorm", "post_attention_layernorm"):
            rules += [Rule((f"{p}{name}.{t}",), f"{h}{name}.{t}", "copy") for t in ("weight", "bias")]
    rules += [Rule((f"bloom.ln_f.{t}",), f"transformer.ln_f.{t}", "copy") for t in ("weight", "bias")]
    return rules


def _bloom_shapes(c: dict[str, Any]) -> dict[str, Shape]:
    h, v = c["hidden_size"], c["vocab_size"]
    s: dict[str, Shape] = {"bloom.word_embeddings.weight": (v, h), "bloom.word_embeddings_layernorm.weight": (h,),
                           "bloom.word_embeddings_layernorm.bias": (h,)}  # fmt: skip
    for i in range(_layers(c)):
        p = f"bloom.h.{i}."
        s |= {f"{p}self_attention.query_key_value.weight": (h, 3 * h), f"{p}self_attention.query_key_value.bias":
              (3 * h,), f"{p}self_attention.dense.weight": (h, h), f"{p}self_attention.dense.bias": (h,),
              f"{p}mlp.dense_h_to_4h.weight": (h, 4 * h), f"{p}mlp.dense_h_to_4h.bias": (4 * h,),
              f"{p}mlp.dense_4h_to_h.weight": (4 * h, h), f"{p}mlp.dense_4h_to_h.bias": (h,)}  # fmt: skip
        s |= {f"{p}{n}.{t}": (h,) for n in ("input_layernorm", "post_attention_layernorm") for t in ("weight", "bias")}
    return s | {"bloom.ln_f.weight": (h,), "bloom.ln_f.bias": (h,)}


def _bloom_to_hf(c: dict[str, Any], tied: bool) -> dict[str, Any]:
    return {
        "architectures": ["BloomForCausalLM"],
        "model_type": "bloom",
        "vocab_size": c["vocab_size"],
        "hidden_size": c["hidden_size"],
        "n_layer": _layers(c),
        "n_head": c.get("n_head", c.get("num_attention_heads")),
        "layer_norm_epsilon": _get(c, "layer_norm_epsilon", 1e-5),
        "apply_residual_connection_post_layernorm": bool(c.get("apply_residual_connection_post_layernorm")),
        "hidden_dropout": _get(c, "hidden_dropout", 0.0),
        "attention_dropout": _get(c, "attention_dropout", 0.0),
        "pretraining_tp": 1,
        "slow_but_exact": False,
        "tie_word_embeddings": True,
        "initializer_range": _get(c, "initializer_range", 0.02),
        **_ids(c),
    }


def _bloom_from_hf(h: dict[str, Any]) -> dict[str, Any]:
    _refuse_unless(h, "tie_word_embeddings", (True,), True, "PaddleNLP's bloom always ties its head")
    return {
        "model_type": "bloom",
        "architectures": ["BloomForCausalLM"],
        "vocab_size": h["vocab_size"],
        "hidden_size": h.get("hidden_size", h.get("n_embed")),
        "n_layer": h.get("n_layer", h.get("num_hidden_layers")),
        "n_head": h.get("n_head", h.get("num_attention_heads")),
        "layer_norm_epsilon": _get(h, "layer_norm_epsilon", 1e-5),
        "apply_residual_connection_post_layernorm": bool(h.get("apply_residual_connection_post_layernorm")),
        "hidden_dropout": _get(h, "hidden_dropout", 0.0),
        "attention_dropout": _get(h, "attention_dropout", 0.0),
        "initializer_range": _get(h, "initializer_range", 0.02),
        **_ids(h),
    }


# ---- chatglm2 (Hugging Face remote code: THUDM/chatglm2-6b modeling_chatglm.ChatGLMForConditionalGeneration) -----
# ChatGLM2 and ChatGLM3 share this layout (model_type "chatglm"); ChatGLM v1 has the same model_type but another
# layout (position_encoding_2d, inner_hidden_size): told apart by their keys.


def _glm2_rules(c: dict[str, Any]) -> list[Rule]:
    rules = [
        Rule(("chatglm_v2.embedding.word_embeddings.weight",), "transformer.embedding.word_embeddings.weight", "copy"),
        Rule(("chatglm_v2.rotary_pos_emb.inv_freq",), "transformer.rotary_pos_emb.inv_freq", "copy"),
    ]
    for i in range(_layers(c)):
        p, h = f"chatglm_v2.encoder.layers.{i}.", f"transformer.encoder.layers.{i}."
        rules += [
            Rule((f"{p}input_layernorm.weight",), f"{h}input_layernorm.weight", "copy"),
            Rule((f"{p}self_attention.query_key_value.weight",), f"{h}self_attention.query_key_value.weight", "linear"),
            Rule((f"{p}self_attention.query_key_value.bias",), f"{h}self_attention.query_key_value.bias", "copy"),
            Rule((f"{p}self_attention.dense.weight",), f"{h}self_attention.dense.weight", "linear"),
            Rule((f"{p}post_attention_layernorm.weight",), f"{h}post_attention_layernorm.weight", "copy"),
            Rule((f"{p}mlp.dense_h_to_4h.weight",), f"{h}mlp.dense_h_to_4h.weight", "linear"),
            Rule((f"{p}mlp.dense_4h_to_h.weight",), f"{h}mlp.dense_4h_to_h.weight", "linear"),
        ]
    rules.append(Rule(("chatglm_v2.encoder.final_layernorm.weight",), "transformer.encoder.final_layernorm.weight",
                      "copy"))  # fmt: skip
    return rules


def _glm2_head(c: dict[str, Any]) -> Head:
    return Head("chatglm_v2.output_layer.weight", "transformer.output_layer.weight", "linear",
                "chatglm_v2.embedding.word_embeddings.weight")  # fmt: skip


def _glm2_shapes(c: dict[str, Any]) -> dict[str, Shape]:
    h, v, f = c["hidden_size"], c["vocab_size"], c["ffn_hidden_size"]
    nh = c["num_attention_heads"]
    hd = _get(c, "kv_channels", h // nh)
    qkv = nh * hd + 2 * c["multi_query_group_num"] * hd
    s: dict[str, Shape] = {"chatglm_v2.embedding.word_embeddings.weight": (v, h),
                           "chatglm_v2.rotary_pos_emb.inv_freq": (hd // 4,)}  # fmt: skip
    for i in range(_layers(c)):
        p = f"chatglm_v2.encoder.layers.{i}."
        s |= {f"{p}input_layernorm.weight": (h,), f"{p}self_attention.query_key_value.weight": (h, qkv),
              f"{p}self_attention.query_key_value.bias": (qkv,), f"{p}self_attention.dense.weight": (nh * hd, h),
              f"{p}post_attention_layernorm.weight": (h,), f"{p}mlp.dense_h_to_4h.weight": (h, 2 * f),
              f"{p}mlp.dense_4h_to_h.weight": (f, h)}  # fmt: skip
    return s | {"chatglm_v2.encoder.final_layernorm.weight": (h,), "chatglm_v2.output_layer.weight": (h, v)}


def _glm2_to_hf(c: dict[str, Any], tied: bool) -> dict[str, Any]:
    _refuse_unless(c, "add_bias_linear", (False,), False, "ChatGLM2's dense layers have no bias")
    _refuse_unless(c, "add_qkv_bias", (True,), True, "ChatGLM2's query_key_value has a bias")
    _refuse_unless(c, "apply_residual_connection_post_layernorm", (False,), False, "ChatGLM2's residual")
    nh, groups = c["num_attention_heads"], c["multi_query_group_num"]
    model = "THUDM/chatglm2-6b--modeling_chatglm.ChatGLMForConditionalGeneration"
    return {
        "architectures": ["ChatGLMModel"],
        "model_type": "chatglm",
        "auto_map": {
            "AutoConfig": "THUDM/chatglm2-6b--configuration_chatglm.ChatGLMConfig",
            "AutoModel": model,
            "AutoModelForCausalLM": model,
        },  # fmt: skip
        "num_layers": _layers(c),
        "padded_vocab_size": c["vocab_size"],
        "hidden_size": c["hidden_size"],
        "ffn_hidden_size": c["ffn_hidden_size"],
        "kv_channels": _get(c, "kv_channels", c["hidden_size"] // nh),
        "num_attention_heads": nh,
        "seq_length": c["max_sequence_length"],
        "hidden_dropout": _get(c, "hidden_dropout", 0.0),
        "attention_dropout": _get(c, "attention_dropout", 0.0),
        "layernorm_epsilon": _get(c, "layernorm_epsilon", 1e-5),
        "rmsnorm": True,
        "apply_residual_connection_post_layernorm": False,
        "post_layer_norm": True,
        "add_bias_linear": False,
        "add_qkv_bias": True,
        "bias_dropout_fusion": True,
        "multi_query_attention": groups != nh,
        "multi_query_group_num": groups,
        "apply_query_key_layer_scaling": _get(c, "apply_query_key_layer_scaling", True),
        "attention_softmax_in_fp32": True,
        "fp32_residual_connection": False,
        "quantization_bit": 0,
        "pre_seq_len": None,
        "prefix_projection": False,
        "original_rope": True,
        "tie_word_embeddings": False,
        **_ids(c),
    }


def _glm2_from_hf(h: dict[str, Any]) -> dict[str, Any]:
    if "position_encoding_2d" in h or "inner_hidden_size" in h:
        raise ConversionRefused("a ChatGLM (v1) config (position_encoding_2d, inner_hidden_size): not chatglm2")
    _refuse_unless(h, "rmsnorm", (True,), True, "PaddleNLP's chatglm2 normalises with RMSNorm")
    _refuse_unless(h, "post_layer_norm", (True,), True, "PaddleNLP's chatglm2 has a final layer norm")
    _refuse_unless(h, "apply_residual_connection_post_layernorm", (False,), False, "PaddleNLP's chatglm2 residual")
    _refuse_unless(h, "add_bias_linear", (False,), False, "the dense layers are converted without bias")
    _refuse_unless(h, "add_qkv_bias", (True,), True, "query_key_value is converted with its bias")
    _refuse_unless(h, "original_rope", (True,), True, "PaddleNLP's chatglm2 rotary is the original one")
    _refuse_unless(h, "rope_ratio", (1, 1.0, None), None, "PaddleNLP's chatglm2 fixes the rotary base at 10000")
    _refuse_unless(h, "pre_seq_len", (None,), None, "a P-tuning prefix is not part of the model")
    _refuse_unless(h, "quantization_bit", (0, None), 0, "quantized weights are not converted")
    nh = h["num_attention_heads"]
    groups = h["multi_query_group_num"] if h.get("multi_query_attention") else nh
    return {
        "model_type": "chatglm_v2",
        "architectures": ["ChatGLMv2ForCausalLM"],
        "vocab_size": h["padded_vocab_size"],
        "hidden_size": h["hidden_size"],
        "ffn_hidden_size": h["ffn_hidden_size"],
        "num_hidden_layers": h["num_layers"],
        "num_attention_heads": nh,
        "kv_channels": _get(h, "kv_channels", h["hidden_size"] // nh),
        "multi_query_group_num": groups,
        "max_sequence_length": _get(h, "seq_length", 2048),
        "layernorm_epsilon": _get(h, "layernorm_epsilon", 1e-5),
        "rmsnorm": True,
        "add_qkv_bias": True,
        "add_bias_linear": False,
        "hidden_dropout": _get(h, "hidden_dropout", 0.0),
        "attention_dropout": _get(h, "attention_dropout", 0.0),
        "apply_query_key_layer_scaling": _get(h, "apply_query_key_layer_scaling", True),
        **_ids(h),
    }


def _tied(embedding: str, head_hf: str, head_paddle: str | None = None) -> Callable[[dict[str, Any]], Head]:
    return lambda c: Head(head_paddle, head_hf, "copy", embedding)


CONVERSIONS: dict[str, Conversion] = {
    "llama": Conversion(
        "llama", "llama", ("llama",), "model.", _llama_rules, _llama_head, _llama_shapes, _llama_to_hf,
        _llama_from_hf, hf_ignored=("rotary_emb.inv_freq",),
        notes="q/k/v/o and the MLP transposed; RoPE in the rotate-half convention on both sides",
    ),
    "qwen": Conversion(
        "qwen", "qwen", ("qwen",), "transformer.", _qwen_rules,
        lambda c: Head("lm_head.weight", "lm_head.weight", "linear", "qwen.wte.weight"), _qwen_shapes, _qwen_to_hf,
        _qwen_from_hf, remote_code="Qwen/Qwen-7B",
        notes="c_attn (fused q|k|v, with bias) and the MLP transposed; w1 * silu(w2) on both sides",
    ),
    "gpt": Conversion(
        "gpt", "gpt", ("gpt2",), "transformer.", _gpt_rules,
        _tied("gpt.embeddings.word_embeddings.weight", "lm_head.weight"), _gpt_shapes, _gpt_to_hf, _gpt_from_hf,
        hf_ignored=("attn.bias", "attn.masked_bias"),
        notes="q, k, v concatenated into c_attn; Conv1D weights kept [in, out]; head tied to wte",
    ),
    "opt": Conversion(
        "opt", "opt", ("opt",), "model.", _opt_rules,
        _tied("opt.embeddings.word_embeddings.weight", "lm_head.weight", "lm_head.decoder_weight"), _opt_shapes,
        _opt_to_hf, _opt_from_hf,
        notes="projections transposed; per-layer norm1/norm2 are self_attn_layer_norm/final_layer_norm",
    ),
    "bloom": Conversion(
        "bloom", "bloom", ("bloom",), "transformer.", _bloom_rules,
        _tied("bloom.word_embeddings.weight", "lm_head.weight"), _bloom_shapes, _bloom_to_hf, _bloom_from_hf,
        notes="every linear transposed, query_key_value kept fused; ALiBi computed on both sides",
    ),
    "chatglm2": Conversion(
        "chatglm2", "chatglm_v2", ("chatglm",), "transformer.", _glm2_rules, _glm2_head, _glm2_shapes, _glm2_to_hf,
        _glm2_from_hf, remote_code="THUDM/chatglm2-6b",
        notes="query_key_value (q|k|v with multi-query groups) and the MLP transposed; rotary on half of each head",
    ),
    "qwen2": Conversion(
        "qwen2", "qwen2", ("qwen2",), "model.", _rope_llama_rules("qwen2", True), _rope_llama_head("qwen2"),
        _rope_llama_shapes("qwen2", True), _qwen2_to_hf, _qwen2_from_hf, hf_ignored=("rotary_emb.inv_freq",),
        notes="llama's layout under qwen2.: q/k/v (with bias), o and the MLP transposed; a tied head where so",
    ),
    "mistral": Conversion(
        "mistral", "mistral", ("mistral",), "model.", _rope_llama_rules("mistral", False), _rope_llama_head("mistral"),
        _rope_llama_shapes("mistral", False), _mistral_to_hf, _mistral_from_hf, hf_ignored=("rotary_emb.inv_freq",),
        notes="llama's layout under mistral.; PaddleNLP applies no sliding window (exported as sliding_window null)",
    ),
}  # fmt: skip

# Families the registry knows that no entry converts, and why (a Hugging Face directory of one is refused with it)
NOT_CONVERTED: dict[str, str] = {
    "baichuan": "Baichuan's Hugging Face layout is remote code (W_pack, and Baichuan2's normalised head) that llmpt "
    "does not convert; use PaddleNLP's copy of the weights (a save_pretrained() directory)",
    "chatglm": "ChatGLM (v1) cannot be pretrained by llmpt",
    "glm": "GLM cannot be pretrained by llmpt",
}


def conversion(family: str) -> Conversion:
    return CONVERSIONS[family]


def family_of_paddle_type(model_type: str) -> str | None:
    return next((c.family for c in CONVERSIONS.values() if c.paddle_model_type == model_type), None)


def paddle_names(conv: Conversion, cfg: dict[str, Any]) -> list[str]:
    """Every PaddleNLP tensor a checkpoint of this config holds, in the model's order."""
    return list(conv.paddle_shapes(cfg))


def hf_layout(conv: Conversion, cfg: dict[str, Any], tied: bool) -> dict[str, Shape]:
    """The Hugging Face tensors (name -> shape) of the model a PaddleNLP config describes; `tied`: the head is the
    embedding (not stored)."""
    shapes = conv.paddle_shapes(cfg)
    out = {r.hf: r.hf_shape(shapes) for r in conv.rules(cfg)}
    head = conv.head(cfg)
    if head is not None and not tied:
        src = head.paddle or head.embedding
        out[head.hf] = tuple(reversed(shapes[src])) if head.kind == "linear" else shapes[src]
    return out


def tp_parts(family: str, name: str, cfg: dict[str, Any]) -> tuple[int, ...] | None:
    """How tensor parallel splits a fused tensor: the relative sizes of the parts each rank holds a slice of, side
    by side on the last axis (PaddleNLP's `_get_tensor_parallel_mappings`: is_naive_2fuse / is_naive_3fuse, and
    chatglm2's own q|k|v and gate|up splits). None: a plain split along one axis (or none)."""
    if family == "qwen" and ".attn.c_attn." in name:
        return (1, 1, 1)
    if name.endswith("mlp.gate_up_fused_proj.weight"):
        return (1, 1)
    if family == "chatglm2" and ".query_key_value." in name:
        return (cfg["num_attention_heads"], cfg["multi_query_group_num"], cfg["multi_query_group_num"])
    if family == "chatglm2" and name.endswith("mlp.dense_h_to_4h.weight"):
        return (1, 1)
    return None


@dataclass(frozen=True)
class Fused:
    """A tensor PaddleNLP trains fused when fuse_attention_qkv / fuse_attention_ffn is on (GPU presets), and the
    plain tensors it holds: `qkv` in PaddleNLP's group-interleaved order ([q.. of group 1, k1, v1, q.. of group 2,
    ...], conversion_utils.split_param_func), or `halves` side by side."""

    kind: str  # qkv | halves
    parts: tuple[str, str] | tuple[str, str, str]
    heads: int = 0
    kv_heads: int = 0


def fused_tensors(family: str, cfg: dict[str, Any]) -> dict[str, Fused]:
    """Fused suffix (after the layer prefix) -> how it splits, for this family and config."""
    nh = cfg.get("num_attention_heads", 0)
    nkv = _get(cfg, "num_key_value_heads", nh)
    qkv = tuple(f"self_attn.{x}_proj" for x in "qkv")
    if family == "llama":
        return {
            "self_attn.qkv_proj.weight": Fused("qkv", tuple(f"{n}.weight" for n in qkv), nh, nkv),  # type: ignore[arg-type]
            "mlp.gate_up_fused_proj.weight": Fused("halves", ("mlp.gate_proj.weight", "mlp.up_proj.weight")),
        }
    if family == "qwen2":  # llama's fused layouts, the q|k|v biases fused as the weights
        return {
            **{f"self_attn.qkv_proj.{t}": Fused("qkv", tuple(f"{n}.{t}" for n in qkv), nh, nkv)  # type: ignore[arg-type]
               for t in ("weight", "bias")},
            "mlp.gate_up_fused_proj.weight": Fused("halves", ("mlp.gate_proj.weight", "mlp.up_proj.weight")),
        }  # fmt: skip
    if family == "qwen":  # swiglu(x) = silu(first half) * second half; Qwen's MLP is w1(x) * silu(w2(x))
        return {"mlp.gate_up_fused_proj.weight": Fused("halves", ("mlp.w2.weight", "mlp.w1.weight"))}
    if family == "gpt":
        return {
            f"self_attn.qkv_proj.{t}": Fused("qkv", tuple(f"{n}.{t}" for n in qkv), nh, nh)  # type: ignore[arg-type]
            for t in ("weight", "bias")
        }
    return {}


def unfuse(fused: Fused, array: Any) -> list[Any]:
    """The plain tensors of a fused one (the inverse of PaddleNLP's fuse_param_func)."""
    import numpy as np

    if fused.kind == "halves":
        return [np.ascontiguousarray(a) for a in np.split(array, 2, axis=-1)]
    group = fused.heads // fused.kv_heads
    heads = np.split(array, fused.heads + 2 * fused.kv_heads, axis=-1)
    q, k, v = [], [], []
    for i in range(fused.kv_heads):
        block = heads[i * (group + 2) : (i + 1) * (group + 2)]
        q += block[:group]
        k.append(block[group])
        v.append(block[group + 1])
    return [np.concatenate(x, axis=-1) for x in (q, k, v)]
