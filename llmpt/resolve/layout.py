"""Model + strategy + topology -> a checked layout (`Plan`): the degrees, the expansion, the planner's estimate.

What `llmpt plan` shows, and the part of `llmpt train`'s resolution that needs no data. The estimate itself is the
planner's (llmpt/planner/); this module decides what it is asked about and turns its verdict into a refusal.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmpt.errors import LlmptError, LlmptWarning
from llmpt.launch.command import Topology, build_launch_command, check_multinode, parse_devices
from llmpt.models.matrix import check_capabilities
from llmpt.models.registry import ModelSpec, padded_vocab, paddlenlp_config, resolve_model
from llmpt.models.shape import check_model_shape
from llmpt.planner.batch import choose_batch
from llmpt.planner.devices import Device, detect_device, resolve_device
from llmpt.planner.estimate import Estimate, Layout, knob_dict, plan_estimate
from llmpt.planner.search import MAX_WORLD, fewest_devices
from llmpt.resolve.request import Layers, RunRequest, device_of, seq_len_of, strategy_name
from llmpt.run_dir import RunDir
from llmpt.strategies.expand import Expansion, expand
from llmpt.strategies.presets import compose_strategy, is_strategy_file, preset_is_shipped
from llmpt.strategies.schema import GPU_KERNELS, Strategy
from llmpt.strategies.validate import check_runs_on_cpu

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
    sources: dict[str, str] = field(default_factory=dict)  # "batch.micro_batch_size" -> where its value came from
    optimizer: str = "adamw"  # train.optimizer and train.dropout: what the estimate counts besides the layout
    dropout: float = 0.0

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
            "command": self.launch_command,  # the one name for it (plan, train --dry-run): llmpt.plan/1
            "notes": list(self.notes),
            "sources": self.sources,
            "estimate": None if self.estimate is None else self.estimate.to_dict(),
        }


def default_output_dir(model: ModelSpec, strategy: Strategy) -> Path:
    return Path("runs") / f"{model.id.replace('/', '--')}-{strategy.name}"


def adapt_for_cpu(strategy: Strategy) -> tuple[Strategy, list[str]]:
    """CPU ranks: refuse what llmpt's gloo backend cannot run; turn GPU-only numerics off, saying so."""
    check_runs_on_cpu(strategy)
    p = strategy.parallel
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


def default_gpus(strategy: Strategy, nnodes: int) -> str:
    """Devices per node when --gpus is not given: the strategy's minimum ranks, spread evenly over the nodes."""
    need = strategy.parallel.dims.min_ranks
    per_node, rem = divmod(need, nnodes)
    return str(max(per_node, 1)) if not rem else str(need)


def check_layout(req: RunRequest, layers: Layers) -> Plan:
    """Resolve and check model, strategy and topology; raise LlmptError on the first problem. No estimate yet:
    `estimated` adds it once the model that will really be built is known."""
    spec = req.model if isinstance(req.model, ModelSpec) else resolve_model(req.model_name)
    device = device_of(req)
    seq_len = seq_len_of(req, layers, spec)
    name = strategy_name(req)
    strategy, sources = compose_strategy(
        name,
        device,
        overrides=layers.section("strategy"),
        origin=lambda path: layers.origin("strategy", *path),
        overrides_source=layers.source,
    )
    check_multinode(req.nnodes, req.master, req.node_rank)
    gpus = req.gpus if req.gpus is not None else default_gpus(strategy, req.nnodes)
    topo = Topology(parse_devices(gpus), device, req.nnodes, req.master, req.node_rank)
    world_flag = f"--gpus {gpus}" + (f" x --nnodes {req.nnodes}" if req.nnodes > 1 else "")
    degrees = strategy.parallel.dims.for_world(topo.world_size, strategy.name, world_flag)
    check_model_shape(spec, strategy, degrees, seq_len)
    _check_optimizer(layers, degrees)
    _check_expert_clipping(layers, degrees)
    # kernels from the base profile or a shipped preset mean "on where supported"; a file or the user asks for them
    kernel_fields = type(strategy.kernels).model_fields
    explicit = {k for k in kernel_fields if not sources.get(f"kernels.{k}", "base").startswith(("base", "preset "))}
    caps = check_capabilities(spec, strategy, degrees, allow_partial=req.allow_partial, explicit_kernels=explicit)
    if caps.kernels_off:
        strategy = strategy.model_copy(update={"kernels": strategy.kernels.model_copy(update=caps.kernels_off)})
        for k in caps.kernels_off:
            sources[f"kernels.{k}"] = f"{sources.get(f'kernels.{k}', 'schema default')}; off: {spec.id} lacks it"
    notes = list(caps.notes)
    if device == "cpu":
        strategy, cpu_notes = adapt_for_cpu(strategy)
        notes += cpu_notes
    card = _card(device, req.device_type, notes)
    from_scratch = req.init_from is None
    if "batch.micro_batch_size" not in sources or "batch.grad_accum" not in sources:
        strategy = _planner_batch(strategy, sources, spec, degrees, seq_len, topo, card, from_scratch, layers.train)
    expansion = expand(strategy, topo.world_size, world_flag)
    for w in caps.warnings:
        warnings.warn(w, CapabilityWarning, stacklevel=2)
    if not preset_is_shipped(strategy) and not is_strategy_file(name):
        notes.append(f"no shipped preset named {strategy.name}: the {device} base profile and a planner-chosen batch")
    if strategy.parallel.dp is None and expansion.degrees.dp > 1:
        notes.append(f"dp{expansion.degrees.dp} derived from the world size {topo.world_size}")
    return Plan(
        model=spec,
        seq_len=seq_len,
        strategy=strategy,
        topology=topo,
        expansion=expansion,
        output_dir=Path(req.output_dir) if req.output_dir else default_output_dir(spec, strategy),
        from_scratch=from_scratch,
        notes=tuple(notes),
        card=card,
        sources=sources,
        optimizer=layers.train.optimizer,
        dropout=layers.train.dropout,
    )


