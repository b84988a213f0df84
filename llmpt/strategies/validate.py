"""The rules a strategy must pass before anything starts: each refusal says what was given and what is allowed."""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, replace

from llmpt.errors import LlmptWarning, StrategyError
from llmpt.strategies.grammar import format_name, parse_name
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
    if p.pp > 1 and p.sharding > 1 and p.stage > 1:
        raise StrategyError(
            f"strategy {name}: pipeline parallel (pp{p.pp}) works only with sharding stage 1, not stage {p.stage}",
            f"use {name.replace(f'_stage{p.stage}', '_stage1')}",
        )
    if p.sequence_parallel and p.tp < 2:
        raise StrategyError(f"strategy {name}: sequence parallel needs tensor parallel tp > 1 (got tp{p.tp})")
    if p.sep > 1 and p.cp > 1:
        raise StrategyError(
            f"strategy {name}: sep{p.sep} and cp{p.cp} together; segment parallel and context parallel exclude "
            "each other",
            "keep one of them",
        )
    if p.virtual_pp > 1 and p.pp < 2:
        raise StrategyError(f"strategy {name}: virtual pipeline (vpp{p.virtual_pp}) needs pp > 1")
    if p.offload and p.stage == 1:
        raise StrategyError(f"strategy {name}: offload needs sharding stage 2 or 3")

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
    if ov.data_parallel and p.model_degree > 1:
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


def _warn_unused(name: str, section: str, options: tuple[str, ...], active: bool, needs: str) -> None:
    if options and not active:
        warnings.warn(
            f"strategy {name}: overlap.{section} ({' '.join(options)}) has no effect without {needs}",
            StrategyWarning,
            stacklevel=3,
        )


@dataclass(frozen=True)
class Degrees:
    """Resolved degrees for one world size; their product is the world size."""

    dp: int
    tp: int
    pp: int
    sharding: int
    sep: int
    cp: int

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp * self.sharding * self.sep * self.cp


def resolve_degrees(s: Strategy, world_size: int, world_flag: str = "world size") -> Degrees:
    """Degrees for `world_size` ranks: dp derived if the name leaves it out. `world_flag` is how the user gave it."""
    p = s.parallel
    if world_size < 1:
        raise StrategyError(f"{world_flag} must be >= 1 (got {world_size})")
    axes = (("tp", p.tp), ("pp", p.pp), ("sep", p.sep), ("cp", p.cp), ("sd", p.sharding))
    factors = [f"{a}{v}" for a, v in axes if v > 1]
    inner = p.model_degree
    if p.dp is not None:
        need = p.dp * inner
        if need != world_size:
            shown = " x ".join([f"dp{p.dp}"] + factors) if factors else f"dp{p.dp}"
            raise StrategyError(
                f"strategy {s.name} needs {need} ranks ({shown}) but {world_flag} gives {world_size}",
                _fit_hint(s, world_size, need),
            )
        dp = p.dp
    else:
        if world_size % inner:
            raise StrategyError(
                f"strategy {s.name} needs a multiple of {inner} ranks ({' x '.join(factors)}) but {world_flag} "
                f"gives {world_size}",
                _fit_hint(s, world_size, inner),
            )
        dp = world_size // inner
    return Degrees(dp=dp, tp=p.tp, pp=p.pp, sharding=p.sharding, sep=p.sep, cp=p.cp)


def _fit_hint(s: Strategy, world_size: int, need: int) -> str:
    # Suggest the same strategy with its outermost replicating axis (sharding, else dp) rescaled to fit.
    p = s.parallel
    parts = parse_name(s.name)
    rest = p.tp * p.pp * p.sep * p.cp
    alt = None
    if world_size % rest == 0:
        k = world_size // rest
        if p.sharding > 1 and k >= 2:
            alt = format_name(replace(parts, sd=k, dp=None))
        elif p.dp is not None and p.sharding == 1 and (rest == 1 or k > 1):
            alt = format_name(replace(parts, dp=k if rest == 1 else None))
    alt_text = f"use {alt}, or " if alt and alt != s.name else ""
    return f"{alt_text}pass {need} devices"
