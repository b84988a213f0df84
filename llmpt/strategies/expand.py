"""Strategy x world size -> fleet hybrid configs + PaddleNLP arguments. The only module that spells Paddle's names
(fleet's hybrid_configs keys and every PaddleNLP TrainingArguments key llmpt sets, the schedule's included).

It mirrors what PaddleNLP's TrainingArguments.__post_init__ builds from its own arguments (3.0.0b4), so that
`hybrid_configs` here is what fleet.init will really receive; tests/integration/test_paddlenlp_args.py checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmpt.run_config import TrainSettings
from llmpt.run_dir import RunDir
from llmpt.strategies.parallel_dims import ParallelDims
from llmpt.strategies.schema import Strategy

# PaddleNLP's default hybrid_parallel_topo_order "pp_first" with segment parallel available (Paddle >= 2.6).
TOPOLOGY_ORDER = ("dp", "pp", "sharding", "sep", "mp")
# With use_expert_parallel its hybrid branch reorders that to order[1:-1] + ["dp", "mp"] (training_args.py,
# 3.0.0b4): dp next to mp, so that a data-parallel group (the experts' all-to-all group) is adjacent ranks
EXPERT_TOPOLOGY_ORDER = (*TOPOLOGY_ORDER[1:-1], "dp", "mp")
# PaddleNLP's run_pretrain.py evaluates eval_iters = 10 batches per evaluation (the same first batches of the
# validation split each time); the rank sizes the validation dataset from this number
EVAL_ITERS = 10


@dataclass(frozen=True)
class Expansion:
    """Everything a launch needs to know about the parallel layout."""

    world_size: int
    degrees: ParallelDims  # resolved: dp known
    hybrid_configs: dict[str, Any]
    pipeline_configs: dict[str, Any]
    training_args: dict[str, Any]
    model_args: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_hybrid_parallel(self) -> bool:
        """PaddleNLP calls fleet.init with a hybrid strategy only when some axis besides dp is > 1."""
        return self.degrees.splits_model


def expand(s: Strategy, world_size: int, world_flag: str = "world size") -> Expansion:
    """Expand a checked strategy for `world_size` ranks (devices x nodes)."""
    d = s.parallel.dims.for_world(world_size, s.name, world_flag)
    return Expansion(
        world_size=world_size,
        degrees=d,
        hybrid_configs=_hybrid_configs(s, d),
        pipeline_configs=_pipeline_configs(s) if d.pp > 1 else {},
        training_args=_training_args(s, d),
        model_args={
            "fuse_attention_qkv": s.kernels.fuse_attention_qkv,
            "fuse_attention_ffn": s.kernels.fuse_attention_ffn,
        },
    )


def run_training_args(
    e: Expansion,
    s: Strategy,
    train: TrainSettings,
    output_dir: str,
    device: str,
    passthrough: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The complete TrainingArguments of a run: the strategy's (`e.training_args`) plus the schedule and
    bookkeeping of `train`, as PaddleNLP's run_pretrain.py reads them, plus the user's `training_args.*`
    passthrough (names llmpt does not set; the request refuses OWNED_TRAINING_ARGS and MANAGED_TRAINING_ARGS)."""
    owned = {
        **e.training_args,
        "output_dir": output_dir,
        "logging_dir": str(RunDir(output_dir).vdl),
        "max_steps": train.max_steps,
        "learning_rate": train.learning_rate,
        "min_learning_rate": train.min_learning_rate,
        "warmup_steps": train.warmup_steps,
        "lr_scheduler_type": train.lr_scheduler,  # the rank builds run_pretrain.py's scheduler from this
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "adam_beta1": train.adam_beta1,
        "adam_beta2": train.adam_beta2,
        # sgd is not PaddleNLP's: the rank builds it in place of the optimizer this names
        "optim": "adamw" if train.optimizer == "sgd" else train.optimizer,
        "seed": train.seed,
        "logging_steps": train.logging_steps,
        "save_steps": train.save_steps or train.max_steps,
        "save_total_limit": train.save_total_limit,
        # PaddleNLP's unified checkpoint (its pretraining configs turn it on): whole tensors, re-split on load, so
        # --resume may change the layout (llmpt/resolve/resume.py); PaddleNLP turns it off under sharding stage 3
        "unified_checkpoint": True,
        "do_train": True,
        "do_eval": train.eval_steps > 0,
        "eval_steps": train.eval_steps or None,
        "evaluation_strategy": "steps" if train.eval_steps else "no",
        "disable_tqdm": True,
        # not a knob: PaddleNLP's own VisualDL callback crashes on boolean hparams with the pinned visualdl, so
        # train.report_to drives llmpt's MetricsCallback instead (one channel)
        "report_to": [],
        "dataloader_num_workers": 0,
        "device": device,
        "per_device_eval_batch_size": s.batch.micro_batch_size,
        "max_evaluate_steps": EVAL_ITERS,
    }
    clash = sorted(set(passthrough or {}) & set(owned))
    if clash:
        raise ValueError(f"training_args.{clash[0]} is set by llmpt ({OWNED_TRAINING_ARGS.get(clash[0])})")
    return {**owned, **(passthrough or {})}


