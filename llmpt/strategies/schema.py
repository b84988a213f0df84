"""The parallel-strategy schema: what a strategy may say, with a description for every field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmpt.strategies.parallel_dims import AXES, ParallelDims

# PaddleNLP's accepted option words for the *_parallel_config strings
# (paddlenlp/trainer/training_args.py, 3.0.0b4). Anything else makes TrainingArguments raise.
TENSOR_PARALLEL_OPTIONS = (
    "enable_mp_async_allreduce",
    "enable_mp_skip_c_identity",
    "enable_mp_fused_linear_param_grad_add",
    "enable_sp_async_reduce_scatter",
    "enable_delay_scale_loss",
    "sync_param",
    "sync_grad",
    "sync_moment",
)
PIPELINE_PARALLEL_OPTIONS = (
    "disable_p2p_cache_shape",
    "disable_partial_send_recv",
    "enable_delay_scale_loss",
    "enable_dp_comm_overlap",
    "enable_sharding_comm_overlap",
    "enable_timer",
    "enable_release_grads",
    "enable_clear_every_step_cache",
    "enable_overlap_p2p_comm",
    "disable_batch_p2p_comm",
    "best_unbalanced_scheduler",
    "use_dualpipev",
)
SHARDING_OPTIONS = (
    "enable_stage1_tensor_fusion",
    "enable_stage1_overlap",
    "enable_stage2_overlap",
    "split_param",
    "disable_stage1_reduce_avg",
    "enable_stage1_broadcast_overlap",
    "enable_stage1_allgather_overlap",
    "enable_release_grads",
    "enable_fuse_optimizer_states",
)
DATA_PARALLEL_OPTIONS = (
    "enable_allreduce_avg_in_gradinent_scale",  # sic: PaddleNLP's spelling
    "gradient_sync_after_accumulate",
)

RecomputeGranularity = Literal["off", "full", "full_attn", "core_attn"]
# KernelConfig switches that only Paddle's GPU builds implement (CPU ranks turn them off; doctor probes them)
GPU_KERNELS = ("flash_attention", "fused_rms_norm", "fused_rope")


class _Section(BaseModel):
    # frozen: a resolved strategy is a value; extra=forbid: a misspelt key is an error, not a silent default
    model_config = ConfigDict(frozen=True, extra="forbid")


class ParallelConfig(_Section):
    """How the ranks are split. The strategy name spells all of it (e.g. tp2sd4_stage2)."""

    dp: int | None = Field(
        None, ge=1, description="Data-parallel degree. Unset: derived as world size / (tp x pp x sharding x sep x cp)."
    )
    tp: int = Field(1, ge=1, description="Tensor (model) parallel degree: fleet mp_degree.")
    pp: int = Field(1, ge=1, description="Pipeline parallel degree: fleet pp_degree.")
    sharding: int = Field(1, ge=1, description="Sharding (ZeRO) degree, 'sd' in names: fleet sharding_degree.")
    sep: int = Field(1, ge=1, description="Segment (sequence) parallel degree: splits the sequence across ranks.")
    cp: int = Field(1, ge=1, description="Context parallel degree (ring attention); exclusive with sep.")
    ep: int = Field(
        1,
        ge=1,
        description="Expert parallel degree, 'ep' in names: a mixture-of-experts model's experts split over the dp "
        "ranks (PaddleNLP 3.0.0b4's MoE layer uses the data-parallel group), so ep equals dp; use_expert_parallel.",
    )
    stage: Literal[1, 2, 3] = Field(
        1, description="Sharding stage: 1 shards optimizer states, 2 also gradients, 3 also parameters."
    )
    offload: bool = Field(False, description="Offload sharded optimizer states to host memory (stage 2/3).")
    sequence_parallel: bool = Field(
        False, description="Megatron sequence parallel: shard layer-norm/dropout activations over the tp group."
    )
    virtual_pp: int = Field(1, ge=1, description="Virtual pipeline stages per rank (interleaved 1F1B).")

    @property
    def dims(self) -> ParallelDims:
        """The degrees alone (dp None = derived from the world size): the one object that does arithmetic on them."""
        return ParallelDims(**{a: getattr(self, a) for a in AXES})

    @classmethod
    def from_dims(cls, dims: ParallelDims, **rest: Any) -> ParallelConfig:
        """Degrees plus the layout's other fields (stage, offload, virtual_pp, sequence_parallel)."""
        return cls(**dims.to_dict(), **rest)


