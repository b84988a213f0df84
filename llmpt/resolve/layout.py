"""Model + strategy + topology -> a checked layout (`Plan`): the degrees, the expansion, the planner's estimate.

What `llmpt plan` shows, and the part of `llmpt train`'s resolution that needs no data. The estimate itself is the
planner's (llmpt/planner/); this module decides what it is asked about and turns its verdict into a refusal.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmpt.errors import LlmptError, LlmptWarning
from llmpt.launch.command import Topology, build_launch_command, check_multinode, parse_devices
from llmpt.models.matrix import check_capabilities
from llmpt.models.registry import ModelSpec, padded_vocab, paddlenlp_config, resolve_model
from llmpt.models.shape import check_model_shape
from llmpt.overrides import deep_merge
from llmpt.planner.devices import Device, detect_device, resolve_device
from llmpt.planner.estimate import Estimate, Layout, plan_estimate
from llmpt.run_dir import RunDir
from llmpt.strategies.expand import Expansion, expand
from llmpt.strategies.grammar import parse_name
from llmpt.strategies.presets import build_strategy, is_strategy_file, preset_is_shipped, resolve_strategy
from llmpt.strategies.schema import GPU_KERNELS, Strategy

ASSUMED_DEVICE = "A100-80G"  # the seed table's card: what a GPU job is estimated for when nothing says otherwise


class CapabilityWarning(LlmptWarning):
    """A partially supported capability the user allowed with --allow-partial."""


@dataclass(frozen=True)
class Plan:
    model: ModelSpec  # as it will be built (the tokenizer may have grown its vocabulary)
    seq_len: int
    strategy: Strategy
    topology: Topology
    expansion: Expansion
    output_dir: Path
    from_scratch: bool = True
    notes: tuple[str, ...] = ()
    card: Device | None = None  # the accelerator estimated for; None on CPU or when no card is known
    estimate: Estimate | None = None

    @property
    def launch_command(self) -> list[str]:
        run = RunDir(self.output_dir)
        return build_launch_command(
            self.topology, run.run_yaml, run.log_dir(self.topology.nnodes, self.topology.node_rank)
        )

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
            "degrees": e.degrees.to_dict(),
            "hybrid_configs": e.hybrid_configs,
            "pipeline_configs": e.pipeline_configs,
            "training_args": e.training_args,
            "model_args": e.model_args,
            "launch_command": self.launch_command,
            "notes": list(self.notes),
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


def apply_strategy_overrides(strategy: Strategy, overrides: dict[str, Any], source: str) -> Strategy:
    """`strategy.<section>.<key>` from --config/--set on top of the preset; degrees stay the name's."""
    if not overrides:
        return strategy
    sections = strategy.model_dump(mode="json", exclude={"name", "parallel"})
    parts = parse_name(strategy.name)
    if parts.recompute != "off":
        sections["recompute"].pop("granularity", None)  # the name says it; build_strategy sets it again
    return build_strategy(parts, deep_merge(sections, overrides), source)


def default_gpus(strategy: Strategy, nnodes: int) -> str:
    """Devices per node when --gpus is not given: the strategy's minimum ranks, spread evenly over the nodes."""
    need = strategy.parallel.dims.min_ranks
    per_node, rem = divmod(need, nnodes)
    return str(max(per_node, 1)) if not rem else str(need)


def check_layout(
    model: str | ModelSpec,
    strategy_name: str,
    gpus: str | None = None,
    nnodes: int = 1,
    master: str | None = None,
    node_rank: int | None = None,
    output_dir: Path | None = None,
    seq_len: int = 4096,
    allow_partial: bool = False,
    device: str = "gpu",
    strategy_overrides: dict[str, Any] | None = None,
    overrides_source: str = "--set",
    device_type: str | None = None,
    from_scratch: bool = True,
) -> Plan:
    """Resolve and check model, strategy and topology; raise LlmptError on the first problem. No estimate yet:
    `estimated` adds it once the model that will really be built is known."""
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    strategy = apply_strategy_overrides(resolve_strategy(strategy_name), strategy_overrides or {}, overrides_source)
    if seq_len < 8:
        raise LlmptError(f"--seq-len {seq_len}: must be >= 8")
    if device not in ("gpu", "cpu"):
        raise LlmptError(f"--device {device}: allowed: gpu, cpu")
    check_multinode(nnodes, master, node_rank)
    gpus = gpus if gpus is not None else default_gpus(strategy, nnodes)
    topo = Topology(devices=parse_devices(gpus), device=device, nnodes=nnodes, master=master, node_rank=node_rank)
    world_flag = f"--gpus {gpus}" + (f" x --nnodes {nnodes}" if nnodes > 1 else "")
    degrees = strategy.parallel.dims.for_world(topo.world_size, strategy.name, world_flag)
    check_model_shape(spec, strategy, degrees, seq_len)
    # kernels from a shipped preset (or defaults) mean "on where supported"; a strategy file asks explicitly
    caps = check_capabilities(
        spec, strategy, degrees, allow_partial=allow_partial, optional_kernels=not is_strategy_file(strategy_name)
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
    card = _card(device, device_type, notes)
    return Plan(
        model=spec,
        seq_len=seq_len,
        strategy=strategy,
        topology=topo,
        expansion=expansion,
        output_dir=output_dir or default_output_dir(spec, strategy),
        from_scratch=from_scratch,
        notes=tuple(notes),
        card=card,
    )


def estimated(plan: Plan, vocab_size: int | None = None) -> Plan:
    """The plan with the planner's estimate, for the model as it will be built (`vocab_size`: the vocabulary
    after the tokenizer grew it, if it did)."""
    spec = plan.model
    if vocab_size is not None and vocab_size != spec.vocab_size:
        spec = spec.model_copy(update={"vocab_size": vocab_size})
    if plan.topology.device == "gpu" and plan.card is None:
        return replace(plan, model=spec)
    layout = Layout(
        spec, plan.strategy, plan.expansion.degrees, plan.seq_len, plan.topology.nproc_per_node, plan.from_scratch
    )
    return replace(plan, model=spec, estimate=plan_estimate(layout, plan.card))


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


def _card(device: str, device_type: str | None, notes: list[str]) -> Device | None:
    """The accelerator to estimate for: --device-type, else the local GPU, else the seed's card (said in a note)."""
    if device == "cpu":
        if device_type:
            raise LlmptError(f"--device-type {device_type} with --device cpu: CPU ranks have no accelerator")
        return None
    if device_type:
        return resolve_device(device_type)
    found = detect_device()
    if found is not None:
        return found
    notes.append(f"estimate for {ASSUMED_DEVICE} (no --device-type given and no GPU detected here)")
    return resolve_device(ASSUMED_DEVICE)
