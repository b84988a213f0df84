"""The Hugging Face models' forward passes, written from their equations in numpy (float64), independent of PaddleNLP
and of llmpt's conversion: logits from a Hugging Face config.json and its tensors by Hugging Face name.

One function per architecture, each following the transformers (or the model's own remote) modeling code:
  llama     LlamaForCausalLM: RMSNorm, RoPE (rotate-half, rope_theta, Llama-3.1's llama3 scaling), grouped-query
            attention, SwiGLU MLP; also Qwen2ForCausalLM (q/k/v with bias) and MistralForCausalLM
  gpt2      GPT2LMHeadModel: pre-LayerNorm, learned positions, Conv1D ([in, out]) c_attn = q|k|v, gelu_new, tied head
  opt       OPTForCausalLM: learned positions offset by 2, q scaled before q.k, ReLU MLP, final LayerNorm
  bloom     BloomForCausalLM: embedding LayerNorm, ALiBi slopes, fused query_key_value as [heads, 3, head_dim],
            tanh-GELU MLP, tied head
  qwen      Qwen/Qwen-7B QWenLMHeadModel: RMSNorm, rotary on rotary_pct of each head, c_attn = q|k|v with bias,
            MLP w1(x) * silu(w2(x))
  chatglm   THUDM/chatglm2-6b ChatGLMForConditionalGeneration: RMSNorm, rotary on the first half of each head with
            interleaved pairs, multi-query groups, SwiGLU on dense_h_to_4h's halves
Inputs are full sequences without padding (positions 0..s-1, a causal mask).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

F = np.float64


def _w(t: dict[str, Any], name: str) -> np.ndarray:
    return np.asarray(t[name], dtype=F)


def linear(x, t, name, bias=True):
    """torch.nn.Linear: weight [out, in]."""
    y = x @ _w(t, f"{name}.weight").T
    return y + _w(t, f"{name}.bias") if bias else y


def conv1d(x, t, name):
    """transformers' Conv1D: weight [in, out]."""
    return x @ _w(t, f"{name}.weight") + _w(t, f"{name}.bias")


