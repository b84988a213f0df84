"""Strategy names: parse `tp2sd4_stage2`-style names into degrees and format them back (exact inverses).

Grammar (canonical order, each part optional, degree-1 axes omitted):

    [dpN][tpN][ppN][sepN][cpN][sdN] [_stageS] [_offload] [_vppN] [_sp] [_rc | _rcattn | _rccore]

- `dpN` fixes the data-parallel degree; without it dp is derived from the world size. `dp1` alone is one device.
- `sdN` (N > 1) needs `_stage1|2|3`; `_offload` needs stage 2 or 3; `_vppN` needs pp > 1; `_sp` needs tp > 1.
- `_rc` = full recompute, `_rcattn` = full_attn, `_rccore` = core_attn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmpt.errors import StrategyError

_AXES = ("dp", "tp", "pp", "sep", "cp", "sd")
_RECOMPUTE_SUFFIX = {"full": "_rc", "full_attn": "_rcattn", "core_attn": "_rccore"}
_SUFFIX_RECOMPUTE = {v[1:]: k for k, v in _RECOMPUTE_SUFFIX.items()}

_NAME_RE = re.compile(
    r"^(?:dp(?P<dp>\d+))?(?:tp(?P<tp>\d+))?(?:pp(?P<pp>\d+))?(?:sep(?P<sep>\d+))?(?:cp(?P<cp>\d+))?(?:sd(?P<sd>\d+))?"
    r"(?:_stage(?P<stage>\d+))?(?P<offload>_offload)?(?:_vpp(?P<vpp>\d+))?(?P<sp>_sp)?"
    r"(?:_(?P<rc>rc|rcattn|rccore))?$"
)


class NameSyntaxError(StrategyError):
    """The text is not shaped like a strategy name at all (as opposed to breaking one of the rules)."""


@dataclass(frozen=True)
class NameParts:
    """Everything a strategy name says."""

    dp: int | None = None
    tp: int = 1
    pp: int = 1
    sep: int = 1
    cp: int = 1
    sd: int = 1
    stage: int = 1
    offload: bool = False
    virtual_pp: int = 1
    sequence_parallel: bool = False
    recompute: str = "off"


def parse_name(name: str) -> NameParts:
    """Parse a strategy name; raise StrategyError naming the rule it breaks."""
    m = _NAME_RE.match(name)
    if not name or m is None or not any(m.group(a) for a in _AXES):
        raise NameSyntaxError(
            f"'{name}' is not a strategy name",
            "names look like dp8, tp2sd4_stage2, tp4pp2_rc (see: llmpt presets list)",
        )
    g = m.groupdict()
    degrees = {a: int(g[a]) if g[a] is not None else None for a in _AXES}
    for axis, value in degrees.items():
        if value is not None and value < 1:
            raise StrategyError(f"strategy '{name}': {axis} degree must be >= 1 (got {value})")
        if value == 1 and axis != "dp":
            raise StrategyError(
                f"strategy '{name}': write no {axis}1, a degree-1 axis is left out of the name",
                f"use '{format_name(_parts_or_default(degrees, g, drop=axis))}'",
            )
    if degrees["dp"] == 1 and any(degrees[a] for a in _AXES if a != "dp"):
        raise StrategyError(
            f"strategy '{name}': dp1 only stands alone (one device); with other axes leave dp out",
            f"use '{format_name(_parts_or_default(degrees, g, drop='dp'))}'",
        )
    sd = degrees["sd"] or 1
    stage = int(g["stage"]) if g["stage"] else None
    if sd > 1 and stage is None:
        raise StrategyError(
            f"strategy '{name}': sharding sd{sd} needs a stage", f"use '{name.replace(f'sd{sd}', f'sd{sd}_stage1', 1)}'"
        )
    if stage is not None and sd == 1:
        raise StrategyError(f"strategy '{name}': _stage{stage} without a sharding degree", "add sdN, e.g. sd8_stage2")
    if stage is not None and stage not in (1, 2, 3):
        raise StrategyError(f"strategy '{name}': sharding stage must be 1, 2 or 3 (got {stage})")
    if g["offload"] and stage not in (2, 3):
        raise StrategyError(f"strategy '{name}': _offload needs sharding stage 2 or 3")
    vpp = int(g["vpp"]) if g["vpp"] else 1
    if g["vpp"] is not None and (vpp < 2 or (degrees["pp"] or 1) < 2):
        raise StrategyError(f"strategy '{name}': _vpp{vpp} needs pp > 1 and a virtual degree >= 2")
    if g["sp"] and (degrees["tp"] or 1) < 2:
        raise StrategyError(f"strategy '{name}': sequence parallel (_sp) needs tensor parallel tp > 1")
    return NameParts(
        dp=degrees["dp"],
        tp=degrees["tp"] or 1,
        pp=degrees["pp"] or 1,
        sep=degrees["sep"] or 1,
        cp=degrees["cp"] or 1,
        sd=sd,
        stage=stage or 1,
        offload=bool(g["offload"]),
        virtual_pp=vpp,
        sequence_parallel=bool(g["sp"]),
        recompute=_SUFFIX_RECOMPUTE[g["rc"]] if g["rc"] else "off",
    )


def _parts_or_default(degrees: dict[str, int | None], g: dict[str, str | None], drop: str) -> NameParts:
    # Builds the corrected name for a hint: the same name with one offending axis removed.
    d = {a: (v if a != drop else None) for a, v in degrees.items()}
    sd = d["sd"] or 1
    return NameParts(
        dp=d["dp"],
        tp=d["tp"] or 1,
        pp=d["pp"] or 1,
        sep=d["sep"] or 1,
        cp=d["cp"] or 1,
        sd=sd,
        stage=int(g["stage"]) if g["stage"] and sd > 1 else 1,
        offload=bool(g["offload"]) and sd > 1,
        virtual_pp=int(g["vpp"]) if g["vpp"] else 1,
        sequence_parallel=bool(g["sp"]),
        recompute=_SUFFIX_RECOMPUTE[g["rc"]] if g["rc"] else "off",
    )


def format_name(p: NameParts) -> str:
    """The canonical name of a set of name parts; parse_name(format_name(p)) == p."""
    if p.sd == 1 and (p.stage != 1 or p.offload):
        raise StrategyError("a sharding stage or offload needs a sharding degree sd > 1")
    if p.offload and p.stage == 1:
        raise StrategyError("offload needs sharding stage 2 or 3")
    if p.virtual_pp > 1 and p.pp == 1:
        raise StrategyError("virtual pipeline stages need pp > 1")
    if p.sequence_parallel and p.tp == 1:
        raise StrategyError("sequence parallel needs tp > 1")
    axes = "".join(
        f"{a}{v}"
        for a, v in (("dp", p.dp), ("tp", p.tp), ("pp", p.pp), ("sep", p.sep), ("cp", p.cp), ("sd", p.sd))
        if (a == "dp" and v is not None) or (a != "dp" and v is not None and v > 1)
    )
    if not axes:
        # only "one device" has no axis > 1; a derived dp with nothing else has no name
        raise StrategyError("a strategy needs at least one axis (dpN, tpN, ppN, sepN, cpN or sdN)", "e.g. dp1, dp8")
    if p.sd > 1:
        axes += f"_stage{p.stage}"
        if p.offload:
            axes += "_offload"
    if p.virtual_pp > 1:
        axes += f"_vpp{p.virtual_pp}"
    if p.sequence_parallel:
        axes += "_sp"
    return axes + _RECOMPUTE_SUFFIX.get(p.recompute, "")
