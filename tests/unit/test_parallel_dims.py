"""ParallelDims: the one object for the parallel axes (degrees, rules, minimum ranks, dict and name forms)."""

from __future__ import annotations

import pytest

from llmpt.errors import StrategyError
from llmpt.strategies.grammar import parse_name, rename_axes
from llmpt.strategies.parallel_dims import ParallelDims
from llmpt.strategies.presets import list_presets


def test_derived_dp_resolves_on_a_world_size():
    d = parse_name("tp2sd4_stage2").parallel.dims
    assert (d.dp, d.model_degree, d.min_ranks, d.split_degree) == (None, 8, 8, 2)
    on16 = d.for_world(16, "tp2sd4_stage2")
    assert on16 == ParallelDims(dp=2, tp=2, sharding=4) and on16.world_size == 16 and on16.data_degree == 8
    assert on16.describe() == "dp2 x tp2 x sd4" and on16.factors() == ["tp2", "sd4"]


@pytest.mark.parametrize(
    "name,world,fragment,hint",
    [
        ("tp2sd4_stage2", 4, "needs a multiple of 8 ranks (tp2 x sd4) but world size gives 4", "use tp2sd2_stage2"),
        ("dp2tp2", 8, "needs 4 ranks (dp2 x tp2) but world size gives 8", "pass 4 devices"),
        ("dp8", 4, "needs 8 ranks (dp8)", "use dp4"),
    ],
)
def test_wrong_world_size_names_every_factor_and_a_fit(name, world, fragment, hint):
    with pytest.raises(StrategyError) as e:
        parse_name(name).parallel.dims.for_world(world, name)
    assert fragment in e.value.message and hint in e.value.hint


@pytest.mark.parametrize("name", list_presets())
def test_dict_and_name_forms_round_trip(name):
    d = parse_name(name).parallel.dims
    assert ParallelDims.from_dict(d.to_dict()) == d
    assert rename_axes(name, d) == name
    assert parse_name(name).parallel.dims.name_prefix() == name.split("_")[0]


@pytest.mark.parametrize("bad", [{"tp": 0}, {"pp": -1}, {"dp": 0}, {"tp": True}, {"sep": 2, "cp": 2}])
def test_invalid_degrees_are_refused(bad):
    with pytest.raises(StrategyError):
        ParallelDims(**bad)


def test_unknown_axis_in_dict_form():
    with pytest.raises(StrategyError, match="unknown parallel axis 'etp'"):
        ParallelDims.from_dict({"dp": 1, "etp": 2})


# expert parallel: PaddleNLP 3.0.0b4's MoE layer splits experts over the data-parallel group, so ep is dp


def test_ep_is_no_factor_of_the_world_size_and_fixes_dp():
    d = ParallelDims(ep=4)
    assert (d.model_degree, d.min_ranks) == (1, 4)
    assert d.for_world(4, "ep4") == ParallelDims(dp=4, ep=4)
    assert ParallelDims(sharding=2, ep=2).for_world(4, "sd2ep2_stage1") == ParallelDims(dp=2, sharding=2, ep=2)
    assert ParallelDims(dp=4, ep=4).describe() == "dp4 (experts over ep4)"
    assert ParallelDims(tp=2, ep=2).describe() == "dp2 x tp2 (experts over ep2)"
    assert ParallelDims(dp=2, tp=2, ep=2).name_prefix() == "dp2tp2ep2"
    assert ParallelDims.from_dict(ParallelDims(dp=2, ep=2).to_dict()) == ParallelDims(dp=2, ep=2)


def test_ep_other_than_dp_is_refused_with_every_factor():
    with pytest.raises(StrategyError) as e:
        ParallelDims(dp=2, ep=4)
    assert e.value.message == (
        "ep4 with dp2: PaddleNLP 3.0.0b4's MoE layer splits each layer's experts over the data-parallel ranks, so "
        "ep must equal dp (here dp2)"
    )
    assert e.value.hint == "give dp4 for ep4 (e.g. dp4ep4), or leave ep out"
    with pytest.raises(StrategyError) as e:
        ParallelDims(tp=2, ep=2).for_world(8, "tp2ep2")
    assert e.value.message == (
        "strategy tp2ep2 needs 4 ranks (dp2 x tp2: ep2 is the dp degree) but world size gives 8, so dp4"
    )
    assert e.value.hint == "pass 4 devices"