# Every TrainingArguments name llmpt sets itself, and the llmpt setting that owns it: `training_args.<name>` is
# refused with that setting's name, so no knob travels two channels (tests/unit/test_settings.py checks these are
# exactly the names run_training_args writes).
OWNED_TRAINING_ARGS: dict[str, str] = {
    "tensor_parallel_degree": "the strategy name (--strategy, tpN)",
    "pipeline_parallel_degree": "the strategy name (--strategy, ppN)",
    "sharding_parallel_degree": "the strategy name (--strategy, sdN)",
    "sep_parallel_degree": "the strategy name (--strategy, sepN)",
    "context_parallel_degree": "the strategy name (--strategy, cpN)",
    "use_expert_parallel": "the strategy name (--strategy, epN)",
    "sharding": "the strategy name (--strategy, sdN_stageS[_offload])",
    "virtual_pp_degree": "the strategy name (--strategy, _vppN)",
    "sequence_parallel": "the strategy name (--strategy, _sp)",
    "hybrid_parallel_topo_order": "llmpt (pp_first: the order fleet's hybrid_configs are built in)",
    "recompute": "strategy.recompute.granularity",
    "optim": "train.optimizer",
    "recompute_granularity": "strategy.recompute.granularity",
    "recompute_use_reentrant": "strategy.recompute.use_reentrant",
    "no_recompute_layers": "strategy.recompute.no_recompute_layers",
    "use_flash_attention": "strategy.kernels.flash_attention",
    "use_fused_rms_norm": "strategy.kernels.fused_rms_norm",
    "use_fused_rope": "strategy.kernels.fused_rope",
    "bf16": "strategy.precision.dtype",
    "fp16": "strategy.precision.dtype",
    "fp16_opt_level": "strategy.precision.amp_level",
    "amp_master_grad": "strategy.precision.master_grad",
    "per_device_train_batch_size": "strategy.batch.micro_batch_size",
    "gradient_accumulation_steps": "strategy.batch.grad_accum",
    "tensor_parallel_config": "strategy.overlap.tensor_parallel",
    "pipeline_parallel_config": "strategy.overlap.pipeline_parallel",
    "sharding_parallel_config": "strategy.overlap.sharding",
    "data_parallel_config": "strategy.overlap.data_parallel",
    "output_dir": "--output-dir",
    "logging_dir": "--output-dir (VisualDL scalars go to <output-dir>/vdl)",
    "max_steps": "train.max_steps (--max-steps)",
    "learning_rate": "train.learning_rate",
    "min_learning_rate": "train.min_learning_rate",
    "warmup_steps": "train.warmup_steps",
    "lr_scheduler_type": "train.lr_scheduler",
    "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm",
    "adam_beta1": "train.adam_beta1",
    "adam_beta2": "train.adam_beta2",
    "seed": "train.seed (--seed)",
    "logging_steps": "train.logging_steps",
    "save_steps": "train.save_steps (--save-steps)",
    "save_total_limit": "train.save_total_limit",
    "unified_checkpoint": "llmpt (always on: whole tensors in every checkpoint, so --resume may change the layout)",
    "do_train": "llmpt (always on)",
    "do_eval": "train.eval_steps",
    "eval_steps": "train.eval_steps",
    "evaluation_strategy": "train.eval_steps",
    "disable_tqdm": "llmpt (its own progress line)",
    "report_to": "train.report_to",
    "dataloader_num_workers": "llmpt (0: ranks read the mmap dataset themselves)",
    "device": "--device",
    "per_device_eval_batch_size": "strategy.batch.micro_batch_size",
    "max_evaluate_steps": "llmpt (10 batches per evaluation, as run_pretrain.py)",
}
# Names llmpt does not write but that its launcher, supervisor or the rank decide, or that would have no effect in
# the rank (which builds run_pretrain.py's scheduler itself and trains by steps): refused, never dropped.
MANAGED_TRAINING_ARGS: dict[str, str] = {
    "overwrite_output_dir": "--overwrite",
    "resume_from_checkpoint": "--resume (the newest checkpoint every rank finished)",
    "local_rank": "paddle.distributed.launch",
    "sharding_degree": "the strategy name (--strategy, sdN; sharding_degree is PaddleNLP's deprecated alias)",
    "logging_strategy": "train.logging_steps (llmpt's metrics feed logs by steps)",
    "save_strategy": "train.save_steps (llmpt saves by steps and marks complete checkpoints)",
    "unified_checkpoint_config": "llmpt (async_save would write after llmpt marks a checkpoint complete; "
    "ignore_merge_optimizer and skip_save_model_weight would tie the checkpoint to its layout)",
    "warmup_ratio": "train.warmup_steps (the rank builds run_pretrain.py's scheduler, which takes steps)",
    "num_cycles": "train.lr_scheduler (the rank builds run_pretrain.py's cosine/linear scheduler)",
    "lr_end": "train.min_learning_rate (the floor of run_pretrain.py's scheduler)",
    "power": "train.lr_scheduler (the rank builds run_pretrain.py's cosine/linear scheduler)",
    "num_train_epochs": "train.max_steps (llmpt trains by steps)",
    "do_predict": "nothing: the ranks train and evaluate, they do not predict",
    "do_export": "nothing: the ranks train and evaluate, they do not export",
    "expert_parallel_degree": "the strategy name (--strategy, epN): PaddleNLP 3.0.0b4's MoE layer splits experts "
    "over the data-parallel group; expert_parallel_degree > 1 needs dp 1 and builds groups no 3.0.0b4 modeling reads",
    "expert_tensor_parallel_degree": "nothing: PaddleNLP 3.0.0b4 asserts it is 1 (expert tensor parallel unsupported)",
    "enable_auto_parallel": "nothing: llmpt runs PaddleNLP's dynamic hybrid-parallel Trainer",
}


