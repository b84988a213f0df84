"""`llmpt doctor` for real on this CPU machine: probe subprocess, real numerics, 2 gloo processes."""

from __future__ import annotations

import pytest

pytest.importorskip("paddle")
pytestmark = [pytest.mark.paddle, pytest.mark.slow]


def test_doctor_on_cpu_passes_with_real_measurements(llmpt, tmp_path):
    out = llmpt.json("doctor", "--json", "-o", tmp_path)
    checks = {c["name"]: c for c in out["checks"]}
    assert out["ok"] is True
    assert checks["mode"]["detail"] == "CPU mode: no GPU visible to paddle"
    assert checks["gloo collectives"]["status"] == "ok" and "3, 3 = 3 on both" in checks["gloo collectives"]["detail"]
    n = out["facts"]["cpu_numerics"]
    assert n["ones_plus_ones"] == 2.0 and abs(n["randn_std"] - 1) < 0.02 and n["matmul_rel_err"] < 1e-5
    assert out["facts"]["paddle"]["version"] == "3.3.1" and out["facts"]["paddle"]["gpu_build"] is False
    assert checks["data index helper"]["status"] == "ok"
    assert set(checks) >= {"python", "paddle", "build", "paddlenlp", "shared memory", "free disk"}
