"""Model-shape rules a strategy must meet: what PaddleNLP would assert deep inside a forward pass, said early."""

from __future__ import annotations

from llmpt.errors import ModelError, StrategyError
from llmpt.models.registry import EXPERT_PARALLEL_FAMILIES, ModelSpec, padded_vocab
from llmpt.strategies.parallel_dims import ParallelDims
from llmpt.strategies.schema import Strategy


def check_model_shape(spec: ModelSpec, s: Strategy, d: ParallelDims, seq_len: int, from_scratch: bool = True) -> None:
    """Raise ModelError for the first dimension the strategy cannot split."""
    name = s.name
    _check_experts(spec, name, d)
    if d.tp > 1:
        splits = [
            ("attention heads", spec.num_attention_heads),
            ("key/value heads", spec.num_key_value_heads),
            ("FFN width", spec.ffn_width),
            ("vocabulary (padded)" if from_scratch else "vocabulary", _vocab(spec, from_scratch)),
        ]
        for what, n in splits:
            if n % d.tp:
                raise ModelError(
                    f"{spec.id} has {n} {what}, not divisible by tp{d.tp} of strategy {name}",
                    f"use a tp that divides {n}" + (", e.g. tp" + str(_largest_divisor(n, d.tp)) if n > 1 else ""),
                )
    stages = d.pp * s.parallel.virtual_pp
    if d.pp > 1 and spec.num_hidden_layers % stages:
        vpp = f" x vpp{s.parallel.virtual_pp}" if s.parallel.virtual_pp > 1 else ""
        raise ModelError(
            f"{spec.id} has {spec.num_hidden_layers} layers, not divisible by pp{d.pp}{vpp} = {stages} stages of "
            f"strategy {name}",
            f"use a pp that divides {spec.num_hidden_layers}",
        )
    if d.sep > 1 and seq_len % d.sep:
        raise ModelError(f"sequence length {seq_len} is not divisible by sep{d.sep} of strategy {name}")
    if d.cp > 1 and seq_len % (2 * d.cp):
        # ring attention splits the sequence into 2 x cp chunks for load balance
        raise ModelError(f"sequence length {seq_len} is not divisible by 2 x cp{d.cp} of strategy {name}")
    bad = [i for i in s.recompute.no_recompute_layers if i >= spec.num_hidden_layers]
    if bad:
        raise ModelError(
            f"strategy {name}: recompute.no_recompute_layers {bad} out of range; {spec.id} has layers "
            f"0..{spec.num_hidden_layers - 1}"
        )


def _check_experts(spec: ModelSpec, name: str, d: ParallelDims) -> None:
    """Expert parallel (epN) only where the modeling splits experts, and always there when dp > 1: PaddleNLP
    3.0.0b4's MoELayer (qwen2_moe, deepseek_v2) splits each layer's experts over the data-parallel group whenever it
    has more than one rank, so plain data parallel would leave the Trainer all-reducing different experts' grads."""
    if d.ep > 1 and not spec.is_moe:
        raise ModelError(
            f"strategy {name}: ep{d.ep} splits a mixture-of-experts model's experts, and {spec.id} ({spec.family}) "
            "is dense",
            "leave ep out of the strategy (ep is for mixtral-, qwen2_moe- and deepseek_v2-family models)",
        )
    if not spec.is_moe:
        return
    experts = spec.num_experts or 0
    if d.ep > 1 and spec.family not in EXPERT_PARALLEL_FAMILIES:
        raise ModelError(
            f"strategy {name}: ep{d.ep}, but PaddleNLP's {spec.family} modeling keeps all {experts} experts of "
            f"every layer on every rank ({spec.id}); it has no expert-parallel path",
            "leave ep out (data parallel and sharding replicate or shard its experts like any other weight)",
        )
    if d.ep > 1 and experts % d.ep:
        raise ModelError(
            f"strategy {name}: {spec.id} has {experts} experts per layer, not divisible by ep{d.ep}",
            f"use an ep (= dp) that divides {experts}, e.g. ep{_largest_divisor(experts, d.ep)}",
        )
    dp = d.dp or 1
    if spec.family in EXPERT_PARALLEL_FAMILIES and dp > 1 and d.ep == 1:
        raise ModelError(
            f"strategy {name}: dp{dp} on {spec.id}: PaddleNLP's {spec.family} MoE layer splits each layer's "
            f"{experts} experts over the {dp} data-parallel ranks, which is expert parallel: name it",
            f"add ep{dp} (e.g. {_with_ep(name, dp)})"
            + ("" if experts % dp == 0 else f"; {experts} experts need a dp that divides them"),
        )


def _with_ep(name: str, ep: int) -> str:
    from llmpt.strategies.grammar import rename

    try:
        return rename(name, dp=ep, ep=ep)
    except StrategyError:  # only a hint: the plain spelling when the name cannot take it
        return f"dp{ep}ep{ep}"


def _vocab(spec: ModelSpec, from_scratch: bool) -> int:
    return padded_vocab(spec.vocab_size) if from_scratch else spec.vocab_size


def _largest_divisor(n: int, below: int) -> int:
    return max(k for k in range(1, below + 1) if n % k == 0)
