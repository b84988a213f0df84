"""Base profiles: every strategy name runs well — a name without a preset inherits the device kind's base profile
and a planner-chosen batch that fits; plan says where each setting came from; a login node checks a GPU job."""

from __future__ import annotations

import json

import pytest
import yaml

from llmpt.resolve import RunRequest, resolve_plan
from llmpt.strategies.presets import base_profile, list_presets, presets_dir

UNLISTED = ["tp2_rc", "tp2sd4_stage1_rc", "tp4sd2_stage2", "sd8_stage2_offload", "tp2pp2_rc", "tp4_rc", "sd8_stage3_rc"]


@pytest.mark.parametrize("name", UNLISTED)
def test_a_name_without_preset_gets_the_gpu_base_profile_and_a_batch_that_fits(name):
    assert not (presets_dir() / f"{name}.yaml").exists()
    p = resolve_plan(RunRequest(model="llama2-7b", strategy=name, device_type="A100-80G", local=False))
    s = p.strategy
    assert (s.precision.dtype, s.precision.amp_level, s.precision.master_grad) == ("bf16", "O2", True)
    assert s.kernels.flash_attention and s.kernels.fused_rms_norm and s.kernels.fused_rope
    assert p.estimate.fits is True
    assert p.sources["precision.dtype"] == "base profile (gpu)"
    assert p.sources["batch.micro_batch_size"].startswith("planner: fastest fitting split on A100-80G")
    # the family's global batch is kept: micro batch x accumulation x data ranks
    per_rank = s.batch.micro_batch_size * s.batch.grad_accum
    assert per_rank * p.expansion.degrees.data_degree >= p.expansion.degrees.data_degree


def test_recompute_costs_what_recompute_costs_not_twenty_times():
    tp2, rc = (
        resolve_plan(RunRequest(model="llama2-7b", strategy=n, device_type="A100-80G", local=False)).estimate
        for n in ("tp2", "tp2_rc")
    )
    assert 0.6 < rc.tokens_per_card_per_sec / tp2.tokens_per_card_per_sec < 1.0


def test_cpu_base_profile_is_fp32_without_gpu_kernels():
    p = resolve_plan(RunRequest(model="llama-tiny", strategy="tp2_rc", device="cpu", local=False))
    s = p.strategy
    assert s.precision.dtype == "fp32" and not s.precision.master_grad
    assert not (s.kernels.flash_attention or s.kernels.fused_rms_norm or s.kernels.fused_rope)
    assert p.sources["precision.dtype"] == "base profile (cpu)"


def test_fp32_set_by_the_user_turns_the_base_profiles_amp_settings_off():
    p = resolve_plan(
        RunRequest(model="llama2-7b", strategy="tp2_rc", set_items=("strategy.precision.dtype=fp32",), local=False)
    )
    assert p.strategy.precision.dtype == "fp32" and not p.strategy.precision.master_grad
    assert not p.strategy.kernels.flash_attention
    assert p.sources["precision.dtype"] == "--set strategy.precision.dtype"
    assert "off under fp32" in p.sources["precision.master_grad"]


def test_each_source_is_named(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("strategy: {batch: {grad_accum: 4}}\n")
    p = resolve_plan(
        RunRequest(
            model="llama2-7b",
            strategy="tp2sd4_stage2",
            config_file=str(cfg),
            set_items=("strategy.batch.micro_batch_size=1",),
            local=False,
        )
    )
    assert p.sources["batch.micro_batch_size"] == "--set strategy.batch.micro_batch_size"
    assert p.sources["batch.grad_accum"] == f"{cfg}: strategy.batch.grad_accum"
    assert p.sources["precision.master_grad"] == "preset tp2sd4_stage2"
    assert p.sources["precision.dtype"] == "base profile (gpu)"
    assert p.sources["parallel.tp"] == "name"


def test_plan_json_and_text_show_the_sources(cli):
    r = cli("plan", "llama2-7b", "--strategy", "tp2_rc", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["sources"]["kernels.flash_attention"] == "base profile (gpu)"
    r = cli("plan", "llama2-7b", "--strategy", "tp2_rc")
    assert "base profile (gpu)" in r.stdout and "planner: fastest fitting split" in " ".join(r.stdout.split())


@pytest.mark.parametrize("name", list_presets())
def test_a_preset_states_only_what_its_base_profile_does_not(name):
    base = base_profile("gpu")
    own = yaml.safe_load((presets_dir() / f"{name}.yaml").read_text())
    for section, values in own.items():
        if isinstance(values, dict):
            for key, value in values.items():
                assert base.get(section, {}).get(key, object()) != value, (name, section, key)


def test_a_login_node_checks_a_gpu_job_against_the_declared_card(cli, tmp_path):
    # no GPU here: the job is still checked, against the seed's card, and said so
    r = cli("train", "llama2-13b", "--strategy", "dp1", "--device", "gpu", "--data", str(tmp_path / "d"), "--dry-run")
    assert r.exit_code == 2 and "does not fit" in r.stderr and "A100-80G" in r.stderr
    r = cli("plan", "llama2-7b", "--strategy", "tp2sd4_stage2", "--json")
    assert "estimate for A100-80G" in " ".join(json.loads(r.stdout)["notes"])


def test_a_cpu_refusal_of_a_gpu_sized_job_says_device_gpu(cli, tmp_path):
    r = cli("train", "llama2-7b", "--strategy", "tp2", "--device", "cpu", "--data", str(tmp_path / "d"))
    assert r.exit_code == 2 and "does not fit" in r.stderr and "--device gpu" in r.stderr