def layer_norm(x, t, name, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * _w(t, f"{name}.weight") + _w(t, f"{name}.bias")


def rms_norm(x, t, name, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * _w(t, f"{name}.weight")


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def attention(q, k, v, scale, bias=None):
    """q [b, s, nh, d], k/v [b, s, nkv, d] (query head i reads key/value head i // (nh / nkv)); a causal softmax of
    q.k * scale (+ bias [nh, s, s]); the context as [b, s, nh * d]."""
    b, s, nh, d = q.shape
    rep = nh // k.shape[2]
    k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if bias is not None:
        scores = scores + bias[None]
    scores = np.where(np.tril(np.ones((s, s), dtype=bool)), scores, -np.inf)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    probs = scores / scores.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, s, nh * v.shape[-1])


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def llama3_inv_freq(inv_freq, scaling):
    """Llama-3.1's rope_type llama3: wavelengths longer than original/low_freq_factor slowed by `factor`, shorter
    than original/high_freq_factor kept, and a linear blend in between (transformers' modeling_rope_utils)."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    slowed = np.where(wavelen > original / low, inv_freq / factor, inv_freq)
    blend = (original / wavelen - low) / (high - low)
    medium = (wavelen >= original / high) & (wavelen <= original / low)
    return np.where(medium, (1 - blend) * inv_freq / factor + blend * inv_freq, slowed)


def rope(x, base, dim, scaling=None):
    """Rotate-half RoPE on the first `dim` channels of each head (x [b, s, h, d]); `scaling`: a llama3 rope_scaling."""
    s = x.shape[1]
    inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=F) / dim))
    if scaling is not None:
        inv_freq = llama3_inv_freq(inv_freq, scaling)
    freqs = np.outer(np.arange(s, dtype=F), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)[None, :, None, :]
    rot, rest = x[..., :dim], x[..., dim:]
    return np.concatenate([rot * np.cos(emb) + rotate_half(rot) * np.sin(emb), rest], axis=-1)


def llama(cfg, t, ids):
    h_size, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv, d, eps = cfg.get("num_key_value_heads") or nh, h_size // nh, cfg["rms_norm_eps"]
    theta, scaling = cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling")
    assert scaling is None or scaling.get("rope_type", scaling.get("type")) == "llama3", scaling
    b, s = ids.shape
    h = _w(t, "model.embed_tokens.weight")[ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, t, p + "input_layernorm", eps)
        bias = p + "self_attn.q_proj.bias" in t  # Qwen2ForCausalLM: q, k and v with bias
        q = linear(x, t, p + "self_attn.q_proj", bias).reshape(b, s, nh, d)
        k = linear(x, t, p + "self_attn.k_proj", bias).reshape(b, s, nkv, d)
        v = linear(x, t, p + "self_attn.v_proj", bias).reshape(b, s, nkv, d)
        ctx = attention(rope(q, theta, d, scaling), rope(k, theta, d, scaling), v, 1 / math.sqrt(d))
        h = h + linear(ctx, t, p + "self_attn.o_proj", False)
        x = rms_norm(h, t, p + "post_attention_layernorm", eps)
        ff = silu(linear(x, t, p + "mlp.gate_proj", False)) * linear(x, t, p + "mlp.up_proj", False)
        h = h + linear(ff, t, p + "mlp.down_proj", False)
    h = rms_norm(h, t, "model.norm", eps)
    head = "lm_head.weight" if "lm_head.weight" in t else "model.embed_tokens.weight"
    return h @ _w(t, head).T


def gpt2(cfg, t, ids):
    h_size, nh, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    d = h_size // nh
    b, s = ids.shape
    h = _w(t, "transformer.wte.weight")[ids] + _w(t, "transformer.wpe.weight")[np.arange(s)]
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        x = layer_norm(h, t, p + "ln_1", eps)
        q, k, v = (a.reshape(b, s, nh, d) for a in np.split(conv1d(x, t, p + "attn.c_attn"), 3, axis=-1))
        h = h + conv1d(attention(q, k, v, 1 / math.sqrt(d)), t, p + "attn.c_proj")
        x = layer_norm(h, t, p + "ln_2", eps)
        h = h + conv1d(gelu_tanh(conv1d(x, t, p + "mlp.c_fc")), t, p + "mlp.c_proj")
    h = layer_norm(h, t, "transformer.ln_f", eps)
    return h @ _w(t, "transformer.wte.weight").T


def opt(cfg, t, ids):
    h_size, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    d, eps = h_size // nh, 1e-5
    b, s = ids.shape
    h = (
        _w(t, "model.decoder.embed_tokens.weight")[ids]
        + _w(t, "model.decoder.embed_positions.weight")[np.arange(s) + 2]
    )
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.decoder.layers.{i}."
        x = layer_norm(h, t, p + "self_attn_layer_norm", eps)
        q = (linear(x, t, p + "self_attn.q_proj") * d**-0.5).reshape(b, s, nh, d)
        k = linear(x, t, p + "self_attn.k_proj").reshape(b, s, nh, d)
        v = linear(x, t, p + "self_attn.v_proj").reshape(b, s, nh, d)
        h = h + linear(attention(q, k, v, 1.0), t, p + "self_attn.out_proj")
        x = layer_norm(h, t, p + "final_layer_norm", eps)
        h = h + linear(np.maximum(linear(x, t, p + "fc1"), 0.0), t, p + "fc2")
    h = layer_norm(h, t, "model.decoder.final_layer_norm", eps)
    head = "lm_head.weight" if "lm_head.weight" in t else "model.decoder.embed_tokens.weight"
    return h @ _w(t, head).T


def alibi_slopes(nh: int) -> np.ndarray:
    closest = 2 ** math.floor(math.log2(nh))
    base = 2 ** (-(2 ** -(math.log2(closest) - 3)))
    slopes = [base**p for p in range(1, closest + 1)]
    if closest != nh:
        extra = 2 ** (-(2 ** -(math.log2(2 * closest) - 3)))
        slopes += [extra**p for p in range(1, 1 + 2 * min(closest, nh - closest), 2)]
    return np.array(slopes, dtype=F)


def bloom(cfg, t, ids):
    h_size, nh, eps = cfg["hidden_size"], cfg["n_head"], cfg["layer_norm_epsilon"]
    d = h_size // nh
    post = cfg.get("apply_residual_connection_post_layernorm", False)
    b, s = ids.shape
    h = layer_norm(_w(t, "transformer.word_embeddings.weight")[ids], t, "transformer.word_embeddings_layernorm", eps)
    # ALiBi: slope of the head x the key's position (softmax is invariant to the per-query shift)
    bias = alibi_slopes(nh)[:, None, None] * np.arange(s, dtype=F)[None, None, :]
    for i in range(cfg["n_layer"]):
        p = f"transformer.h.{i}."
        x = layer_norm(h, t, p + "input_layernorm", eps)
        fused = linear(x, t, p + "self_attention.query_key_value").reshape(b, s, nh, 3, d)
        ctx = attention(fused[..., 0, :], fused[..., 1, :], fused[..., 2, :], 1 / math.sqrt(d), bias)
        h = (x if post else h) + linear(ctx, t, p + "self_attention.dense")
        x = layer_norm(h, t, p + "post_attention_layernorm", eps)
        h = (x if post else h) + linear(gelu_tanh(linear(x, t, p + "mlp.dense_h_to_4h")), t, p + "mlp.dense_4h_to_h")
    h = layer_norm(h, t, "transformer.ln_f", eps)
    return h @ _w(t, "transformer.word_embeddings.weight").T


def qwen(cfg, t, ids):
    h_size, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_epsilon"]
    d = cfg.get("kv_channels") or h_size // nh
    rot = int(d * cfg.get("rotary_pct", 1.0))
    base = cfg.get("rotary_emb_base", 10000)
    b, s = ids.shape
    h = _w(t, "transformer.wte.weight")[ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"transformer.h.{i}."
        x = rms_norm(h, t, p + "ln_1", eps)
        q, k, v = (a.reshape(b, s, nh, d) for a in np.split(linear(x, t, p + "attn.c_attn"), 3, axis=-1))
        ctx = attention(rope(q, base, rot), rope(k, base, rot), v, 1 / math.sqrt(d))
        h = h + linear(ctx, t, p + "attn.c_proj", False)
        x = rms_norm(h, t, p + "ln_2", eps)
        ff = linear(x, t, p + "mlp.w1", False) * silu(linear(x, t, p + "mlp.w2", False))
        h = h + linear(ff, t, p + "mlp.c_proj", False)
    h = rms_norm(h, t, "transformer.ln_f", eps)
    return h @ _w(t, "lm_head.weight").T


def chatglm_rope(x, dim):
    """ChatGLM2's rotary: the first `dim` channels of each head as interleaved (even, odd) pairs."""
    s = x.shape[1]
    inv_freq = 1.0 / (10000 ** (np.arange(0, dim, 2, dtype=F) / dim))
    theta = np.outer(np.arange(s, dtype=F), inv_freq)[None, :, None, :]
    cos, sin = np.cos(theta), np.sin(theta)
    rot, rest = x[..., :dim], x[..., dim:]
    x0, x1 = rot[..., 0::2], rot[..., 1::2]
    out = np.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1).reshape(rot.shape)
    return np.concatenate([out, rest], axis=-1)


