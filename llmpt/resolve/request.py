"""What the user asked for, before anything is checked: one request for train, plan, launch-script and rehearse,
and the layering of `--config FILE` and `--set` on top of the named flags.

Precedence: defaults < preset < --config FILE < named flags < --set a.b=v. The layers are merged here and validated
once, by the schema of the section they fill (resolve.run)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpt.errors import ConfigError, LlmptError
from llmpt.models.registry import ModelSpec
from llmpt.overrides import deep_merge, parse_set
from llmpt.strategies.presets import read_yaml

DEFAULT_SEQ_LEN = 4096  # the seed table's sequence length
TINY_SEQ_LEN = 128  # tiny models are CPU rehearsal models: short sequences keep a CPU step fast
# the README's main job: a tiny llama on the shipped corpus, 2 CPU ranks, data parallel
DEMO = {"model": "llama-tiny", "strategy": "dp2", "device": "cpu", "max_steps": 200}
DEMO_TRAIN = {"learning_rate": 3e-3, "min_learning_rate": 3e-4, "warmup_steps": 20}
# one micro batch of 8 per rank and step: the dp2 preset's 1 x 8 accumulation is for GPUs, not 2 CPU cores
DEMO_STRATEGY = {"batch": {"micro_batch_size": 8, "grad_accum": 1}}
CONFIG_KEYS = ("train", "strategy", "data", "model", "seq_len")


@dataclass(frozen=True)
class RunRequest:
    """What the user typed (None = not given). The CLI's shared options (llmpt/cli/options.py) fill it."""

    model: str | ModelSpec | None = None
    strategy: str | None = None
    data: tuple[str, ...] = ()
    device: str | None = None
    gpus: str | None = None
    nnodes: int = 1
    master: str | None = None
    node_rank: int | None = None
    seq_len: int | None = None
    max_steps: int | None = None
    output_dir: str | None = None
    init_from: str | None = None
    seed: int | None = None
    save_steps: int | None = None
    resume: bool = False
    overwrite: bool = False
    config_file: str | None = None
    set_items: tuple[str, ...] = ()
    allow_partial: bool = False
    device_type: str | None = None
    force: bool = False
    # True: this machine starts the job and hosts its rendezvous (train). False: the job runs elsewhere (plan,
    # launch-script): no local device detection decides for it, no local port is checked.
    local: bool = True

    @property
    def demo(self) -> bool:
        """`llmpt train` with no model: the README's main job."""
        return self.model is None

    @property
    def model_name(self) -> str:
        m = self.model or DEMO["model"]
        return m.id if isinstance(m, ModelSpec) else m


# the named flags that fill a settings key, as the user typed them
FLAG_KEYS = {
    ("train", "max_steps"): "--max-steps",
    ("train", "seed"): "--seed",
    ("train", "save_steps"): "--save-steps",
}


@dataclass(frozen=True)
class Layers:
    """--config FILE, the named flags and --set merged into sections; `source` names the layer to blame, and
    `origin(path)` the layer a single key came from (the flag or file the user typed, or the demo's default)."""

    sections: dict[str, Any]
    source: str
    config_file: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    sets: dict[str, Any] = field(default_factory=dict)
    demo: dict[str, Any] = field(default_factory=dict)

    def section(self, key: str) -> dict[str, Any]:
        value = self.sections.get(key) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.source}: {key}: expected a mapping of keys to values (got {value!r})")
        return value

    def origin(self, *path: str) -> str | None:
        """Where the value at `path` (e.g. "strategy", "batch", "micro_batch_size") came from; None: not set."""
        dotted = ".".join(path)
        if _has(self.sets, path):
            return f"--set {dotted}"
        if tuple(path) in FLAG_KEYS and _has(self.flags, path):
            return FLAG_KEYS[tuple(path)]
        if _has(self.config, path):
            return f"{self.config_file}: {dotted}"
        if _has(self.demo, path):
            return "the demo's default"
        return None


def _has(tree: dict[str, Any], path: tuple[str, ...] | list[str]) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def read_layers(req: RunRequest) -> Layers:
    config: dict[str, Any] = {}
    source = "--set"
    if req.config_file:
        config = read_yaml(Path(req.config_file))
        unknown = sorted(set(config) - set(CONFIG_KEYS))
        if unknown:
            raise ConfigError(f"{req.config_file}: unknown key '{unknown[0]}'; allowed: {', '.join(CONFIG_KEYS)}")
        source = req.config_file
    named = {"max_steps": req.max_steps, "seed": req.seed, "save_steps": req.save_steps}
    flags = {"train": {k: v for k, v in named.items() if v is not None}}
    sets = parse_set(list(req.set_items))
    layers = deep_merge(deep_merge(config, flags), sets)
    if req.set_items:
        source = "--set"
    demo: dict[str, Any] = {}
    if req.demo:
        demo = {"train": {"max_steps": DEMO["max_steps"], **DEMO_TRAIN}, "strategy": DEMO_STRATEGY}
        layers = deep_merge(demo, layers)
    return Layers(layers, source, req.config_file, config, flags, sets, demo)


def strategy_name(req: RunRequest) -> str:
    if req.strategy:
        return req.strategy
    if req.demo:
        return DEMO["strategy"]
    raise LlmptError("--strategy is required", "e.g. --strategy tp2sd4_stage2 (see: llmpt presets list)")


def device_of(req: RunRequest) -> str:
    """--device, else: the demo on CPU; a job started here on this machine's GPU if it has one, else its CPU; a
    job described for elsewhere (plan, launch-script) on GPUs."""
    if req.device is not None:
        if req.device not in ("gpu", "cpu"):
            raise LlmptError(f"--device {req.device}: allowed: gpu, cpu")
        return req.device
    if req.demo:
        return DEMO["device"]
    if not req.local or req.device_type:
        return "gpu"
    # no paddle import here: a visible NVIDIA device node is enough to prefer the GPU
    return "gpu" if os.path.exists("/dev/nvidia0") else "cpu"


def seq_len_of(req: RunRequest, layers: Layers, spec: ModelSpec) -> int:
    """--seq-len, else the config file's, else 128 for tiny models and the seed's 4096 for real ones."""
    value = req.seq_len if req.seq_len is not None else layers.sections.get("seq_len")
    if value is None:
        return TINY_SEQ_LEN if spec.id.endswith("-tiny") else DEFAULT_SEQ_LEN
    flag = "--seq-len" if req.seq_len is not None else f"{layers.source}: seq_len"
    if isinstance(value, bool) or not isinstance(value, int):
        raise LlmptError(f"{flag} {value!r}: must be an integer")
    if value < 8:
        raise LlmptError(f"{flag} {value}: must be >= 8")
    return value
