"""`llmpt plan`: resolve model + strategy + topology into everything a launch would use, without starting it."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmpt.errors import LlmptError, LlmptWarning
from llmpt.launch.command import Topology, build_launch_command, check_multinode, log_dir_for, parse_devices
from llmpt.models.matrix import check_capabilities
from llmpt.models.registry import ModelSpec, padded_vocab, paddlenlp_config, resolve_model
from llmpt.models.shape import check_model_shape
from llmpt.overrides import deep_merge
from llmpt.planner.devices import Device, detect_device, resolve_device
from llmpt.planner.estimate import Estimate, Layout, plan_estimate
from llmpt.strategies.expand import Expansion, expand
from llmpt.strategies.grammar import parse_name
from llmpt.strategies.presets import build_strategy, preset_is_shipped, resolve_strategy
from llmpt.strategies.schema import Strategy


class CapabilityWarning(LlmptWarning):
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
    estimate: Estimate | None = None

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
            "estimate": None if self.estimate is None else self.estimate.to_dict(),
        }


def default_output_dir(model: ModelSpec, strategy: Strategy) -> Path:
    return Path("runs") / f"{model.id.replace('/', '--')}-{strategy.name}"


def adapt_for_cpu(strategy: Strategy) -> tuple[Strategy, list[str]]:
    """CPU ranks: refuse what llmpt's gloo backend cannot run; turn GPU-only numerics off, saying so."""
    p = strategy.parallel
    unsupported = [
        (p.offload, "sharding offload (there is no device memory to offload from)"),
        (p.sep > 1, f"segment parallel (sep{p.sep})"),
        (p.cp > 1, f"context parallel (cp{p.cp})"),
        (
            p.tp > 1 and p.sharding > 1 and p.stage == 3,
            "tensor parallel with sharding stage 3 (PaddleNLP's Trainer refuses it)",
        ),
    ]
    for bad, what in unsupported:
        if bad:
            raise LlmptError(
                f"strategy {strategy.name} needs {what}, which llmpt does not run on CPU",
                "on CPU: data, tensor and pipeline parallel, sequence parallel, sharding stage 1/2/3",
            )
    notes = []
    if p.tp > 1 or p.pp > 1 or (p.sharding > 1 and p.stage > 1):
        notes.append("cpu: tensor/pipeline parallel and sharding stage 2/3 run through llmpt's gloo backend")
    if strategy.precision.dtype != "fp32":
        notes.append(f"cpu: {strategy.precision.dtype} {strategy.precision.amp_level} -> fp32 (AMP is GPU-only)")
    kernels_on = [k for k, v in strategy.kernels.model_dump().items() if v and k in GPU_KERNELS]
    if kernels_on:
        notes.append(f"cpu: {', '.join(kernels_on)} off (GPU kernels)")
    strategy = strategy.model_copy(
        update={
            "precision": strategy.precision.model_copy(update={"dtype": "fp32", "master_grad": False}),
            "kernels": strategy.kernels.model_copy(update=dict.fromkeys(GPU_KERNELS, False)),
        }
    )
    return strategy, notes


GPU_KERNELS = ("flash_attention", "fused_rms_norm", "fused_rope")


def apply_strategy_overrides(strategy: Strategy, overrides: dict[str, Any], source: str) -> Strategy:
    """`strategy.<section>.<key>` from --config/--set on top of the preset; degrees stay the name's."""
    if not overrides:
        return strategy
    sections = strategy.model_dump(mode="json", exclude={"name", "parallel"})
    if parse_name(strategy.name).recompute != "off":
        sections["recompute"].pop("granularity", None)  # the name says it; build_strategy sets it again
    return build_strategy(parse_name(strategy.name), deep_merge(sections, overrides), source)


