"""Golden expansions: every shipped preset at its smallest world size, pinned field by field.

Regenerate after an intended change with LLMPT_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmpt.strategies.expand import expand
from llmpt.strategies.presets import list_presets, resolve_strategy

GOLDEN = Path(__file__).parent / "golden" / "expansions.json"


def _expansions() -> dict[str, dict]:
    out = {}
    for name in list_presets():
        s = resolve_strategy(name)
        world = s.parallel.dims.min_ranks
        e = expand(s, world)
        out[f"{name}@{world}"] = {
            "hybrid_configs": e.hybrid_configs,
            "pipeline_configs": e.pipeline_configs,
            "training_args": e.training_args,
            "model_args": e.model_args,
        }
    return out


def test_every_preset_matches_golden():
    current = _expansions()
    if os.environ.get("LLMPT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert sorted(current) == sorted(golden), "presets were added or removed: regenerate the golden file"
    for key in golden:
        assert current[key] == golden[key], key


def test_seed_configuration_matches_paddlenlp_config_file():
    # llm/llama/pretrain-llama_7b-tp2sd4_stage2.json, the configuration behind the seed's table
    ta = expand(resolve_strategy("tp2sd4_stage2"), 8).training_args
    expected = {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 8,
        "tensor_parallel_degree": 2,
        "pipeline_parallel_degree": 1,
        "sharding": "stage2",
        "virtual_pp_degree": 1,
        "sequence_parallel": False,
        "use_flash_attention": True,
        "use_fused_rms_norm": True,
        "use_fused_rope": True,
        "bf16": True,
        "fp16_opt_level": "O2",
        "recompute": False,
        "recompute_granularity": "full",
    }
    assert {k: ta[k] for k in expected} == expected
    # llm/baichuan/pretrain-baichuan2_13b-sd8_stage2.json
    ta = expand(resolve_strategy("sd8_stage2"), 8).training_args
    assert (ta["per_device_train_batch_size"], ta["gradient_accumulation_steps"], ta["recompute"]) == (1, 8, True)
    assert (ta["sharding"], ta["sharding_parallel_degree"], ta["tensor_parallel_degree"]) == ("stage2", 8, 1)


def test_issue_example_qwen_7b_tp2sd4_stage2():
    e = expand(resolve_strategy("tp2sd4_stage2"), 8)
    hc = e.hybrid_configs
    assert (hc["mp_degree"], hc["sharding_degree"], hc["dp_degree"], hc["pp_degree"]) == (2, 4, 1, 1)
    assert e.training_args["sharding"] == "stage2"


@pytest.mark.parametrize("world,dp", [(8, 1), (16, 2), (64, 8)])
def test_dp_is_derived_when_the_name_leaves_it_out(world, dp):
    e = expand(resolve_strategy("tp2sd4_stage2"), world)
    assert e.degrees.dp == dp
    assert e.hybrid_configs["dp_degree"] == dp


RUN_GOLDEN = Path(__file__).parent / "golden" / "run_training_args.json"


def test_run_training_args_match_golden():
    """The whole TrainingArguments of a run (strategy + schedule + bookkeeping): every PaddleNLP key llmpt sets."""
    from llmpt.run_config import TrainSettings
    from llmpt.strategies.expand import run_training_args

    s = resolve_strategy("tp2sd4_stage2")
    train = TrainSettings(max_steps=100, eval_steps=10, save_steps=0, lr_scheduler="linear")
    current = run_training_args(expand(s, 8), s, train, "runs/x", "gpu")
    if os.environ.get("LLMPT_UPDATE_GOLDEN") == "1":
        RUN_GOLDEN.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert current == json.loads(RUN_GOLDEN.read_text())


def test_expert_parallel_is_use_expert_parallel_and_paddlenlps_expert_topology():
    """ep: PaddleNLP 3.0.0b4's MoE layer splits experts over the data-parallel group; the Trainer's
    use_expert_parallel keeps their gradients out of the dp all-reduce and, in its hybrid branch, reorders the
    topology to order[1:-1] + [dp, mp]. expert_parallel_degree is never set (> 1 would force dp 1)."""
    hybrid = expand(resolve_strategy("dp2tp2ep2"), 4)
    assert hybrid.training_args["use_expert_parallel"] is True
    assert "expert_parallel_degree" not in hybrid.training_args
    assert hybrid.hybrid_configs["order"] == ["pp", "sharding", "sep", "dp", "mp"]
    assert (hybrid.hybrid_configs["dp_degree"], hybrid.hybrid_configs["mp_degree"]) == (2, 2)
    pure = expand(resolve_strategy("dp2ep2"), 2)
    assert pure.training_args["use_expert_parallel"] is True
    assert pure.hybrid_configs["order"] == ["dp", "pp", "sharding", "sep", "mp"]  # no hybrid branch: fleet's default
    assert expand(resolve_strategy("dp2"), 2).training_args["use_expert_parallel"] is False