def _sharding_word(s: Strategy, d: ParallelDims) -> str:
    if d.sharding == 1:
        return ""
    word = f"stage{s.parallel.stage}"
    return f"{word} offload" if s.parallel.offload else word


def _training_args(s: Strategy, d: ParallelDims) -> dict[str, Any]:
    p, rc, prec, ov, k = s.parallel, s.recompute, s.precision, s.overlap, s.kernels
    recompute_on = rc.granularity != "off"
    return {
        # degrees
        "tensor_parallel_degree": d.tp,
        "pipeline_parallel_degree": d.pp,
        "sharding_parallel_degree": d.sharding,
        "sep_parallel_degree": d.sep,
        "context_parallel_degree": d.cp,
        # expert parallel: the Trainer leaves expert gradients out of the data-parallel all-reduce (they are the
        # rank's own experts) and every dp rank saves its experts; expert_parallel_degree stays unset (see
        # MANAGED_TRAINING_ARGS)
        "use_expert_parallel": d.ep > 1,
        "sharding": _sharding_word(s, d),
        "virtual_pp_degree": p.virtual_pp,
        "sequence_parallel": p.sequence_parallel,
        "hybrid_parallel_topo_order": "pp_first",
        # recompute; PaddleNLP keeps a granularity even when recompute is off ("full" is its default)
        "recompute": recompute_on,
        "recompute_granularity": rc.granularity if recompute_on else "full",
        "recompute_use_reentrant": rc.use_reentrant,
        "no_recompute_layers": sorted(rc.no_recompute_layers) or None,
        # kernels
        "use_flash_attention": k.flash_attention,
        "use_fused_rms_norm": k.fused_rms_norm,
        "use_fused_rope": k.fused_rope,
        # precision
        "bf16": prec.dtype == "bf16",
        "fp16": prec.dtype == "fp16",
        "fp16_opt_level": prec.amp_level,
        "amp_master_grad": prec.master_grad,
        # batch
        "per_device_train_batch_size": s.batch.micro_batch_size,
        "gradient_accumulation_steps": s.batch.grad_accum,
        # overlap/fusion option strings, space separated as PaddleNLP splits them
        "tensor_parallel_config": " ".join(ov.tensor_parallel),
        "pipeline_parallel_config": " ".join(ov.pipeline_parallel),
        "sharding_parallel_config": " ".join(ov.sharding),
        "data_parallel_config": " ".join(ov.data_parallel),
    }


