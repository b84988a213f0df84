"""What `llmpt doctor` measures with paddle imported: `python -m llmpt.doctor.probe facts` prints one JSON
object; `python -m paddle.distributed.launch --nproc_per_node 2 llmpt/doctor/probe.py gloo OUT_DIR` checks collectives.

Facts, not verdicts: llmpt/doctor/__init__.py judges them (and its tests judge recorded facts from GPU machines).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except Exception as e:  # noqa: BLE001 - a broken install is a fact to report
        return f"error: {type(e).__name__}: {e}"


def numerics(place: str) -> dict:
    """ones + ones, randn's spread and a float32 matmul against numpy's float64, on one device. A Paddle build
    without kernels for the card's architecture returns zeros for all three."""
    import paddle

    paddle.set_device(place)
    two = paddle.ones([64, 64], dtype="float32") + paddle.ones([64, 64], dtype="float32")
    paddle.seed(1234)
    r = paddle.randn([65536], dtype="float32").numpy()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
    got = paddle.matmul(paddle.to_tensor(a, dtype="float32"), paddle.to_tensor(b, dtype="float32")).numpy()
    want = a @ b
    return {
        "ones_plus_ones": float(two.numpy().mean()),
        "randn_std": float(r.std()),
        "matmul_rel_err": float(np.abs(got - want).max() / np.abs(want).max()),
    }


def fused_ops(on_gpu: bool) -> dict:
    """The kernels behind the presets' fused options: importable everywhere; run once on a GPU."""
    out = {}
    checks = {
        "fused_rms_norm": "paddle.incubate.nn.functional.fused_rms_norm",
        "fused_rope": "paddle.incubate.nn.functional.fused_rotary_position_embedding",
        "flash_attention": "paddle.nn.functional.flash_attention.flash_attention",
    }
    for name, path in checks.items():
        mod, _, attr = path.rpartition(".")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except Exception as e:  # noqa: BLE001
            out[name] = f"error: {type(e).__name__}: {e}"
            continue
        out[name] = "importable"
        if on_gpu:
            try:
                _run_fused(name, fn)
                out[name] = "ran"
            except Exception as e:  # noqa: BLE001
                out[name] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return out


def _run_fused(name: str, fn) -> None:
    import paddle

    x = paddle.randn([2, 8, 4, 64], dtype="float32").astype("bfloat16")
    if name == "fused_rms_norm":
        fn(x.reshape([16, 256]), paddle.ones([256], dtype="bfloat16"), None, 1e-6, 1)
    elif name == "fused_rope":
        fn(x, x, None)
    else:
        fn(x, x, x, causal=True)


def gpu_facts() -> list[dict]:
    import paddle

    out = []
    for i in range(paddle.device.cuda.device_count()):
        p = paddle.device.cuda.get_device_properties(i)
        facts = {
            "index": i,
            "name": p.name,
            "memory_mb": p.total_memory / 2**20,
            "capability": [p.major, p.minor],
        }
        try:
            facts["numerics"] = numerics(f"gpu:{i}")
        except Exception as e:  # noqa: BLE001
            facts["numerics"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        out.append(facts)
    return out


def facts() -> dict:
    d: dict = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        import paddle
    except Exception as e:  # noqa: BLE001
        d["paddle"] = {"error": f"{type(e).__name__}: {e}"}
        return d
    gpu = paddle.device.is_compiled_with_cuda()
    v = paddle.version
    archs = None
    for getter in ("cuda_archs", "compiled_cuda_archs"):
        try:
            archs = [int(a) for a in getattr(v, getter)()] or None
            break
        except Exception:  # noqa: BLE001, S112 - older builds lack one or both
            continue
    d["paddle"] = {
        "version": paddle.__version__,
        "commit": v.commit,
        "gpu_build": gpu,
        "cuda": v.cuda() if gpu else None,
        "cudnn": v.cudnn() if gpu else None,
        "nccl": str(v.nccl()) if gpu and hasattr(v, "nccl") else None,
        "cuda_archs": archs,
    }
    d["paddlenlp"] = _version("paddlenlp")
    d["gpus"] = gpu_facts() if gpu else []
    d["cpu_numerics"] = numerics("cpu")
    d["fused_ops"] = fused_ops(on_gpu=bool(d["gpus"]))
    try:
        from fast_dataindex import helpers  # PaddleNLP's C++ sample-index builder (causal_dataset.py)

        d["data_helper"] = "importable" if hasattr(helpers, "build_sample_idx") else "no build_sample_idx"
    except Exception as e:  # noqa: BLE001
        d["data_helper"] = f"error: {type(e).__name__}: {e}"
    return d


def gloo(out_dir: str) -> None:
    """One rank of the collectives check: all_reduce(rank + 1) over gloo, written to OUT_DIR/gloo<rank>.json."""
    import paddle
    import paddle.distributed as dist

    paddle.set_device("cpu")
    dist.init_parallel_env()
    rank, world = dist.get_rank(), dist.get_world_size()
    t = paddle.to_tensor([float(rank + 1)])
    dist.all_reduce(t)
    Path(out_dir, f"gloo{rank}.json").write_text(json.dumps({"rank": rank, "world": world, "sum": float(t.item())}))
    dist.barrier()


if __name__ == "__main__":
    if sys.argv[1:2] == ["facts"]:
        sys.stdout.write(json.dumps(facts()) + "\n")
        sys.stdout.flush()
        os._exit(0)
    elif sys.argv[1:2] == ["gloo"] and len(sys.argv) == 3:
        gloo(sys.argv[2])
        sys.stdout.flush()
        os._exit(0)
    sys.exit("usage: python -m llmpt.train.probe facts | probe.py gloo OUT_DIR")