def chatglm(cfg, t, ids):
    h_size, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layernorm_epsilon"]
    d = cfg.get("kv_channels") or h_size // nh
    g = cfg["multi_query_group_num"] if cfg.get("multi_query_attention") else nh
    f = cfg["ffn_hidden_size"]
    b, s = ids.shape
    h = _w(t, "transformer.embedding.word_embeddings.weight")[ids]
    for i in range(cfg["num_layers"]):
        p = f"transformer.encoder.layers.{i}."
        x = rms_norm(h, t, p + "input_layernorm", eps)
        mixed = linear(x, t, p + "self_attention.query_key_value")
        q = mixed[..., : nh * d].reshape(b, s, nh, d)
        k = mixed[..., nh * d : nh * d + g * d].reshape(b, s, g, d)
        v = mixed[..., nh * d + g * d :].reshape(b, s, g, d)
        ctx = attention(chatglm_rope(q, d // 2), chatglm_rope(k, d // 2), v, 1 / math.sqrt(d))
        h = h + linear(ctx, t, p + "self_attention.dense", False)
        x = rms_norm(h, t, p + "post_attention_layernorm", eps)
        ff = linear(x, t, p + "mlp.dense_h_to_4h", False)
        h = h + linear(silu(ff[..., :f]) * ff[..., f:], t, p + "mlp.dense_4h_to_h", False)
    h = rms_norm(h, t, "transformer.encoder.final_layernorm", eps)
    return h @ _w(t, "transformer.output_layer.weight").T


# Qwen2ForCausalLM and MistralForCausalLM are llama's equations (qwen2: biased q/k/v; mistral's sliding window does not
# act within a test's few tokens, and PaddleNLP's mistral never applies it)
FORWARD = {"llama": llama, "qwen2": llama, "mistral": llama, "gpt2": gpt2, "opt": opt, "bloom": bloom, "qwen": qwen,
           "chatglm": chatglm}  # fmt: skip


def logits(cfg: dict[str, Any], tensors: dict[str, Any], ids: np.ndarray) -> np.ndarray:
    """[batch, seq, vocab] logits of the Hugging Face model `cfg` describes."""
    return FORWARD[cfg["model_type"]](cfg, tensors, ids)