def _check_optimizer(layers: Layers, degrees) -> None:
    """PaddleNLP's TrainingArguments refuses AdamW Mini under tensor parallelism (at every rank's start): here."""
    if layers.train.optimizer == "adamw_mini" and degrees.tp > 1:
        given = layers.setting("train", "optimizer")
        said = given.show(("train", "optimizer")) if given else "train.optimizer adamw_mini"
        raise LlmptError(
            f"{said} with tp{degrees.tp}: PaddleNLP's AdamW Mini does not support tensor parallelism "
            "(TrainingArguments raises at every rank's start)",
            "use train.optimizer=adamw, or a strategy without tensor parallelism",
        )


def _check_expert_clipping(layers: Layers, degrees) -> None:
    """Under ep, llmpt clips by the global norm with the experts summed over the ep (= dp) group
    (llmpt/train/experts.py); beside tp, pp or sharding that norm would need their reductions too, which is not
    written: refused here rather than at every rank's start."""
    others = degrees.unclipped_beside_ep()
    if others and layers.train.max_grad_norm > 0:
        given = layers.setting("train", "max_grad_norm")
        said = given.show(("train", "max_grad_norm")) if given else f"train.max_grad_norm {layers.train.max_grad_norm}"
        raise LlmptError(
            f"ep{degrees.ep} with {', '.join(others)} and gradient clipping ({said}): PaddleNLP 3.0.0b4 clips each "
            "rank by its own experts' norm, and llmpt's global-norm correction covers ep with data parallel only",
            f"llmpt train … --set train.max_grad_norm=0, or dp{degrees.ep}ep{degrees.ep} without tp, pp or sharding",
        )


