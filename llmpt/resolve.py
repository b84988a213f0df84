"""`llmpt train`'s resolution: model + strategy + data + schedule + flags -> one validated RunConfig."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmpt import __version__
from llmpt.errors import ConfigError, LlmptError, describe_validation_error
from llmpt.launch.command import check_master_port
from llmpt.models.registry import ModelSpec, padded_vocab, paddlenlp_config
from llmpt.overrides import deep_merge, parse_set
from llmpt.planner.estimate import Layout, plan_estimate
from llmpt.planning import Plan, check_fits, make_plan
from llmpt.run_config import DataSection, ModelSection, RunConfig, TrainSettings
from llmpt.strategies.presets import read_yaml

# the README's main job: a tiny llama on the shipped corpus, 2 CPU ranks, data parallel
DEMO = {"model": "llama-tiny", "strategy": "dp2", "device": "cpu", "seq_len": 128, "max_steps": 200}
DEMO_TRAIN = {"learning_rate": 3e-3, "min_learning_rate": 3e-4, "warmup_steps": 20}
# one micro batch of 8 per rank and step: the dp2 preset's 1 x 8 accumulation is for GPUs, not 2 CPU cores
DEMO_STRATEGY = {"batch": {"micro_batch_size": 8, "grad_accum": 1}}
CONFIG_KEYS = ("train", "strategy", "data", "model", "seq_len")
# families whose PaddleNLP causal-LM class cannot pretrain on plain token windows (measured, see README)
NOT_TRAINABLE = {
    "chatglm": "PaddleNLP's ChatGLM (v1) needs a 4-D attention mask and gMASK/BOS tokens in every sample, which "
    "the causal pretraining dataset does not produce",
    "glm": "PaddleNLP has no causal-LM class for GLM (only GLMForConditionalGeneration)",
}


@dataclass
class TrainRequest:
    """What the user typed (None = not given)."""

    model: str | ModelSpec | None = None
    strategy: str | None = None
    data: list[str] = field(default_factory=list)
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
    config_file: str | None = None
    set_items: list[str] = field(default_factory=list)
    allow_partial: bool = False
    device_type: str | None = None
    force: bool = False
    check_port: bool = True  # False when the master is only known on the cluster (launch-script)


def default_device() -> str:
    # no paddle import here: a visible NVIDIA device node is enough to prefer the GPU
    return "gpu" if os.path.exists("/dev/nvidia0") else "cpu"


def cache_dir() -> Path:
    return Path(os.environ.get("LLMPT_CACHE", Path.home() / ".cache" / "llmpt"))


def _demo_data() -> list[str]:
    """The shipped corpus, prepared once into the cache."""
    from llmpt.data.prepare import output_paths, prepare_data

    prefix = cache_dir() / "data" / "kjv"
    if not output_paths(prefix)["manifest"].is_file():
        prepare_data(None, output=str(prefix), force=True)
    return [str(prefix)]


def check_data(prefixes: list[str], vocab_size: int) -> tuple[dict[str, dict], str]:
    """Each prefix opens, agrees with its manifest, and has ids below the model's vocabulary."""
    from llmpt.data.inputs import DataError
    from llmpt.data.prepare import open_prepared, verify_prepared
    from llmpt.data.tokenizer import SHIPPED_TOKENIZER

    manifests, tokenizer_dir = {}, None
    for prefix in prefixes:
        ds, m = open_prepared(prefix, "--data")
        if m is not None:
            verify_prepared(prefix, m, "--data", cache_dir() / "verified-data.json")
            if (m["documents"], m["tokens"]) != (len(ds), int(ds.sizes.sum())):
                raise DataError(
                    f"--data {prefix}: files hold {len(ds)} documents / {int(ds.sizes.sum())} tokens but the manifest "
                    f"says {m['documents']} / {m['tokens']} (changed since prepare-data?)",
                    "prepare the data again",
                )
            if m["tokenizer"]["vocab_size"] > vocab_size:
                raise DataError(
                    f"--data {prefix}: tokenized with a {m['tokenizer']['vocab_size']}-token vocabulary, larger than "
                    f"the model's {vocab_size}"
                )
            manifests[prefix] = m
            tokenizer_dir = tokenizer_dir or m["tokenizer"]["dir"]
    return manifests, tokenizer_dir or str(SHIPPED_TOKENIZER)


