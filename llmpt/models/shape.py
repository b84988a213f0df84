"""Model-shape rules a strategy must meet: what PaddleNLP would assert deep inside a forward pass, said early."""

from __future__ import annotations

from llmpt.errors import ModelError
from llmpt.models.registry import ModelSpec, padded_vocab
from llmpt.strategies.parallel_dims import ParallelDims
from llmpt.strategies.schema import Strategy


def check_model_shape(spec: ModelSpec, s: Strategy, d: ParallelDims, seq_len: int, from_scratch: bool = True) -> None:
    """Raise ModelError for the first dimension the strategy cannot split."""
    name = s.name
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


def _vocab(spec: ModelSpec, from_scratch: bool) -> int:
    return padded_vocab(spec.vocab_size) if from_scratch else spec.vocab_size


def _largest_divisor(n: int, below: int) -> int:
    return max(k for k in range(1, below + 1) if n % k == 0)
