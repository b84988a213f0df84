"""`llmpt doctor`: can this machine run a long job? Facts come from llmpt/doctor/probe.py (paddle imported in a
subprocess); the verdicts here are pure functions of those facts, so recorded facts from GPU machines test them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmpt import versions
from llmpt.strategies.schema import GPU_KERNELS

PYTHON_RANGE = ((3, 10), (3, 13))  # [low, high)
PADDLE_TESTED = versions.PADDLE
PADDLENLP_TESTED = versions.PADDLENLP
MIN_SHM_BYTES = 1 << 30
MIN_FREE_DISK_BYTES = 50 << 30  # a 7B checkpoint with optimizer state is ~80 GB; less than 50 GB free is a warning
KERNELS = GPU_KERNELS
PROBE = Path(__file__).with_name("probe.py")


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str


def _ver(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split("."):
        digits = "".join(c for c in p if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not p.isdigit():
            break
    return tuple(parts)


def _numerics_ok(n: dict) -> tuple[bool, str]:
    if "error" in n:
        return False, n["error"]
    ok = n["ones_plus_ones"] == 2.0 and 0.95 < n["randn_std"] < 1.05 and n["matmul_rel_err"] < 1e-2
    return ok, (
        f"ones+ones={n['ones_plus_ones']:g}, randn std={n['randn_std']:.3f}, "
        f"matmul vs float64 rel. err {n['matmul_rel_err']:.1e}"
    )


def judge(facts: dict, free_disk_bytes: int | None, shm_bytes: int | None, gloo: dict | None) -> list[Check]:
    """Every check, from measured facts alone."""
    out: list[Check] = []
    py = _ver(facts.get("python", "0"))
    lo, hi = PYTHON_RANGE
    out.append(
        Check(
            "python",
            "ok" if lo <= py[:2] < hi else ("fail" if py[:2] < lo else "warn"),
            f"{facts.get('python')} (supported {lo[0]}.{lo[1]} to {hi[0]}.{hi[1] - 1})",
        )
    )
    p = facts.get("paddle", {})
    if "error" in p:
        out.append(Check("paddle", "fail", f"cannot import paddle: {p['error']}; pip install -e '.[train]'"))
        return out
    gpu_build = p.get("gpu_build")
    if _ver(p["version"])[:1] < (3,):
        out.append(Check("paddle", "fail", f"{p['version']}: PaddleNLP 3 needs paddle >= 3.0"))
    elif p["version"] != PADDLE_TESTED and not gpu_build:
        out.append(
            Check(
                "paddle",
                "warn",
                f"{p['version']}: llmpt's CPU backend (tp/pp/sharding 2-3 on CPU) is written against {PADDLE_TESTED}",
            )
        )
    else:
        out.append(Check("paddle", "ok", f"{p['version']} (commit {p.get('commit', '?')[:8]})"))
    if gpu_build:
        archs = p.get("cuda_archs")
        out.append(
            Check(
                "build",
                "ok",
                f"GPU build: CUDA {p.get('cuda')}, cuDNN {p.get('cudnn')}, NCCL {p.get('nccl')}"
                + (f", kernels for sm_{', sm_'.join(str(a) for a in archs)}" if archs else ""),
            )
        )
    else:
        out.append(Check("build", "ok", "CPU build: llmpt runs CPU ranks over gloo (rehearsals, tiny models)"))
    nlp = facts.get("paddlenlp")
    if not nlp or nlp.startswith("error"):
        out.append(Check("paddlenlp", "fail", f"{nlp or 'not installed'}; pip install paddlenlp=={PADDLENLP_TESTED}"))
    else:
        out.append(
            Check("paddlenlp", "ok" if nlp == PADDLENLP_TESTED else "warn", f"{nlp} (tested: {PADDLENLP_TESTED})")
        )
    out += _gpu_checks(facts.get("gpus", []), p.get("cuda_archs"))
    ok, detail = _numerics_ok(facts.get("cpu_numerics", {"error": "not measured"}))
    out.append(Check("numerics cpu", "ok" if ok else "fail", detail))
    out += _kernel_checks(facts.get("fused_ops", {}), bool(facts.get("gpus")))
    helper = facts.get("data_helper", "not measured")
    out.append(
        Check(
            "data index helper",
            "ok" if helper == "importable" else "fail",
            "fast_dataindex (PaddleNLP's C++ sample index builder) " + helper
            if helper == "importable"
            else f"{helper}; pip install fast_dataindex",
        )
    )
    for name, have, low, what, why in (
        ("shared memory", shm_bytes, MIN_SHM_BYTES, "/dev/shm {:.1f} GiB", "data loader workers and NCCL need more: "
         "docker --shm-size"),
        ("free disk", free_disk_bytes, MIN_FREE_DISK_BYTES, "{:.0f} GiB free in the output directory",
         "a 7B checkpoint with optimizer state ~80 GB"),
    ):  # fmt: skip
        if have is not None:
            enough = have >= low
            out.append(
                Check(name, "ok" if enough else "warn", what.format(have / 2**30) + ("" if enough else f" ({why})"))
            )
    if not facts.get("gpus"):
        out.append(Check("mode", "ok", "CPU mode: no GPU visible to paddle"))
        if gloo is not None:
            sums = gloo.get("sums", [])
            good = len(sums) == 2 and all(s == 3.0 for s in sums)
            out.append(
                Check(
                    "gloo collectives",
                    "ok" if good else "fail",
                    "all_reduce between 2 local processes: "
                    + (", ".join(f"{s:g}" for s in sums) or gloo.get("error", "?"))
                    + (" (expected 3 on both)" if not good else " = 3 on both"),
                )
            )
    return out


def _gpu_checks(gpus: list[dict], archs: list[int] | None) -> list[Check]:
    from llmpt.planner.devices import match_gpu_name

    out = []
    for g in gpus:
        major, minor = g["capability"]
        sm = major * 10 + minor
        known = match_gpu_name(f"{g['name']}, {g['memory_mb']}")
        head = f"{g['name']}, {g['memory_mb']:.0f} MB, sm_{sm}" + (f" (planner: {known.name})" if known else "")
        ok, detail = _numerics_ok(g.get("numerics", {"error": "not measured"}))
        missing = archs is not None and sm not in archs and not any(a // 10 == major and a <= sm for a in archs)
        if not ok:
            why = f"the installed Paddle has no kernels for sm_{sm}" if missing or _zeros(g) else "wrong results"
            out.append(
                Check(
                    f"gpu {g['index']}",
                    "fail",
                    f"{head}: {why} ({detail}); paddle.utils.run_check() can pass on such a build; install a Paddle "
                    f"build compiled for sm_{sm}",
                )
            )
        elif missing:
            out.append(Check(f"gpu {g['index']}", "warn", f"{head}: sm_{sm} not in the build's list, runs via PTX"))
        else:
            note = "" if known else "; not in the planner's device table: pass --device-type to plan/train"
            out.append(Check(f"gpu {g['index']}", "ok" if known else "warn", f"{head}; {detail}{note}"))
    return out


def _zeros(g: dict) -> bool:
    n = g.get("numerics", {})
    return n.get("ones_plus_ones") == 0.0 or n.get("randn_std") == 0.0


def _kernel_checks(ops: dict, on_gpu: bool) -> list[Check]:
    out = []
    for k in KERNELS:
        state = ops.get(k, "not measured")
        if not on_gpu:
            out.append(Check(k, "ok", f"{state}; GPU-only, llmpt turns it off for CPU ranks"))
        elif state == "ran":
            out.append(Check(k, "ok", "ran on gpu 0"))
        else:
            out.append(
                Check(
                    k,
                    "warn",
                    f"{state}: the presets turn {k} on; turn it off: --set strategy.kernels.{k}=false",
                )
            )
    return out


def collect(output_dir: Path, gloo_check: bool = True) -> tuple[dict, dict | None]:
    """Run the probe (and, without GPUs, the 2-process gloo check) in subprocesses; return their facts."""
    r = subprocess.run(
        [sys.executable, "-m", "llmpt.doctor.probe", "facts"], capture_output=True, text=True, timeout=600
    )
    try:
        facts = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        facts = {"python": ".".join(map(str, sys.version_info[:3])), "paddle": {"error": r.stderr.strip()[-300:]}}
    gloo = None
    if gloo_check and not facts.get("gpus") and "error" not in facts.get("paddle", {}):
        gloo = _gloo_check()
    return facts, gloo


def _gloo_check() -> dict:
    with tempfile.TemporaryDirectory(prefix="llmpt-doctor-") as tmp:
        cmd = [
            sys.executable, "-m", "paddle.distributed.launch", "--log_dir", f"{tmp}/logs",
            "--nproc_per_node", "2", str(PROBE), "gloo", tmp,
        ]  # fmt: skip
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return {"sums": [], "error": "timed out after 300 s"}
        sums = [json.loads(p.read_text())["sum"] for p in sorted(Path(tmp).glob("gloo*.json"))]
        return {"sums": sums} if sums else {"sums": [], "error": f"launcher exit {r.returncode}"}


def disk_facts(output_dir: Path) -> tuple[int | None, int | None]:
    probe = output_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free if probe.exists() else None
    shm = shutil.disk_usage("/dev/shm").total if os.path.isdir("/dev/shm") else None
    return free, shm


def report(checks: list[Check], facts: dict) -> dict[str, Any]:
    return {"ok": all(c.status != "fail" for c in checks), "checks": [asdict(c) for c in checks], "facts": facts}