def _planner_batch(strategy, sources, spec, degrees, seq_len, topo, card, from_scratch, train) -> Strategy:
    """Fill the batch the preset and the user left unset: the planner's split of the family's global batch."""
    lay = Layout(spec, strategy, degrees, seq_len, topo.nproc_per_node, from_scratch, train.dropout, train.optimizer)
    choice = choose_batch(lay, card)
    fixed = {k: getattr(strategy.batch, k) for k in ("micro_batch_size", "grad_accum") if f"batch.{k}" in sources}
    picked = {"micro_batch_size": choice.micro_batch_size, "grad_accum": choice.grad_accum} | fixed
    if len(fixed) == 1:  # the user fixed one factor: the other keeps the family's batch where it divides
        per_rank = choice.micro_batch_size * choice.grad_accum
        (k, v), other = next(iter(fixed.items())), ({"micro_batch_size", "grad_accum"} - set(fixed)).pop()
        picked[other] = max(1, per_rank // v) if per_rank % v == 0 else 1
    for k in picked:
        sources.setdefault(f"batch.{k}", choice.why)
    return strategy.model_copy(update={"batch": strategy.batch.model_copy(update=picked)})


def estimated(plan: Plan, vocab_size: int | None = None) -> Plan:
    """The plan with the planner's estimate, for the model as it will be built (`vocab_size`: the vocabulary
    after the tokenizer grew it, if it did)."""
    spec = plan.model
    if vocab_size is not None and vocab_size != spec.vocab_size:
        spec = spec.model_copy(update={"vocab_size": vocab_size})
    if plan.topology.device == "gpu" and plan.card is None:
        return replace(plan, model=spec)
    layout = Layout(
        spec,
        plan.strategy,
        plan.expansion.degrees,
        plan.seq_len,
        plan.topology.nproc_per_node,
        plan.from_scratch,
        plan.dropout,
        plan.optimizer,
    )
    est = plan_estimate(layout, plan.card)
    if est.fits is False:
        _runnable_knob(est, layout, plan)
    return replace(plan, model=spec, estimate=est)


def _runnable_knob(est: Estimate, layout: Layout, plan: Plan) -> None:
    """Make the planner's knob a command that replays: a complete strategy name, every --set that makes the name
    resolve to the knob's layout, and the devices (more of them when no change fits on these)."""
    topo = plan.topology
    if est.knob is None:
        if plan.card is None:
            return  # CPU ranks share one machine's RAM: more of them never make a rank's share larger
        found = fewest_devices(layout, plan.card, est.capacity_mb)
        if found is None:
            return
        world, per_node, lay, e = found
        est.knob = knob_dict(f"{world} devices ({lay.degrees.describe()})", lay, [], e)
        est.knob_layout = lay
        est.knob.update(gpus=per_node, nnodes=world // per_node, more_devices=True)
    else:
        est.knob.update(gpus=topo.nproc_per_node, nnodes=topo.nnodes, more_devices=False)
    est.knob["set"] = replay_sets(est.knob_layout.strategy, topo.device)


def replay_sets(strategy: Strategy, device: str) -> list[str]:
    """The --set list that makes `strategy.name` resolve to `strategy` (its batch always stated)."""
    named, _ = compose_strategy(strategy.name, device)
    want = strategy.model_dump(mode="json", exclude={"name", "description", "parallel"})
    have = named.model_dump(mode="json", exclude={"name", "description", "parallel"})
    out = []
    for section, values in want.items():
        for key, value in values.items():
            if section == "batch" or value != have[section][key]:
                out.append(f"strategy.{section}.{key}={_yaml_value(value)}")
    return out


def _yaml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    return str(v)


def knob_hint(est: Estimate) -> str:
    """'first knob: recompute full -> --strategy tp2sd4_stage2_rc (32927 MB)' or why there is none."""
    k = est.knob
    if k is None:
        if est.device is None:
            return "no change of recompute, sharding stage, tp or micro batch fits in this machine's RAM"
        return f"nothing fits on up to {MAX_WORLD} devices of this kind: use a larger card"
    flags = [f"--strategy {k['strategy']}", *(f"--set {x}" for x in k["set"])]
    if k.get("more_devices"):
        flags.insert(0, f"--gpus {k['gpus']}" + (f" --nnodes {k['nnodes']}" if k["nnodes"] > 1 else ""))
    speed = "" if k["tokens_per_card_per_sec"] is None else f", ~{k['tokens_per_card_per_sec']:.0f} tokens/card/s"
    return f"first knob: {k['change']} -> {' '.join(flags)} ({k['memory_mb_per_card']:.0f} MB{speed})"


def check_fits(plan: Plan, force: bool) -> None:
    """`llmpt train` refuses a run the planner says runs out of memory, unless --force."""
    est = plan.estimate
    if est is None or est.fits is not False or force:
        return
    where = est.device.name if est.device else f"this machine's RAM shared by {plan.topology.nproc_per_node} ranks"
    hint = knob_hint(est) + "; or --force to launch anyway"
    if est.device is None:
        hint = (
            f"{plan.model.id} is a GPU-sized job: check it for GPUs with --device gpu [--device-type "
            f"{ASSUMED_DEVICE}]; on CPU, {knob_hint(est)}"
        )
    raise LlmptError(
        f"{plan.model.id} with {plan.strategy.name} does not fit: predicted {est.memory_mb_per_card:.0f} MB per "
        f"card > {est.capacity_mb:.0f} MB usable on {where} (llmpt plan shows the breakdown)",
        hint,
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
