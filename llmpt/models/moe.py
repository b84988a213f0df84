"""A mixture-of-experts registry model's parameter facts for `llmpt models`, read from the planner's count
(llmpt/planner/shapes.py, the one place that lays out each MoE family as PaddleNLP 3.0.0b4 builds it).

Exact for PaddleNLP's classes: tests/integration/test_moe_registry.py builds every MoE registry model under
paddle.LazyGuard, compares these totals with the class's and with the published checkpoint totals. "Active" is what
one token touches: everything but the routed experts it is not sent to (its top-k of num_experts, per MoE layer).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmpt.models.registry import ModelSpec


@dataclass(frozen=True)
class MoeCounts:
    """Parameter counts (elements) of one MoE model."""

    total: int
    active: int
    moe_layers: int  # layers whose FFN is routed (deepseek_v2: after first_k_dense_replace dense ones)
    per_expert: int  # one routed expert (gate, up and down projections)
    routed: int  # all routed experts of all MoE layers: what expert parallel divides by ep


def moe_counts(spec: ModelSpec, from_scratch: bool = True) -> MoeCounts:
    """Total, active and expert parameters of `spec` (a model whose family routes tokens to experts)."""
    from llmpt.planner.shapes import param_groups

    if not spec.is_moe:
        raise ValueError(f"{spec.id} is not a mixture-of-experts model")
    g = param_groups(spec, spec.max_position_embeddings, from_scratch)
    return MoeCounts(
        total=g.total,
        active=g.active,
        moe_layers=g.moe_layers,
        per_expert=g.experts // spec.num_experts,
        routed=g.moe_layers * g.experts,
    )


def short_count(n: int) -> str:
    """46702792704 -> '46.7B'; 0.5B-scale and tiny models in M / K."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
