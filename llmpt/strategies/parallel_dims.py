"""The parallel axes of a run, as one object: degrees, their rules, minimum ranks, dict and name-grammar forms.

In the spirit of torchtitan's ParallelDims. A strategy name fixes every degree but data parallel; `dp=None` means
"derived from the world size" until `for_world` resolves it. Everything that multiplies, compares, prints or
serialises degrees goes through this class.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from llmpt.errors import StrategyError

# the order degrees are shown and stored in; "sd" is how the name grammar spells the sharding axis
AXES = ("dp", "tp", "pp", "sharding", "sep", "cp", "ep")
NAME_SPELLING = {"dp": "dp", "tp": "tp", "pp": "pp", "sep": "sep", "cp": "cp", "sharding": "sd", "ep": "ep"}
NAME_ORDER = ("dp", "tp", "pp", "sep", "cp", "sharding", "ep")  # the grammar's order of axes in a name
# Expert parallel is no factor of the world size on the pinned stack: PaddleNLP 3.0.0b4's MoELayer
# (transformers/moe_layer.py, moe_group "data") splits each layer's experts over the data-parallel group, so ep
# names how many of dp's ranks share out the experts, and must equal dp. (The Trainer's own expert_parallel_degree
# needs dp 1 and builds communication groups that no 3.0.0b4 modeling reads.)
WORLD_AXES = tuple(a for a in AXES if a != "ep")


@dataclass(frozen=True)
class ParallelDims:
    """Degrees of the seven axes. `dp` is None while it is still to be derived from the world size. `ep` (expert
    parallel) splits the experts of a mixture-of-experts model over the dp ranks: not a factor of the world size."""

    dp: int | None = None
    tp: int = 1
    pp: int = 1
    sharding: int = 1
    sep: int = 1
    cp: int = 1
    ep: int = 1

    def __post_init__(self) -> None:
        for axis in AXES:
            v = getattr(self, axis)
            if v is None and axis == "dp":
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise StrategyError(f"{NAME_SPELLING[axis]} degree must be an integer >= 1 (got {v!r})")
        if self.sep > 1 and self.cp > 1:
            raise StrategyError(
                f"sep{self.sep} and cp{self.cp} together; segment parallel and context parallel exclude each other",
                "keep one of them",
            )
        if self.ep > 1 and self.dp is not None and self.dp != self.ep:
            raise StrategyError(self.ep_problem(self.dp), self.ep_hint())

    def ep_problem(self, dp: int) -> str:
        """Why ep cannot go with `dp`: the one message for every place that meets it."""
        return (
            f"ep{self.ep} with dp{dp}: PaddleNLP 3.0.0b4's MoE layer splits each layer's experts over the "
            f"data-parallel ranks, so ep must equal dp (here dp{dp})"
        )

    def ep_hint(self) -> str:
        return f"give dp{self.ep} for ep{self.ep} (e.g. dp{self.ep}ep{self.ep}), or leave ep out"

    def unclipped_beside_ep(self) -> list[str]:
        """The axes beside ep (= dp) whose reductions llmpt's global-norm clipping of expert-parallel gradients
        (llmpt/train/experts.py) does not make: 'tp2', 'pp2', 'sd4' above 1; empty without ep. Gradient clipping is
        refused with any of them (llmpt/resolve/layout.py), so tune does not offer them with its default."""
        if self.ep <= 1:
            return []
        return [f"{NAME_SPELLING[a]}{getattr(self, a)}" for a in ("tp", "pp", "sharding") if getattr(self, a) > 1]

    @property
    def model_degree(self) -> int:
        """Ranks one model replica spans, before data parallel."""
        return self.tp * self.pp * self.sharding * self.sep * self.cp

    @property
    def split_degree(self) -> int:
        """Ranks one micro batch's compute is split over (tp x pp x sep x cp); sharding and dp replicate it."""
        return self.tp * self.pp * self.sep * self.cp

    @property
    def min_ranks(self) -> int:
        """The smallest world size this layout runs on (dp 1 where dp is derived; dp = ep with expert parallel)."""
        return self.model_degree * (self.dp or self.ep)

    @property
    def resolved(self) -> bool:
        return self.dp is not None

    @property
    def world_size(self) -> int:
        if self.dp is None:
            raise ValueError("world_size of a layout whose dp is still derived: call for_world first")
        return self.dp * self.model_degree

    @property
    def data_degree(self) -> int:
        """Ranks that read different data: dp x sharding (sharding ranks are data parallel too)."""
        return (self.dp or 1) * self.sharding

    @property
    def sequence_degree(self) -> int:
        """fleet has one sequence axis; PaddleNLP puts whichever of sep/cp is in use on it."""
        return self.sep if self.sep > 1 else self.cp

    @property
    def splits_model(self) -> bool:
        """Some axis besides dp is > 1 (PaddleNLP then initialises fleet's hybrid parallel)."""
        return self.model_degree > 1

    def factors(self, with_dp: bool = False) -> list[str]:
        """['tp2', 'sd4']: the world-size factors > 1 in the name grammar's spelling (dp first when asked for and
        known); ep, no factor, is not among them."""
        out = [
            f"{NAME_SPELLING[a]}{getattr(self, a)}" for a in NAME_ORDER if a in WORLD_AXES[1:] and getattr(self, a) > 1
        ]
        if with_dp and self.dp is not None:
            out.insert(0, f"dp{self.dp}")
        return out

    def describe(self) -> str:
        """'dp2 x tp2 x sd4' (resolved) or 'tp2 x sd4'; expert parallel after it: 'dp4 (experts over ep4)'."""
        shown = self if self.dp is not None or self.ep == 1 else replace(self, dp=self.ep)  # ep fixes dp
        text = " x ".join(shown.factors(with_dp=True)) or "dp1"
        return text + (f" (experts over ep{self.ep})" if self.ep > 1 else "")

    def name_prefix(self) -> str:
        """The axes part of a strategy name: 'tp2sd4', 'dp8', 'dp1'; dp only when fixed."""
        parts = self.factors(with_dp=False)
        if self.dp is not None:
            parts.insert(0, f"dp{self.dp}")
        if self.ep > 1:
            parts.append(f"ep{self.ep}")
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {a: getattr(self, a) for a in AXES}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParallelDims:
        unknown = sorted(set(d) - set(AXES))
        if unknown:
            raise StrategyError(f"unknown parallel axis '{unknown[0]}'; axes: {', '.join(AXES)}")
        return cls(**d)

    def with_(self, **changes: Any) -> ParallelDims:
        return replace(self, **changes)

    def smallest(self, strategy_name: str) -> ParallelDims:
        """These degrees on the fewest ranks they run on (dp 1 where derived)."""
        return self.for_world(self.min_ranks, strategy_name)

    def for_world(self, world_size: int, strategy_name: str, world_flag: str = "world size") -> ParallelDims:
        """These degrees on `world_size` ranks (dp derived if unset), or StrategyError naming every factor."""
        if world_size < 1:
            raise StrategyError(f"{world_flag} must be >= 1 (got {world_size})")
        factors = self.factors()
        if self.dp is not None:
            need = self.dp * self.model_degree
            if need != world_size:
                raise StrategyError(
                    f"strategy {strategy_name} needs {need} ranks ({' x '.join([f'dp{self.dp}', *factors])}) but "
                    f"{world_flag} gives {world_size}",
                    self._fit_hint(strategy_name, world_size, need),
                )
            return self
        if self.ep > 1 and world_size != self.model_degree * self.ep:
            derived = world_size // self.model_degree if world_size % self.model_degree == 0 else None
            said = f"dp{derived}" if derived else f"no whole dp ({world_size} / {self.model_degree})"
            raise StrategyError(
                f"strategy {strategy_name} needs {self.model_degree * self.ep} ranks "
                f"({' x '.join([f'dp{self.ep}', *factors])}: ep{self.ep} is the dp degree) but {world_flag} gives "
                f"{world_size}, so {said}",
                f"pass {self.model_degree * self.ep} devices",
            )
        if world_size % self.model_degree:
            raise StrategyError(
                f"strategy {strategy_name} needs a multiple of {self.model_degree} ranks ({' x '.join(factors)}) but "
                f"{world_flag} gives {world_size}",
                self._fit_hint(strategy_name, world_size, self.model_degree),
            )
        return replace(self, dp=world_size // self.model_degree)

    def _fit_hint(self, strategy_name: str, world_size: int, need: int) -> str:
        # the same strategy with its outermost replicating axis (sharding, else dp) rescaled to fit
        from llmpt.strategies.grammar import rename_axes

        rest = self.split_degree
        alt = None
        if world_size % rest == 0 and self.ep == 1:  # ep pins dp: no other dp or sharding fits it
            k = world_size // rest
            if self.sharding > 1 and k >= 2:
                alt = rename_axes(strategy_name, replace(self, sharding=k, dp=None))
            elif self.dp is not None and self.sharding == 1 and (rest == 1 or k > 1):
                alt = rename_axes(strategy_name, replace(self, dp=k if rest == 1 else None))
        alt_text = f"use {alt}, or " if alt and alt != strategy_name else ""
        return f"{alt_text}pass {need} devices"


DIM_FIELDS = tuple(f.name for f in fields(ParallelDims))
