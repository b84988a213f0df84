"""The accelerator table (devices.yaml) and `--device-type` lookup."""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from llmpt.errors import LlmptError
from llmpt.fsutil import load_shipped_yaml

DEVICES_PATH = Path(__file__).with_name("devices.yaml")


class Device(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    aliases: tuple[str, ...] = ()
    memory_mb: float = Field(gt=0, description="Total device memory, MiB (as nvidia-smi reports it).")
    peak_tflops: dict[str, float] = Field(description="Dense tensor-core peak per compute dtype.")
    link_gbs: float = Field(gt=0, description="Per-device one-direction bandwidth inside a node, GB/s.")
    hbm_gbs: float = Field(gt=0, description="Device memory bandwidth from the datasheet, GB/s.")
    expected_hfu: float = Field(
        gt=0, le=1, description="Share of peak the matmuls reach (memory-bound kernels are timed apart)."
    )
    calibrated: bool = Field(description="expected_hfu fitted on measured runs (else an assumption).")
    source: str


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


@lru_cache(maxsize=1)
def all_devices() -> tuple[Device, ...]:
    data = load_shipped_yaml(DEVICES_PATH)
    return tuple(Device.model_validate(d) for d in data["devices"])


def resolve_device(name: str) -> Device:
    index = {_key(a): d for d in all_devices() for a in (d.name, *d.aliases)}
    found = index.get(_key(name))
    if found is None:
        close = difflib.get_close_matches(_key(name), list(index), n=1)
        raise LlmptError(
            f"--device-type {name}: unknown device; known: {', '.join(d.name for d in all_devices())}",
            f"did you mean {index[close[0]].name}?" if close else "llmpt plan --help lists the device table",
        )
    return found


def detect_device() -> Device | None:
    """The local GPU model from nvidia-smi (no paddle import), if it is one the table knows."""
    smi = shutil.which("nvidia-smi")
    if not smi or os.environ.get("LLMPT_NO_DETECT"):
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return match_gpu_name(out.splitlines()[0]) if out.strip() else None


def match_gpu_name(line: str) -> Device | None:
    """'NVIDIA A100-SXM4-80GB, 81920' -> A100-80G: the chip named in the string, the size from the memory."""
    name, _, mem = line.partition(",")
    name = _key(name).removeprefix("nvidia-").removeprefix("geforce-")
    try:
        memory = float(mem)
    except ValueError:
        memory = 0.0
    tokens = set(name.split("-"))
    chips = [d for d in all_devices() if {t for t in _key(d.name).split("-") if not t[:-1].isdigit()} <= tokens]
    if not chips:
        return None
    return min(chips, key=lambda d: abs(d.memory_mb - memory))
