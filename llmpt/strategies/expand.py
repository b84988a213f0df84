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


def run_training_args(e: Expansion, s: Strategy, train: TrainSettings, output_dir: str, device: str) -> dict[str, Any]:
    """The complete TrainingArguments of a run: the strategy's (`e.training_args`) plus the schedule and
    bookkeeping of `train`, as PaddleNLP's run_pretrain.py reads them."""
    return {
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
        "seed": train.seed,
        "logging_steps": train.logging_steps,
        "save_steps": train.save_steps or train.max_steps,
        "save_total_limit": train.save_total_limit,
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
        "order": list(TOPOLOGY_ORDER),
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