class RecomputeConfig(_Section):
    """Activation recomputation: trade compute for memory."""

    granularity: RecomputeGranularity = Field(
        "off",
        description="off; full (whole decoder layer); full_attn (attention block); core_attn (softmax(QK)V only).",
    )
    no_recompute_layers: tuple[int, ...] = Field(
        (), description="Selective recompute: indices of decoder layers that are NOT recomputed."
    )
    use_reentrant: bool = Field(False, description="Use the reentrant recompute implementation.")

    @model_validator(mode="after")
    def _check(self) -> RecomputeConfig:
        if self.no_recompute_layers and self.granularity == "off":
            raise ValueError("no_recompute_layers needs recompute on (granularity full, full_attn or core_attn)")
        if any(i < 0 for i in self.no_recompute_layers):
            raise ValueError(f"no_recompute_layers must be layer indices >= 0 (got {list(self.no_recompute_layers)})")
        return self


class PrecisionConfig(_Section):
    """Numeric precision of the forward/backward pass."""

    dtype: Literal["bf16", "fp16", "fp32"] = Field("fp32", description="Compute dtype; bf16/fp16 use Paddle AMP.")
    amp_level: Literal["O1", "O2"] = Field(
        "O2", description="AMP level (fp16_opt_level): O1 casts per op, O2 keeps weights in low precision."
    )
    master_grad: bool = Field(False, description="Keep fp32 master gradients under AMP (amp_master_grad).")


class BatchConfig(_Section):
    """Per-rank batch shape."""

    micro_batch_size: int = Field(1, ge=1, description="Sequences per rank per forward (per_device_train_batch_size).")
    grad_accum: int = Field(
        1, ge=1, description="Micro batches accumulated per optimizer step (gradient_accumulation_steps)."
    )


class KernelConfig(_Section):
    """Optional fast kernels. Turned on 'where the model supports them'; all are GPU-only in Paddle."""

    flash_attention: bool = Field(False, description="Flash attention (use_flash_attention).")
    fused_rms_norm: bool = Field(False, description="Fused RMSNorm kernel (use_fused_rms_norm).")
    fused_rope: bool = Field(False, description="Fused rotary embedding kernel (use_fused_rope).")
    fuse_attention_qkv: bool = Field(False, description="One QKV projection matmul instead of three.")
    fuse_attention_ffn: bool = Field(False, description="One gate+up projection matmul in the MLP.")


class OverlapConfig(_Section):
    """Communication overlap and fusion switches, in PaddleNLP's own option words."""

    tensor_parallel: tuple[str, ...] = Field(
        (), description=f"tensor_parallel_config options; allowed: {', '.join(TENSOR_PARALLEL_OPTIONS)}."
    )
    pipeline_parallel: tuple[str, ...] = Field(
        (), description=f"pipeline_parallel_config options; allowed: {', '.join(PIPELINE_PARALLEL_OPTIONS)}."
    )
    sharding: tuple[str, ...] = Field(
        (), description=f"sharding_parallel_config options; allowed: {', '.join(SHARDING_OPTIONS)}."
    )
    data_parallel: tuple[str, ...] = Field(
        (), description=f"data_parallel_config options; allowed: {', '.join(DATA_PARALLEL_OPTIONS)}."
    )


class Strategy(_Section):
    """A complete parallel strategy: the name's degrees plus what a preset adds."""

    name: str = Field(description="Canonical strategy name, e.g. tp2sd4_stage2 (see llmpt.strategies.grammar).")
    description: str = Field("", description="One line for `llmpt presets list`.")
    parallel: ParallelConfig = Field(default_factory=ParallelConfig, description="Parallel degrees.")
    recompute: RecomputeConfig = Field(default_factory=RecomputeConfig, description="Activation recomputation.")
    precision: PrecisionConfig = Field(default_factory=PrecisionConfig, description="Precision and AMP.")
    batch: BatchConfig = Field(default_factory=BatchConfig, description="Micro batch and accumulation.")
    kernels: KernelConfig = Field(default_factory=KernelConfig, description="Optional fused/flash kernels.")
    overlap: OverlapConfig = Field(default_factory=OverlapConfig, description="Communication overlap options.")


# What a preset file may hold: everything but what the name already says.
PRESET_SECTIONS = ("description", "recompute", "precision", "batch", "kernels", "overlap")
