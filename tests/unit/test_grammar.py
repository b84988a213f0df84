"""Strategy-name grammar: parse and format are exact inverses; bad names fail with a rule."""

from __future__ import annotations

import itertools

import pytest

from llmpt.errors import StrategyError
from llmpt.strategies.grammar import NameParts, format_name, parse_name
from llmpt.strategies.presets import list_presets
from llmpt.strategies.schema import ParallelConfig

CANONICAL = [
    "dp1",
    "dp8",
    "tp8",
    "tp2sd4_stage2",
    "sd8_stage2",
    "tp4pp2",
    "tp2pp2sd2_stage1",
    "dp2tp2",
    "tp8pp8_vpp2_rc",
    "sd16_stage3_offload_rcattn",
    "tp4_sp_rccore",
    "sep4sd2_stage1",
    "tp2cp2",
    "dp2ep2",
    "ep8",
    "dp4tp2ep4_rc",
    "sd4ep2_stage1",
]


@pytest.mark.parametrize("name", CANONICAL + list_presets())
def test_format_inverts_parse(name):
    assert format_name(parse_name(name)) == name


def test_parse_reads_every_part():
    p = parse_name("dp2tp4pp2sd2_stage1_vpp3_sp_rc")
    assert p == NameParts(
        ParallelConfig(dp=2, tp=4, pp=2, sharding=2, stage=1, virtual_pp=3, sequence_parallel=True), "full"
    )
    assert parse_name("tp2sd4_stage2") == NameParts(ParallelConfig(tp=2, sharding=4, stage=2))
    assert parse_name("dp1") == NameParts(ParallelConfig(dp=1))


def test_parse_inverts_format_over_the_grammar():
    # every combination of a few values per part that the rules allow
    count = 0
    for dp, tp, pp, sd, ep, stage, offload, vpp, sp, rc in itertools.product(
        (None, 2),
        (1, 2),
        (1, 4),
        (1, 8),
        (1, 2, 4),
        (1, 2, 3),
        (False, True),
        (1, 2),
        (False, True),
        ("off", "full", "full_attn", "core_attn"),
    ):
        if ep > 1 and dp not in (None, ep):
            continue  # ep equals dp (ParallelDims refuses it in the constructor already)
        parallel = ParallelConfig(
            dp=dp,
            tp=tp,
            pp=pp,
            sharding=sd,
            ep=ep,
            stage=stage if sd > 1 else 1,
            offload=offload,
            virtual_pp=vpp,
            sequence_parallel=sp,
        )
        parts = NameParts(parallel, rc)
        try:
            name = format_name(parts)
            parsed = parse_name(name)
        except StrategyError:
            continue
        assert parsed == parts, name
        count += 1
    assert count > 400


@pytest.mark.parametrize(
    "name,fragment",
    [
        ("", "not a strategy name"),
        ("tp2sd4_stag2", "not a strategy name"),
        ("_rc", "not a strategy name"),
        ("sd8", "needs a stage"),
        ("tp2_stage2", "without a sharding degree"),
        ("sd8_stage4", "stage must be 1, 2 or 3"),
        ("sd8_stage1_offload", "_offload needs sharding stage 2 or 3"),
        ("tp2_vpp2", "needs pp > 1"),
        ("dp8_sp", "needs tensor parallel"),
        ("tp1sd8_stage2", "write no tp1"),
        ("dp1tp2", "dp1 only stands alone"),
        ("tp0", "must be >= 1"),
        ("sd2tp2_stage1", "not a strategy name"),  # axes in canonical order only
        ("ep2sd2_stage1", "not a strategy name"),  # ep comes last of the axes
        ("dp2ep4", "ep4 with dp2"),
        ("ep1", "write no ep1"),
    ],
)
def test_bad_names_say_which_rule(name, fragment):
    with pytest.raises(StrategyError) as e:
        parse_name(name)
    assert fragment in e.value.message


def test_degree_one_hint_gives_the_fixed_name():
    with pytest.raises(StrategyError) as e:
        parse_name("tp1sd8_stage2")
    assert "sd8_stage2" in e.value.hint