def _init_config(init_from: str, family: str) -> dict[str, Any]:
    """The config.json of a save_pretrained() directory: the model the ranks will load."""
    path = Path(init_from, "config.json")
    if not path.is_file():
        raise LlmptError(
            f"--init-from {init_from}: no config.json there", "pass a directory written by save_pretrained()"
        )
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LlmptError(f"--init-from {init_from}: config.json is not valid JSON ({e})") from None
    mt = cfg.get("model_type")
    expected = "chatglm_v2" if family == "chatglm2" else family
    if mt != expected:
        raise LlmptError(f"--init-from {init_from}: a {mt!r} checkpoint, but the model is a {family} model")
    return cfg


def resolve_run(req: TrainRequest) -> tuple[RunConfig, Plan]:
    demo = req.model is None
    layers: dict[str, Any] = {}
    source = "--set"
    if req.config_file:
        cfg = read_yaml(Path(req.config_file))
        unknown = sorted(set(cfg) - set(CONFIG_KEYS))
        if unknown:
            raise ConfigError(
                f"{req.config_file}: unknown key '{unknown[0]}'; allowed: {', '.join(CONFIG_KEYS)}",
            )
        layers = cfg
        source = req.config_file
    flags: dict[str, Any] = {"train": {}}
    for key, value in (("max_steps", req.max_steps), ("seed", req.seed), ("save_steps", req.save_steps)):
        if value is not None:
            flags["train"][key] = value
    layers = deep_merge(deep_merge(layers, flags), parse_set(req.set_items))
    if req.set_items:
        source = "--set"

    model = req.model or DEMO["model"]
    strategy = req.strategy or (DEMO["strategy"] if demo else None)
    if strategy is None:
        raise LlmptError("--strategy is required", "e.g. --strategy tp2sd4_stage2 (see: llmpt presets list)")
    device = req.device or (DEMO["device"] if demo else default_device())
    tiny = (model.id if isinstance(model, ModelSpec) else model).endswith("-tiny")
    seq_len = req.seq_len or layers.get("seq_len") or (DEMO["seq_len"] if demo or tiny else 4096)
    out = Path(req.output_dir) if req.output_dir else None
    plan = make_plan(
        model,
        strategy,
        gpus=req.gpus,
        nnodes=req.nnodes,
        master=req.master,
        node_rank=req.node_rank,
        output_dir=out,
        seq_len=int(seq_len),
        allow_partial=req.allow_partial,
        device=device,
        strategy_overrides=deep_merge(DEMO_STRATEGY, layers.get("strategy", {})) if demo else layers.get("strategy"),
        overrides_source=source,
        device_type=req.device_type,
        from_scratch=req.init_from is None,
    )
    check_fits(plan, req.force)  # before anything is read: a run that cannot fit is refused at once
    if req.check_port:
        check_master_port(req.master, req.node_rank)
    train_layer = deep_merge({"max_steps": DEMO["max_steps"], **DEMO_TRAIN} if demo else {}, layers.get("train", {}))
    try:
        train = TrainSettings.model_validate(train_layer)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(source, e, TrainSettings, prefix="train.")) from None

    spec = plan.model
    if spec.family in NOT_TRAINABLE:
        raise LlmptError(
            f"llmpt train cannot pretrain {spec.id} ({spec.family}): {NOT_TRAINABLE[spec.family]}",
            "llmpt plan still checks it; trainable families: llama (incl. Baichuan), qwen, gpt, opt, bloom, chatglm2",
        )
    model_cfg = paddlenlp_config(spec, plan.seq_len, from_scratch=req.init_from is None)
    if req.init_from is not None:
        model_cfg = _init_config(req.init_from, spec.family)
    prefixes = (
        req.data
        or layers.get("data", {}).get("prefixes")
        or (_demo_data() if demo or spec.id.endswith("-tiny") else [])
    )
    if not prefixes:
        raise LlmptError(
            f"--data is required for {spec.id} (only the tiny models default to the shipped corpus)",
            "prepare it with: llmpt prepare-data INPUT… --output PREFIX --tokenizer DIR, then --data PREFIX",
        )
    from llmpt.data.prepare import read_manifest

    tok_vocab = max((m["tokenizer"]["vocab_size"] for p in prefixes if (m := read_manifest(p))), default=0)
    if req.init_from is None and tok_vocab:
        # run_pretrain.py: from scratch, the vocabulary grows to the tokenizer's, rounded up to 128
        model_cfg["vocab_size"] = max(model_cfg["vocab_size"], padded_vocab(tok_vocab))
    manifests, tokenizer_dir = check_data(prefixes, model_cfg["vocab_size"])
    if plan.estimate is not None and model_cfg.get("vocab_size") not in (None, spec.vocab_size):
        # the tokenizer grew the vocabulary: estimate the model that will really be built
        sized = spec.model_copy(update={"vocab_size": model_cfg["vocab_size"]})
        topo = plan.topology
        layout = Layout(
            sized, plan.strategy, plan.expansion.degrees, plan.seq_len, topo.nproc_per_node, req.init_from is None
        )
        plan.estimate = plan_estimate(layout, plan.estimate.device)
    check_fits(plan, req.force)

    output_dir = str(out or Path(plan.launch_command[-1]).parent)
    training_args = {
        **plan.expansion.training_args,
        "output_dir": output_dir,
        "logging_dir": str(Path(output_dir) / "vdl"),
        "max_steps": train.max_steps,
        "learning_rate": train.learning_rate,
        "min_learning_rate": train.min_learning_rate,
        "warmup_steps": train.warmup_steps,
        "lr_scheduler_type": train.lr_scheduler,
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "adam_beta1": train.adam_beta1,
        "adam_beta2": train.adam_beta2,
        "seed": train.seed,
        "logging_steps": train.logging_steps,
        "save_steps": train.save_steps or train.max_steps,
        "save_total_limit": train.save_total_limit,
        "do_train": True,
        "do_eval": train.eval_steps > 0,
        "eval_steps": train.eval_steps or None,
        "evaluation_strategy": "steps" if train.eval_steps else "no",
        "disable_tqdm": True,
        # PaddleNLP's own VisualDL callback crashes on boolean hparams with the pinned visualdl; the rank's
        # MetricsCallback writes the scalars instead
        "report_to": [],
        "dataloader_num_workers": 0,
        "device": plan.topology.device,
        "per_device_eval_batch_size": plan.strategy.batch.micro_batch_size,
    }
    cfg = RunConfig(
        llmpt_version=__version__,
        output_dir=output_dir,
        device=plan.topology.device,  # type: ignore[arg-type]
        world_size=plan.expansion.world_size,
        nnodes=plan.topology.nnodes,
        model=ModelSection(id=spec.id, family=spec.family, config=model_cfg, init_from=req.init_from),
        strategy=plan.strategy,
        degrees=plan.to_dict()["degrees"],
        training_args=training_args,
        model_args=plan.expansion.model_args,
        data=DataSection(prefixes=prefixes, seq_len=plan.seq_len, tokenizer_dir=tokenizer_dir, manifests=manifests),
        train=train,
        notes=plan.notes,
        estimate=None if plan.estimate is None else plan.estimate.to_dict(),
    )
    return cfg, plan
