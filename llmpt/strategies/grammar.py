"""Strategy names: parse `tp2sd4_stage2`-style names into a ParallelConfig and format them back (exact inverses).

Grammar (canonical order, each part optional, degree-1 axes omitted):

    [dpN][tpN][ppN][sepN][cpN][sdN][epN] [_stageS] [_offload] [_vppN] [_sp] [_rc | _rcattn | _rccore]

- `dpN` fixes the data-parallel degree; without it dp is derived from the world size. `dp1` alone is one device.
- `sdN` (N > 1) needs `_stage1|2|3`; `_offload` needs stage 2 or 3; `_vppN` needs pp > 1; `_sp` needs tp > 1.
- `epN` splits a mixture-of-experts model's experts over the N data-parallel ranks (N = dp: see ParallelDims).
- `_rc` = full recompute, `_rcattn` = full_attn, `_rccore` = core_attn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llmpt.errors import StrategyError
from llmpt.strategies.parallel_dims import NAME_ORDER, NAME_SPELLING, ParallelDims
from llmpt.strategies.schema import ParallelConfig

_RECOMPUTE_SUFFIX = {"full": "_rc", "full_attn": "_rcattn", "core_attn": "_rccore"}
_SUFFIX_RECOMPUTE = {v[1:]: k for k, v in _RECOMPUTE_SUFFIX.items()}
_GROUPS = {NAME_SPELLING[a]: a for a in NAME_ORDER}  # regex group (name spelling) -> axis

_NAME_RE = re.compile(
    r"^(?:dp(?P<dp>\d+))?(?:tp(?P<tp>\d+))?(?:pp(?P<pp>\d+))?(?:sep(?P<sep>\d+))?(?:cp(?P<cp>\d+))?(?:sd(?P<sd>\d+))?(?:ep(?P<ep>\d+))?"
    r"(?:_stage(?P<stage>\d+))?(?P<offload>_offload)?(?:_vpp(?P<vpp>\d+))?(?P<sp>_sp)?"
    r"(?:_(?P<rc>rc|rcattn|rccore))?$"
)


class NameSyntaxError(StrategyError):
    """The text is not shaped like a strategy name at all (as opposed to breaking one of the rules)."""


@dataclass(frozen=True)
class NameParts:
    """Everything a strategy name says: the parallel layout and the recompute suffix."""

    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    recompute: str = "off"


def parse_name(name: str) -> NameParts:
    """Parse a strategy name; raise StrategyError naming the rule it breaks."""
    m = _NAME_RE.match(name)
    if not name or m is None or not any(m.group(g) for g in _GROUPS):
        raise NameSyntaxError(
            f"'{name}' is not a strategy name",
            "names look like dp8, tp2sd4_stage2, tp4pp2_rc (see: llmpt presets list)",
        )
    g = m.groupdict()
    given = {axis: int(g[group]) for group, axis in _GROUPS.items() if g[group] is not None}
    for axis, value in given.items():
        spelt = NAME_SPELLING[axis]
        if value < 1:
            raise StrategyError(f"strategy '{name}': {spelt} degree must be >= 1 (got {value})")
        if value == 1 and axis != "dp":
            raise StrategyError(
                f"strategy '{name}': write no {spelt}1, a degree-1 axis is left out of the name",
                f"use '{_without(name, spelt + '1')}'",
            )
    if given.get("dp") == 1 and len(given) > 1:
        raise StrategyError(
            f"strategy '{name}': dp1 only stands alone (one device); with other axes leave dp out",
            f"use '{_without(name, 'dp1')}'",
        )
    try:
        dims = ParallelDims(**given)
    except StrategyError as e:
        raise StrategyError(f"strategy '{name}': {e.message}", e.hint) from None
    stage = int(g["stage"]) if g["stage"] else None
    if dims.sharding > 1 and stage is None:
        sd = f"sd{dims.sharding}"
        raise StrategyError(
            f"strategy '{name}': sharding {sd} needs a stage", f"use '{name.replace(sd, sd + '_stage1', 1)}'"
        )
    if stage is not None and dims.sharding == 1:
        raise StrategyError(f"strategy '{name}': _stage{stage} without a sharding degree", "add sdN, e.g. sd8_stage2")
    if stage is not None and stage not in (1, 2, 3):
        raise StrategyError(f"strategy '{name}': sharding stage must be 1, 2 or 3 (got {stage})")
    vpp = int(g["vpp"]) if g["vpp"] else 1
    if g["vpp"] is not None and vpp < 2:
        raise StrategyError(f"strategy '{name}': _vpp{vpp} needs pp > 1 and a virtual degree >= 2")
    parallel = ParallelConfig.from_dims(
        dims,
        stage=stage or 1,
        offload=bool(g["offload"]),
        virtual_pp=vpp,
        sequence_parallel=bool(g["sp"]),
    )
    problem = layout_problem(parallel)
    if problem:
        raise StrategyError(f"strategy '{name}': {problem[0]}", problem[1])
    return NameParts(parallel, _SUFFIX_RECOMPUTE[g["rc"]] if g["rc"] else "off")


def layout_problem(p: ParallelConfig) -> tuple[str, str | None] | None:
    """The first rule a layout breaks that its name would show ((message, hint)), or None. The one place these
    rules live: names are parsed through it and formatted through it."""
    if p.sharding == 1 and p.stage != 1:
        return f"_stage{p.stage} without a sharding degree", "add sdN, e.g. sd8_stage2"
    if p.offload and p.stage not in (2, 3):
        return "_offload needs sharding stage 2 or 3", None
    if p.virtual_pp > 1 and p.pp < 2:
        return f"_vpp{p.virtual_pp} needs pp > 1 and a virtual degree >= 2", None
    if p.sequence_parallel and p.tp < 2:
        return "sequence parallel (_sp) needs tensor parallel tp > 1", None
    return None


def _without(name: str, axis_text: str) -> str:
    """The name with one offending axis (e.g. 'tp1') removed, for a hint."""
    return name.replace(axis_text, "", 1)


def format_name(parts: NameParts) -> str:
    """The canonical name of a set of name parts; parse_name(format_name(p)) == p."""
    p = parts.parallel
    problem = layout_problem(p)
    if problem:
        raise StrategyError(*problem)
    axes = p.dims.name_prefix()
    if not axes:
        # only "one device" has no axis > 1; a derived dp with nothing else has no name
        raise StrategyError(
            "a strategy needs at least one axis (dpN, tpN, ppN, sepN, cpN, sdN or epN)", "e.g. dp1, dp8"
        )
    if p.sharding > 1:
        axes += f"_stage{p.stage}"
        if p.offload:
            axes += "_offload"
    if p.virtual_pp > 1:
        axes += f"_vpp{p.virtual_pp}"
    if p.sequence_parallel:
        axes += "_sp"
    return axes + _RECOMPUTE_SUFFIX.get(parts.recompute, "")


def rename(name: str, recompute: str | None = None, **parallel) -> str:
    """`name` with some parallel fields (degrees, stage, …) and/or the recompute granularity changed."""
    parts = parse_name(name)
    p = parts.parallel.model_copy(update=parallel)
    if p.sharding == 1:
        p = p.model_copy(update={"stage": 1, "offload": False})
    if p.dp == 1 and p.dims.model_degree > 1:
        p = p.model_copy(update={"dp": None})  # the grammar writes dp1 only alone; on those ranks dp derives to 1
    return format_name(NameParts(p, parts.recompute if recompute is None else recompute))


def rename_axes(name: str, dims: ParallelDims) -> str:
    """`name` on other degrees, keeping its suffixes."""
    return rename(name, **dims.to_dict())