def make_plan(
    model: str | ModelSpec,
    strategy_name: str,
    gpus: str | None = None,
    nnodes: int = 1,
    master: str | None = None,
    node_rank: int | None = None,
    output_dir: Path | None = None,
    seq_len: int = DEFAULT_SEQ_LEN,
    allow_partial: bool = False,
    device: str = "gpu",
    strategy_overrides: dict[str, Any] | None = None,
    overrides_source: str = "--set",
    device_type: str | None = None,
    assume_device: str | None = None,
    from_scratch: bool = True,
) -> Plan:
    """Resolve and check everything `llmpt train` would launch; raise LlmptError on the first problem."""
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    strategy = apply_strategy_overrides(resolve_strategy(strategy_name), strategy_overrides or {}, overrides_source)
    if seq_len < 8:
        raise LlmptError(f"--seq-len {seq_len}: must be >= 8")
    if device not in ("gpu", "cpu"):
        raise LlmptError(f"--device {device}: allowed: gpu, cpu")
    check_multinode(nnodes, master, node_rank)
    if gpus is None:
        per_node, rem = divmod(strategy.parallel.dims.min_ranks, nnodes)
        gpus = str(max(per_node, 1)) if not rem else str(strategy.parallel.dims.min_ranks)
    topo = Topology(devices=parse_devices(gpus), device=device, nnodes=nnodes, master=master, node_rank=node_rank)
    world_flag = f"--gpus {gpus}" + (f" x --nnodes {nnodes}" if nnodes > 1 else "")
    degrees = strategy.parallel.dims.for_world(topo.world_size, strategy.name, world_flag)
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
    notes = list(caps.notes)
    if device == "cpu":
        strategy, cpu_notes = adapt_for_cpu(strategy)
        notes += cpu_notes
    expansion = expand(strategy, topo.world_size, world_flag)
    for w in caps.warnings:
        warnings.warn(w, CapabilityWarning, stacklevel=2)
    if not preset_is_shipped(strategy):
        notes.append(f"no shipped preset named {strategy.name}: schema defaults for precision, kernels and batch")
    if strategy.parallel.dp is None and expansion.degrees.dp > 1:
        notes.append(f"dp{expansion.degrees.dp} derived from the world size {topo.world_size}")
    out = output_dir or default_output_dir(spec, strategy)
    cmd = build_launch_command(topo, out / "run.yaml", log_dir_for(out, topo))
    est = None
    card = _card(device, device_type, assume_device, notes)
    if device == "cpu" or card is not None:
        layout = Layout(spec, strategy, expansion.degrees, seq_len, topo.nproc_per_node, from_scratch)
        est = plan_estimate(layout, card)
    return Plan(
        model=spec,
        seq_len=seq_len,
        strategy=strategy,
        topology=topo,
        expansion=expansion,
        launch_command=cmd,
        notes=notes,
        estimate=est,
    )


def knob_hint(est: Estimate) -> str:
    """'first knob: recompute full -> --strategy tp2sd4_stage2_rc (32927 MB)' or why there is none."""
    k = est.knob
    if k is None:
        return (
            "no single or paired change of recompute, sharding stage, tp or micro batch fits: "
            "add pipeline stages or devices, or use a larger card"
        )
    flags = " ".join([f"--strategy {k['strategy']}", *(f"--set {x}" for x in k["set"])])
    speed = "" if k["tokens_per_card_per_sec"] is None else f", ~{k['tokens_per_card_per_sec']:.0f} tokens/card/s"
    return f"first knob: {k['change']} -> {flags} ({k['memory_mb_per_card']:.0f} MB{speed})"


def check_fits(plan: Plan, force: bool) -> None:
    """`llmpt train` refuses a run the planner says runs out of memory, unless --force."""
    est = plan.estimate
    if est is None or est.fits is not False or force:
        return
    where = est.device.name if est.device else f"this machine's RAM shared by {plan.topology.nproc_per_node} ranks"
    raise LlmptError(
        f"{plan.model.id} with {plan.strategy.name} does not fit: predicted {est.memory_mb_per_card:.0f} MB per "
        f"card > {est.capacity_mb:.0f} MB usable on {where} (llmpt plan shows the breakdown)",
        knob_hint(est) + "; or --force to launch anyway",
    )


def _card(device: str, device_type: str | None, assume: str | None, notes: list[str]) -> Device | None:
    """The accelerator to estimate for: --device-type, else the local GPU, else `assume` (said in a note)."""
    if device == "cpu":
        if device_type:
            raise LlmptError(f"--device-type {device_type} with --device cpu: CPU ranks have no accelerator")
        return None
    if device_type:
        return resolve_device(device_type)
    found = detect_device()
    if found is not None:
        return found
    if assume:
        notes.append(f"estimate for {assume} (no --device-type given and no GPU detected here)")
        return resolve_device(assume)
    notes.append("no memory check: no --device-type given and no GPU detected here")
    return None
