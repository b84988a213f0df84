"""`llmpt plan`: resolve model + strategy + topology into everything a launch would use, without starting it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpt.launch.command import Topology, build_launch_command, check_multinode, parse_devices
from llmpt.strategies.expand import Expansion, expand
from llmpt.strategies.presets import preset_is_shipped, resolve_strategy
from llmpt.strategies.schema import Strategy


@dataclass
class Plan:
    model: str
    strategy: Strategy
    topology: Topology
    expansion: Expansion
    launch_command: list[str]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        e = self.expansion
        return {
            "model": self.model,
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


def default_output_dir(model: str, strategy: Strategy) -> Path:
    return Path("runs") / f"{model.replace('/', '--')}-{strategy.name}"


def make_plan(
    model: str,
    strategy_name: str,
    gpus: str,
    nnodes: int = 1,
    master: str | None = None,
    node_rank: int | None = None,
    output_dir: Path | None = None,
) -> Plan:
    """Resolve and check everything `llmpt train` would launch; raise LlmptError on the first problem."""
    strategy = resolve_strategy(strategy_name)
    check_multinode(nnodes, master, node_rank)
    topo = Topology(devices=parse_devices(gpus), nnodes=nnodes, master=master, node_rank=node_rank)
    world_flag = f"--gpus {gpus}" + (f" x --nnodes {nnodes}" if nnodes > 1 else "")
    expansion = expand(strategy, topo.world_size, world_flag)
    notes = []
    if not preset_is_shipped(strategy):
        notes.append(f"no shipped preset named {strategy.name}: schema defaults for precision, kernels and batch")
    if strategy.parallel.dp is None and expansion.degrees.dp > 1:
        notes.append(f"dp{expansion.degrees.dp} derived from the world size {topo.world_size}")
    out = output_dir or default_output_dir(model, strategy)
    cmd = build_launch_command(topo, out / "run.yaml", out / "logs")
    return Plan(model=model, strategy=strategy, topology=topo, expansion=expansion, launch_command=cmd, notes=notes)
