"""llmpt doctor's verdicts on recorded facts: the GPU branch without a GPU (the CPU branch runs for real in
tests/integration/test_doctor.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmpt.doctor import judge

FACTS = Path(__file__).parent / "doctor_facts"
GiB = 2**30


def _load(name):
    return json.loads((FACTS / name).read_text())


def _by_name(checks):
    return {c.name: c for c in checks}


def test_h100_with_pypi_paddle_262_fails_on_zeros_not_on_run_check():
    checks = _by_name(judge(_load("h100_pypi_paddle262.json"), 500 * GiB, 64 * GiB, None))
    for i in (0, 1):
        c = checks[f"gpu {i}"]
        assert c.status == "fail"
        assert "NVIDIA H100 80GB HBM3, 81559 MB, sm_90 (planner: H100-80G)" in c.detail
        assert "no kernels for sm_90" in c.detail and "ones+ones=0" in c.detail
    assert checks["paddle"].status == "fail" and "needs paddle >= 3.0" in checks["paddle"].detail
    assert checks["build"].detail.startswith("GPU build: CUDA 11.8, cuDNN 8.9.7, NCCL 2.15.5")
    assert checks["fused_rms_norm"].status == "warn"
    assert "--set strategy.kernels.fused_rms_norm=false" in checks["fused_rms_norm"].detail
    assert checks["fused_rope"].status == "ok" and checks["flash_attention"].status == "warn"
    assert "gloo collectives" not in checks and "mode" not in checks  # GPU machine: no CPU-mode checks


def test_a100_with_paddle_3_passes_everything():
    checks = judge(_load("a100_paddle3.json"), 500 * GiB, 64 * GiB, None)
    assert [c.status for c in checks] == ["ok"] * len(checks), [(c.name, c.detail) for c in checks if c.status != "ok"]
    gpu = _by_name(checks)["gpu 0"]
    assert "sm_80 (planner: A100-80G)" in gpu.detail and "rel. err 4.0e-04" in gpu.detail


def test_unknown_card_and_arch_outside_the_build_warn():
    facts = _load("a100_paddle3.json")
    facts["gpus"][0] |= {"name": "NVIDIA T4", "memory_mb": 15360.0, "capability": [7, 5]}
    gpu = _by_name(judge(facts, None, None, None))["gpu 0"]
    assert gpu.status == "warn" and "sm_75 not in the build's list" in gpu.detail


def test_wrong_numbers_without_zeros_are_still_a_failure():
    facts = _load("a100_paddle3.json")
    facts["gpus"][0]["numerics"]["matmul_rel_err"] = 0.3
    gpu = _by_name(judge(facts, None, None, None))["gpu 0"]
    assert gpu.status == "fail" and "wrong results" in gpu.detail


@pytest.mark.parametrize(
    "change, name, status, fragment",
    [
        ({"python": "3.9.18"}, "python", "fail", "supported 3.10 to 3.12"),
        ({"python": "3.13.1"}, "python", "warn", "3.13.1"),
        ({"paddlenlp": "error: ImportError: numpy"}, "paddlenlp", "fail", "pip install paddlenlp==3.0.0b4"),
        ({"paddlenlp": "3.0.0b3"}, "paddlenlp", "warn", "tested: 3.0.0b4"),
        ({"data_helper": "error: ModuleNotFoundError: fast_dataindex"}, "data index helper", "fail", "pip install"),
    ],
)
def test_version_and_helper_checks(change, name, status, fragment):
    facts = _load("a100_paddle3.json") | change
    c = _by_name(judge(facts, None, None, None))[name]
    assert c.status == status and fragment in c.detail


def test_cpu_machine_checks_gloo_shm_and_disk():
    facts = _load("a100_paddle3.json") | {"gpus": []}
    facts["paddle"] = facts["paddle"] | {"gpu_build": False, "version": "3.2.0"}
    checks = _by_name(judge(facts, 3 * GiB, 64 * 2**20, {"sums": [3.0, 0.0]}))
    assert checks["mode"].detail == "CPU mode: no GPU visible to paddle"
    assert (
        checks["gloo collectives"].status == "fail" and "3, 0 (expected 3 on both)" in checks["gloo collectives"].detail
    )
    assert checks["shared memory"].status == "warn" and "--shm-size" in checks["shared memory"].detail
    assert checks["free disk"].status == "warn" and "3 GiB free" in checks["free disk"].detail
    assert checks["paddle"].status == "warn" and "written against 3.3.1" in checks["paddle"].detail
    assert checks["fused_rope"].status == "ok" and "GPU-only" in checks["fused_rope"].detail
