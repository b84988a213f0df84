"""Refusals before anything starts: degrees vs world size, cross-axis rules, PaddleNLP option lists."""

from __future__ import annotations

import pytest

from llmpt.errors import ConfigError, StrategyError
from llmpt.strategies.expand import expand
from llmpt.strategies.grammar import parse_name
from llmpt.strategies.presets import build_strategy, resolve_strategy
from llmpt.strategies.validate import StrategyWarning


def _strategy(name: str, **sections):
    return build_strategy(parse_name(name), sections, "test.yaml")


def test_world_size_mismatch_names_every_factor_and_a_fix():
    with pytest.raises(StrategyError) as e:
        expand(resolve_strategy("tp2sd4_stage2"), 4, "--gpus 4")
    assert e.value.message == "strategy tp2sd4_stage2 needs a multiple of 8 ranks (tp2 x sd4) but --gpus 4 gives 4"
    assert e.value.hint == "use tp2sd2_stage2, or pass 8 devices"


def test_explicit_dp_fixes_the_world_size():
    with pytest.raises(StrategyError) as e:
        expand(resolve_strategy("dp8"), 16, "--gpus 16")
    assert "needs 8 ranks (dp8)" in e.value.message
    assert e.value.hint == "use dp16, or pass 8 devices"
    with pytest.raises(StrategyError):
        expand(resolve_strategy("dp2tp2"), 8)
    assert expand(resolve_strategy("dp2tp2"), 4).degrees.dp == 2


def test_pipeline_with_sharding_stage2_is_refused():
    with pytest.raises(StrategyError) as e:
        resolve_strategy("tp2pp2sd2_stage2")
    assert "pipeline parallel (pp2) works only with sharding stage 1" in e.value.message
    assert e.value.hint == "use tp2pp2sd2_stage1"


def test_sep_with_context_parallel_is_refused():
    with pytest.raises(StrategyError, match="segment parallel and context parallel exclude each other"):
        resolve_strategy("sep2cp2")


def test_unknown_overlap_option_lists_allowed_and_suggests():
    with pytest.raises(StrategyError) as e:
        _strategy("tp2", overlap={"tensor_parallel": ["enable_mp_async_allreduc"]})
    assert "Did you mean 'enable_mp_async_allreduce'?" in e.value.message
    assert "enable_mp_skip_c_identity" in e.value.hint


@pytest.mark.parametrize(
    "name,sections,fragment",
    [
        ("dp2", {"precision": {"dtype": "fp32", "master_grad": True}}, "master_grad needs bf16 or fp16"),
        ("dp2", {"kernels": {"flash_attention": True}}, "flash_attention needs bf16 or fp16"),
        ("sd2_stage1", {"precision": {"dtype": "bf16"}, "overlap": {"sharding": ["split_param"]}}, "split_param"),
        ("sd2_stage1", {"overlap": {"sharding": ["enable_stage2_overlap"]}}, "needs sharding stage 2"),
        ("sd2_stage2", {"overlap": {"sharding": ["enable_stage1_broadcast_overlap"]}}, "needs sharding stage 1"),
        ("tp2", {"overlap": {"data_parallel": ["gradient_sync_after_accumulate"]}}, "only in pure data parallel"),
        (
            "pp2",
            {"precision": {"dtype": "bf16"}, "overlap": {"pipeline_parallel": ["enable_sharding_comm_overlap"]}},
            "enable_sharding_comm_overlap needs precision.master_grad",
        ),
        ("tp2_rc", {"recompute": {"granularity": "core_attn"}}, "contradicts the name's recompute suffix"),
    ],
)
def test_paddlenlp_rejections_are_caught_early(name, sections, fragment):
    with pytest.raises(StrategyError) as e:
        _strategy(name, **sections)
    assert fragment in e.value.message


@pytest.mark.parametrize(
    "sections,expected",
    [
        (
            {"batch": {"micro_batch_size": 0}},
            "test.yaml: batch.micro_batch_size: input should be greater than or equal to 1 (got 0)",
        ),
        ({"batch": {"micro_batch_size": "two"}}, "test.yaml: batch.micro_batch_size: input should be a valid integer"),
        (
            {"precision": {"dtype": "bf8"}},
            "test.yaml: precision.dtype: input should be 'bf16', 'fp16' or 'fp32' (got 'bf8')",
        ),
        (
            {"batch": {"micro_batch": 2}},
            "test.yaml: unknown key 'batch.micro_batch' (did you mean 'micro_batch_size'?)",
        ),
        ({"recompute": {"granularity": "selective"}}, "test.yaml: recompute.granularity: input should be"),
        ({"bacth": {}}, "test.yaml: unknown key 'bacth'; allowed: description, recompute"),
    ],
)
def test_schema_errors_are_one_line_with_the_key_path(sections, expected):
    with pytest.raises(ConfigError) as e:
        _strategy("dp2", **sections)
    assert e.value.message.startswith(expected), e.value.message
    assert "\n" not in e.value.message


def test_degrees_in_a_preset_are_refused_as_said_by_the_name():
    with pytest.raises(StrategyError, match="'parallel' is said by the strategy name"):
        _strategy("dp2", parallel={"tp": 2})


def test_options_without_effect_warn():
    with pytest.warns(StrategyWarning, match="has no effect without tp > 1"):
        _strategy("dp2", overlap={"tensor_parallel": ["enable_mp_async_allreduce"]})


def test_name_recompute_suffix_sets_granularity_and_preset_may_add_selective_layers():
    s = _strategy("tp2_rc", recompute={"no_recompute_layers": [3, 1]})
    ta = expand(s, 2).training_args
    assert (ta["recompute"], ta["recompute_granularity"], ta["no_recompute_layers"]) == (True, "full", [1, 3])
