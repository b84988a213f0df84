"""`llmpt plan`: resolve model + strategy + topology into everything a launch would use, without starting it."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpt.errors import LlmptError
from llmpt.launch.command import Topology, build_launch_command, check_multinode, parse_devices
from llmpt.models.matrix import check_capabilities
from llmpt.models.registry import ModelSpec, padded_vocab, paddlenlp_config, resolve_model
from llmpt.models.shape import check_model_shape
from llmpt.strategies.expand import Expansion, expand
from llmpt.strategies.presets import preset_is_shipped, resolve_strategy
from llmpt.strategies.schema import Strategy
from llmpt.strategies.validate import resolve_degrees


class CapabilityWarning(UserWarning):
    """A partially supported capability the user allowed with --allow-partial."""


DEFAULT_SEQ_LEN = 4096  # the seed table's sequence length


@dataclass
class Plan:
    model: ModelSpec
    seq_len: int
    strategy: Strategy
    topology: Topology
    expansion: Expansion
    launch_command: list[str]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        e = self.expansion
        return {
            "model": {
                "id": self.model.id,
                "family": self.model.family,
                "matrix_row": self.model.matrix_row,
                "seq_len": self.seq_len,
                "vocab_size": self.model.vocab_size,
                "padded_vocab_size": padded_vocab(self.model.vocab_size),
                "config": paddlenlp_config(self.model, self.seq_len),
                "source": self.model.source,
            },
            "strategy": self.strategy.model_dump(mode="json"),
            "world_size": e.world_size,
            "nnodes": self.topology.nnodes,
            "nproc_per_node": self.topology.nproc_per_node,
            "device": self.topology.device,
            "degrees": {
                "dp": e.degrees.dp,
                "tp": e.degrees.tp,
                "pp": e.degrees.pp,
                "sharding": e.degrees.sharding,
                "sep": e.degrees.sep,
                "cp": e.degrees.cp,
            },
            "hybrid_configs": e.hybrid_configs,
            "pipeline_configs": e.pipeline_configs,
            "training_args": e.training_args,
            "model_args": e.model_args,
            "launch_command": self.launch_command,
            "notes": self.notes,
        }


def default_output_dir(model: ModelSpec, strategy: Strategy) -> Path:
    return Path("runs") / f"{model.id.replace('/', '--')}-{strategy.name}"


def make_plan(
    model: str,
    strategy_name: str,
    gpus: str,
    nnodes: int = 1,
    master: str | None = None,
    node_rank: int | None = None,
    output_dir: Path | None = None,
    seq_len: int = DEFAULT_SEQ_LEN,
    allow_partial: bool = False,
) -> Plan:
    """Resolve and check everything `llmpt train` would launch; raise LlmptError on the first problem."""
    spec = resolve_model(model)
    strategy = resolve_strategy(strategy_name)
    if seq_len < 1:
        raise LlmptError(f"--seq-len {seq_len}: must be >= 1")
    check_multinode(nnodes, master, node_rank)
    topo = Topology(devices=parse_devices(gpus), nnodes=nnodes, master=master, node_rank=node_rank)
    world_flag = f"--gpus {gpus}" + (f" x --nnodes {nnodes}" if nnodes > 1 else "")
    degrees = resolve_degrees(strategy, topo.world_size, world_flag)
    check_model_shape(spec, strategy, degrees, seq_len)
    # kernels from a shipped preset (or defaults) mean "on where supported"; a strategy file asks explicitly
    explicit = strategy_name.endswith((".yaml", ".yml")) or os.sep in strategy_name
    caps = check_capabilities(
        spec,
        strategy,
        degrees,
        allow_partial=allow_partial,
        optional_kernels=not explicit,
    )
    if caps.kernels_off:
        strategy = strategy.model_copy(update={"kernels": strategy.kernels.model_copy(update=caps.kernels_off)})
    expansion = expand(strategy, topo.world_size, world_flag)
    notes = list(caps.notes)
    for w in caps.warnings:
        warnings.warn(w, CapabilityWarning, stacklevel=2)
    if not preset_is_shipped(strategy):
        notes.append(f"no shipped preset named {strategy.name}: schema defaults for precision, kernels and batch")
    if strategy.parallel.dp is None and expansion.degrees.dp > 1:
        notes.append(f"dp{expansion.degrees.dp} derived from the world size {topo.world_size}")
    out = output_dir or default_output_dir(spec, strategy)
    cmd = build_launch_command(topo, out / "run.yaml", out / "logs")
    return Plan(
        model=spec,
        seq_len=seq_len,
        strategy=strategy,
        topology=topo,
        expansion=expansion,
        launch_command=cmd,
        notes=notes,
    )