def _hybrid_configs(s: Strategy, d: ParallelDims) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "dp_degree": d.dp,
        "mp_degree": d.tp,
        "pp_degree": d.pp,
        "sharding_degree": d.sharding,
        "sep_degree": d.sequence_degree,
        "order": list(EXPERT_TOPOLOGY_ORDER if d.ep > 1 and d.splits_model else TOPOLOGY_ORDER),
    }
    if d.pp > 1:
        cfg["pp_configs"] = _pp_configs(s, d)
    if d.tp > 1:
        cfg["mp_configs"] = _mp_configs(s)
    if d.sharding > 1:
        cfg["sharding_configs"] = _sharding_configs(s, d)
    return cfg


def _pipeline_configs(s: Strategy) -> dict[str, Any]:
    ov = s.overlap.pipeline_parallel
    # PaddleNLP turns partial send/recv off by itself under sequence parallel; say so explicitly here.
    partial = "disable_partial_send_recv" not in ov and not s.parallel.sequence_parallel
    return {
        "accumulate_steps": s.batch.grad_accum,
        "micro_batch_size": s.batch.micro_batch_size,
        "enable_partial_send_recv": partial,
        "p2p_cache_shape": "disable_p2p_cache_shape" not in ov,
    }


def _pp_configs(s: Strategy, d: ParallelDims) -> dict[str, Any]:
    ov = s.overlap.pipeline_parallel
    comm_overlap = "enable_sharding_comm_overlap" in ov or "enable_dp_comm_overlap" in ov
    return {
        "delay_scale_loss": "enable_delay_scale_loss" in ov,
        "dp_comm_overlap": comm_overlap and d.dp > 1,
        "sharding_comm_overlap": comm_overlap and d.sharding > 1,
        "enable_timer": "enable_timer" in ov,
        "release_gradients": "enable_release_grads" in ov,
        "overlap_p2p_comm": "enable_overlap_p2p_comm" in ov,
        "clear_every_step_cache": "enable_clear_every_step_cache" in ov,
        "use_batch_p2p_comm": "disable_batch_p2p_comm" not in ov,
        "best_unbalanced_scheduler": "best_unbalanced_scheduler" in ov,
        "use_dualpipev": "use_dualpipev" in ov,
    }


def _mp_configs(s: Strategy) -> dict[str, Any]:
    ov = s.overlap.tensor_parallel
    async_ar = "enable_mp_async_allreduce" in ov
    sync = {k: k in ov for k in ("sync_param", "sync_grad", "sync_moment")}
    cfg: dict[str, Any] = {
        "mp_async_allreduce": async_ar,
        # these two only take effect together with async all-reduce (PaddleNLP warns and drops them otherwise)
        "mp_skip_c_identity": async_ar and "enable_mp_skip_c_identity" in ov,
        "mp_fused_linear_param_grad_add": async_ar and "enable_mp_fused_linear_param_grad_add" in ov,
        "sp_async_reduce_scatter": "enable_sp_async_reduce_scatter" in ov,
    }
    if any(sync.values()):
        cfg.update(sync)
    return cfg


def _sharding_configs(s: Strategy, d: ParallelDims) -> dict[str, Any]:
    ov = s.overlap.sharding
    cfg: dict[str, Any] = {
        "split_param": "split_param" in ov,
        "release_gradients": "enable_release_grads" in ov,
        "enable_fuse_optimizer_states": "enable_fuse_optimizer_states" in ov,
    }
    if "disable_stage1_reduce_avg" in ov:
        cfg["use_reduce_avg"] = False
    if d.pp == 1:
        # with pp > 1 PaddleNLP ignores these two (they belong in pipeline_parallel_config then)
        cfg["tensor_fusion"] = "enable_stage1_tensor_fusion" in ov
        cfg["comm_overlap"] = "enable_stage1_overlap" in ov
        if cfg["comm_overlap"]:
            cfg["accumulate_steps"] = s.batch.grad_accum
    return cfg
