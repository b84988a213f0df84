"""The rules a strategy must pass before anything starts: each refusal says what was given and what is allowed."""

from __future__ import annotations

import difflib
import warnings

from llmpt.errors import LlmptWarning, StrategyError
from llmpt.strategies.schema import (
    DATA_PARALLEL_OPTIONS,
    PIPELINE_PARALLEL_OPTIONS,
    SHARDING_OPTIONS,
    TENSOR_PARALLEL_OPTIONS,
    Strategy,
)


class StrategyWarning(LlmptWarning):
    """An option that has no effect in this strategy (kept, but the user should know)."""


_OPTION_LISTS = {
    "tensor_parallel": TENSOR_PARALLEL_OPTIONS,
    "pipeline_parallel": PIPELINE_PARALLEL_OPTIONS,
    "sharding": SHARDING_OPTIONS,
    "data_parallel": DATA_PARALLEL_OPTIONS,
}


def check_strategy(s: Strategy) -> None:
    """Rules that need no world size. Raises StrategyError; warns (StrategyWarning) on options without effect."""
    p, name = s.parallel, s.name
    # the layout rules a name shows (sp needs tp, vpp needs pp, offload needs stage 2/3, sep excludes cp) hold by
    # construction: parallel comes only from a parsed name (grammar.layout_problem, ParallelDims)
    if p.pp > 1 and p.sharding > 1 and p.stage > 1:
        raise StrategyError(
            f"strategy {name}: pipeline parallel (pp{p.pp}) works only with sharding stage 1, not stage {p.stage}",
            f"use {name.replace(f'_stage{p.stage}', '_stage1')}",
        )
    if p.tp > 1 and p.sharding > 1 and p.stage == 3:
        # PaddleNLP 3.0.0b4, trainer.py _wrap_model (sharding without pipeline), on every device: "Only support
        # tensor parallel + sharding stage1/stage2 hybrid parallel now." (an assert at every rank's start)
        raise StrategyError(
            f"strategy {name}: tensor parallel (tp{p.tp}) works only with sharding stage 1 or 2, not stage 3 "
            "(PaddleNLP's Trainer asserts it at every rank's start)",
            f"use {name.replace('_stage3', '_stage2')}, or sharding stage 3 without tp",
        )

    for section, allowed in _OPTION_LISTS.items():
        for opt in getattr(s.overlap, section):
            if opt not in allowed:
                close = difflib.get_close_matches(opt, allowed, n=1, cutoff=0.6)
                raise StrategyError(
                    f"strategy {name}: overlap.{section}: unknown option '{opt}'"
                    + (f". Did you mean '{close[0]}'?" if close else ""),
                    f"allowed: {', '.join(allowed)}",
                )
    ov = s.overlap
    _warn_unused(name, "tensor_parallel", ov.tensor_parallel, p.tp > 1, "tp > 1")
    _warn_unused(name, "pipeline_parallel", ov.pipeline_parallel, p.pp > 1, "pp > 1")
    _warn_unused(name, "sharding", ov.sharding, p.sharding > 1, "a sharding degree")

    amp = s.precision.dtype in ("bf16", "fp16")
    if s.precision.master_grad and not amp:
        raise StrategyError(
            f"strategy {name}: precision.master_grad needs bf16 or fp16 (got {s.precision.dtype})",
            "set precision.dtype: bf16, or drop master_grad",
        )
    if s.kernels.flash_attention and not amp:
        raise StrategyError(
            f"strategy {name}: kernels.flash_attention needs bf16 or fp16 precision (got {s.precision.dtype})",
            "set precision.dtype: bf16, or kernels.flash_attention: false",
        )
    if "split_param" in ov.sharding and not s.precision.master_grad:
        raise StrategyError(
            f"strategy {name}: overlap.sharding split_param needs precision.master_grad: true (PaddleNLP asserts it)"
        )
    if "enable_stage2_overlap" in ov.sharding and p.stage != 2:
        raise StrategyError(f"strategy {name}: enable_stage2_overlap needs sharding stage 2 (got stage {p.stage})")
    for opt in ("enable_stage1_broadcast_overlap", "enable_stage1_allgather_overlap", "disable_stage1_reduce_avg"):
        if opt in ov.sharding and p.stage != 1:
            raise StrategyError(f"strategy {name}: {opt} needs sharding stage 1 (got stage {p.stage})")
    if "enable_stage1_allgather_overlap" in ov.sharding and "split_param" not in ov.sharding:
        raise StrategyError(f"strategy {name}: enable_stage1_allgather_overlap needs split_param in overlap.sharding")
    if "enable_stage1_broadcast_overlap" in ov.sharding and "split_param" in ov.sharding:
        raise StrategyError(f"strategy {name}: enable_stage1_broadcast_overlap excludes split_param")
    if ov.data_parallel and p.dims.model_degree > 1:
        raise StrategyError(
            f"strategy {name}: overlap.data_parallel options work only in pure data parallel; PaddleNLP refuses "
            "data_parallel_config in hybrid parallel",
            "drop overlap.data_parallel",
        )
    if "enable_sharding_comm_overlap" in ov.pipeline_parallel and not s.precision.master_grad:
        raise StrategyError(
            f"strategy {name}: enable_sharding_comm_overlap needs precision.master_grad: true (PaddleNLP asserts it)"
        )
    if s.recompute.no_recompute_layers and s.recompute.granularity == "off":
        raise StrategyError(f"strategy {name}: recompute.no_recompute_layers needs recompute on")


def check_runs_on_cpu(s: Strategy) -> None:
    """What llmpt's gloo backend cannot run on CPU ranks (StrategyError naming it)."""
    p = s.parallel
    unsupported = [
        (p.offload, "sharding offload (there is no device memory to offload from)"),
        (p.sep > 1, f"segment parallel (sep{p.sep})"),
        (p.cp > 1, f"context parallel (cp{p.cp})"),
    ]
    for bad, what in unsupported:
        if bad:
            raise StrategyError(
                f"strategy {s.name} needs {what}, which llmpt does not run on CPU",
                "on CPU: data, tensor and pipeline parallel, sequence parallel, sharding stage 1/2/3",
            )


def _warn_unused(name: str, section: str, options: tuple[str, ...], active: bool, needs: str) -> None:
    if options and not active:
        warnings.warn(
            f"strategy {name}: overlap.{section} ({' '.join(options)}) has no effect without {needs}",
            StrategyWarning,
            stacklevel=3,
        )
