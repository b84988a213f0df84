"""Per-card memory and throughput of a run, from the model's shapes, the strategy and the device (no paddle).

Memory, per card of the busier pipeline stage (stage_memory: the first holds the embedding and pp micro batches in
flight, the last the LM head and the logits):
- weights, gradients, fp32 master weights, Adam moments: counted from the exact parameter layout (shapes.py),
  divided by tp/pp (MoE: routed experts by ep), and by the sharding degree as Paddle's sharding stages divide them
  (stage 1: optimizer state; stage 2: + gradients; stage 3: + weights, plus the gathered layers in flight).
- activations: Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"), term by
  term for each family's layer (SwiGLU or GELU MLP, LayerNorm or RMSNorm statistics, GQA/MLA widths, dropout masks,
  MoE experts and dispatch), with tp, sequence parallel, selective/full recompute, flash attention (no s x s scores)
  and ALiBi's materialised bias; times the micro batches a 1F1B pipeline keeps in flight.
- logits and cross-entropy buffers of the last stage; the rotary tables each attention layer of llama, qwen2 and
  mistral builds (shapes.rotary_table_bytes); communication buffers (pp p2p, dp's fused all-reduce copy); a fitted
  runtime term for what the framework allocates beyond these tensors. The card's usable memory is its size less
  the CUDA context and an allocator share proportional to the card (usable_mb).
Throughput (step_parts): matmul FLOPs per token (6N on the active parameters + the attention term + what recompute
repeats) at the device's fitted matmul efficiency; memory-bound kernels (norms, residuals, rotary, activations,
dropout, cross-entropy, gradient accumulation, optimizer update, fp16's loss scaler) at its datasheet HBM
bandwidth; and what the strategy cannot hide: tensor-parallel all-reduces, MoE all-to-all, the pipeline bubble and
p2p, sharding/data-parallel traffic, offload. MFU counts model FLOPs only (no recompute), as the seed's table and
Megatron do. The two fitted constants (RUNTIME_MB_GPU, the A100's expected_hfu) and their leave-one-out error:
bench/plan_vs_seed.py.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

from llmpt.models.registry import ModelSpec
from llmpt.planner.devices import Device
from llmpt.planner.shapes import ParamGroups, dims, forward_flops_per_token, param_groups, rotary_table_bytes
from llmpt.strategies.parallel_dims import ParallelDims
from llmpt.strategies.schema import Strategy

MiB = 2**20
# ---- fitted on the seed table (bench/plan_vs_seed.py refits both and prints the leave-one-out error) ----
# 1. What Paddle allocates beyond the tensors counted here (workspaces, clip-grad and cast temporaries, the causal
#    mask; max_memory_allocated, so not the CUDA context), per GPU: the minimax fit over the seed's 11 rows.
RUNTIME_MB_GPU = 10500.0
# 2. The matmuls' share of tensor-core peak: devices.yaml expected_hfu of the A100/A800 rows (minimax fit).
# ---- not fitted: measured elsewhere or from a cited physical source ----
RUNTIME_MB_CPU = 700.0  # a CPU rank's Python + Paddle + PaddleNLP before any tensor (measured: the demo's RSS)
# What the card holds outside max_memory_allocated. The seed's note (SEED.md section 4): physical use is 2-3 GB above
# max_memory_allocated on the 80 GB A100. Of that, the CUDA context with cuBLAS/cuDNN handles is a fixed size (a few
# hundred MB on Ampere/Hopper: assumed 512 MiB); the rest is the auto-growth allocator's cached, fragmented blocks,
# which grow with what the card can hold: the seed's upper 3 GB less the context, as a share of the 80 GB card.
CUDA_CONTEXT_MB = 512.0
ALLOCATOR_SHARE = (3072.0 - CUDA_CONTEXT_MB) / 81920.0  # 3.1% of the card
INTER_NODE_GBS = 25.0  # 200 Gb/s InfiniBand per GPU, the common GPU-cluster fabric
LINK_EFFICIENCY = 0.75  # ring collectives reach ~3/4 of the link's nominal bandwidth (a stated assumption, not fitted)
# Memory-bound kernels (norms, residual adds, rotary, activation functions, casts, softmax/cross-entropy, the
# optimizer update) move bytes, not FLOPs: timed at this share of the datasheet HBM bandwidth (devices.yaml hbm_gbs).
# Streaming copies reach ~90% of peak on A100/H100 (NVIDIA's bandwidthTest, STREAM-style microbenchmarks); framework
# elementwise kernels with launch gaps a little less: 0.8 is a stated assumption, not a fit.
HBM_EFFICIENCY = 0.8
# Optimizer offload (sharding stage 2/3 with offload: Paddle's group-sharded optimizer keeps master weights and
# moments in host memory and updates them there, synchronously, after the gradients). No seed row offloads: both
# numbers are stated assumptions, not fits. PCIe 4.0 x16 carries 32 GB/s each way nominal (PCI-SIG), ~25 achieved.
OFFLOAD_PCIE_GBS = 25.0
# Host memory traffic of the CPU AdamW update, per card: a two-socket host's DRAM (2 x 8 channels of DDR4-3200,
# 409.6 GB/s nominal, about half achieved) shared by 8 cards is ~25 GB/s each; Paddle's CPU AdamW kernel is not the
# vectorised CPU-Adam of ZeRO-Offload (Ren et al. 2021), so 10 GB/s per card is assumed.
OFFLOAD_HOST_GBS = 10.0
# bytes the host update touches per parameter: fp32 gradient read (4), master weight, first and second moment read
# and written (3 x 8), the bf16/fp16 weight written back (2)
OFFLOAD_HOST_BYTES = 4 + 3 * 8 + 2


@dataclass(frozen=True)
class Layout:
    """The inputs of one estimate: what the planner varies when it looks for a knob."""

    spec: ModelSpec
    strategy: Strategy
    degrees: ParallelDims
    seq_len: int
    nproc_per_node: int
    from_scratch: bool = True
    dropout: float = 0.0
    optimizer: str = "adamw"  # train.optimizer: how many bytes of state each parameter keeps (OPTIMIZER_STATE_BYTES)


@dataclass
class Estimate:
    device: Device | None  # None: CPU ranks
    memory_mb: dict[str, float]
    params_total: int
    params_per_card: int
    params_active: int  # what one token runs through (= params_total for dense models)
    model_flops_per_token: float
    hardware_flops_per_token: float
    # the verdict against a capacity, and the throughput where the device has a peak for the dtype
    capacity_mb: float | None = None
    fits: bool | None = None
    step_time_s: float | None = None
    tokens_per_card_per_sec: float | None = None
    mfu: float | None = None
    hfu: float | None = None
    step_time_parts: dict[str, float] = field(default_factory=dict)  # seconds per step by part (step_parts)
    notes: list[str] = field(default_factory=list)
    knob: dict[str, Any] | None = None
    knob_layout: Layout | None = None  # the layout `knob` describes (not serialised)

    @property
    def memory_mb_per_card(self) -> float:
        return sum(self.memory_mb.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device.name if self.device else "cpu",
            "device_calibrated": self.device.calibrated if self.device else None,
            "memory_mb_per_card": round(self.memory_mb_per_card, 1),
            "memory_mb": {k: round(v, 4) for k, v in self.memory_mb.items()},
            "capacity_mb": None if self.capacity_mb is None else round(self.capacity_mb, 1),
            "fits": self.fits,
            "params_total": self.params_total,
            "params_per_card": self.params_per_card,
            "params_active": self.params_active,
            "model_flops_per_token": self.model_flops_per_token,
            "hardware_flops_per_token": self.hardware_flops_per_token,
            "step_time_s": None if self.step_time_s is None else round(self.step_time_s, 4),
            "step_time_s_parts": {k: round(v, 4) for k, v in self.step_time_parts.items()},
            "tokens_per_card_per_sec": (
                None if self.tokens_per_card_per_sec is None else round(self.tokens_per_card_per_sec, 2)
            ),
            "mfu": None if self.mfu is None else round(self.mfu, 4),
            "hfu": None if self.hfu is None else round(self.hfu, 4),
            "first_knob": self.knob,
            "notes": self.notes,
        }


def _bytes(dtype: str) -> int:
    return 4 if dtype == "fp32" else 2


def ep_degree(lay: Layout) -> int:
    """Expert-parallel degree of the layout (1 until the strategy grammar's ep<N> sets it)."""
    return getattr(lay.degrees, "ep", 1) or 1


def _expert_params_on_card(lay: Layout) -> int:
    """Routed-expert parameters on one card of a stage (its share of the MoE layers, divided by ep and where the
    family's experts are tensor-parallel by tp)."""
    g = param_groups(lay.spec, lay.seq_len, lay.from_scratch)
    deg = lay.degrees
    split = ep_degree(lay) * (deg.tp if g.experts_split_by_tp else 1)
    return math.ceil(g.moe_layers / deg.pp) * g.experts // split


def stage_params(g: ParamGroups, tp: int, pp: int, ep: int = 1) -> tuple[int, int]:
    """Parameters held by one card of the first and of the last pipeline stage. An MoE model's leading dense layers
    (deepseek_v2's first_k_dense_replace) sit in the first stage; its routed experts are divided by ep."""
    layers = math.ceil(g.layers / pp)
    embed = g.embed // tp + g.positions
    head = g.head // tp + g.final

    def stage(dense: int) -> int:
        return dense * g.layer_on_card(False, tp, ep) + (layers - dense) * g.layer_on_card(True, tp, ep)

    first_dense = min(g.dense_layers, layers)
    last_dense = min(layers, max(0, g.dense_layers - (pp - 1) * layers))
    if pp == 1:
        return embed + stage(first_dense) + head, embed + stage(first_dense) + head
    tied_copy = g.embed // tp if g.head == 0 else 0  # PaddleNLP's pipe models share the embedding with the last stage
    return embed + stage(first_dense), stage(last_dense) + head + tied_copy


# fp32 optimizer state per parameter (PaddleNLP 3.0.0b4): AdamW's two moments; AdamWMini's first moment and one
# second-moment value per parameter tensor (paddlenlp/utils/optimizer.py AdamWMini._add_moments_pows: shape [1]),
# nothing per element; llmpt's SGD has no momentum (llmpt/train/entry.py PretrainTrainer.create_optimizer)
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw_mini": 4, "sgd": 0}


def _state_bytes(n: int, layer_params: int, lay: Layout) -> dict[str, float]:
    """Weights, gradients, master weights and moments of n parameters on one card."""
    s, p = lay.strategy, lay.strategy.parallel
    sd = lay.degrees.sharding
    stage = p.stage if sd > 1 else 0
    amp = s.precision.dtype != "fp32"
    o2 = amp and s.precision.amp_level == "O2"
    w_bytes = 2 if o2 else 4
    g_bytes = 4 if (not o2 or s.precision.master_grad) else 2
    weights = n * w_bytes
    if stage == 3:  # sharded weights, plus the current and the prefetched layer gathered in full
        weights = n * w_bytes / sd + 2 * layer_params * w_bytes
    grads = n * g_bytes / (sd if stage >= 2 else 1)
    master = n * 4 / (sd if stage >= 1 else 1) if o2 else 0.0
    moments = n * OPTIMIZER_STATE_BYTES[lay.optimizer] / (sd if stage >= 1 else 1)
    if p.offload:
        master, moments = 0.0, 0.0
    return {"weights": weights, "gradients": grads, "master_weights": master, "optimizer_moments": moments}


def layer_activation_bytes(lay: Layout, tokens: float) -> tuple[float, float]:
    """(bytes a layer keeps for backward, bytes of its input alone) for `tokens` tokens on one card; an MoE model's
    average over its dense and MoE layers."""
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    if not d.moe_layers:
        return _layer_activation_bytes(lay, tokens, False)
    dense = d.layers - d.moe_layers
    kept_m, block = _layer_activation_bytes(lay, tokens, True)
    kept_d = _layer_activation_bytes(lay, tokens, False)[0] if dense else 0.0
    return (dense * kept_d + d.moe_layers * kept_m) / d.layers, block


def _moe_mlp_activation_bytes(lay: Layout, tokens: float) -> float:
    """Bytes per token an MoE layer's FFN keeps: for each of its top-k experts the gathered copy of the token (the
    expert's input) and the expert output the routing weight multiplies, the expert's SwiGLU tensors (gate, up,
    SiLU output, product: 4 x its width, divided by tp where the experts are tensor-parallel); the shared expert's
    SwiGLU tensors; the router's float32 logits and probabilities. MoELayer's GShard dispatch (qwen2_moe,
    deepseek_v2) keeps the [tokens, experts, capacity] dispatch mask and combine weights in the compute dtype,
    experts x capacity = tokens x top-k at balanced load (the lower bound: PaddleNLP sizes capacity by the busiest
    expert, drop_tokens off)."""
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    t = lay.degrees.tp
    b = _bytes(lay.strategy.precision.dtype)
    te = t if d.experts_split_by_tp else 1
    kept = d.top_k * (2 * d.hidden + 4 * d.expert_ffn / te) * b + 4 * d.shared_ffn / t * b + 2 * d.num_experts * 4
    if d.gshard_dispatch:
        kept += 2 * tokens * d.top_k * b
    return kept


def _layer_activation_bytes(lay: Layout, tokens: float, moe: bool) -> tuple[float, float]:
    s = lay.strategy
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    t = lay.degrees.tp
    b = _bytes(s.precision.dtype)
    sp = t if (s.parallel.sequence_parallel and t > 1) else 1
    h, f = d.hidden, d.ffn
    flash = s.kernels.flash_attention
    mask = 1 if lay.dropout > 0 else 0
    heads = d.heads / t
    seq = lay.seq_len
    # replicated (or sequence-parallel) tensors: two norm inputs, the attention and MLP matmul inputs, dropout masks
    block_in = h * b / sp
    attn_in = h * b / sp
    mlp_in = h * b / sp
    masks = 2 * h * mask / sp
    # each norm saves its per-token statistics in float32 for backward: RMSNorm the reciprocal RMS (4 bytes), the
    # LayerNorm of GPT-style blocks the mean and the reciprocal deviation (8)
    masks += 2 * (4 if d.gated else 8) / sp
    qkv = (d.q_dim + 2 * d.kv_dim) * b / t
    context = d.q_dim * b / t
    mlp = (4 if d.gated else 2) * f * b / t
    if moe:
        mlp = _moe_mlp_activation_bytes(lay, tokens)
    if flash:  # kernel keeps q, k, v, the output and a float32 log-sum-exp row per head
        core = heads * 4 + (heads * seq * b if d.alibi else 0)  # ALiBi: the added bias goes in as a dense mask
    else:  # softmax output (+ dropout mask and output); the scores themselves are not kept
        core = heads * seq * (b + mask * (b + 1))
    g = s.recompute.granularity
    attention = attn_in + qkv + context + core
    full = 2 * block_in + attention + mlp_in + mlp + masks
    if g == "core_attn":
        full -= core
    elif g == "full_attn":
        full -= attention
    elif g == "full":
        full = block_in
    return full * tokens, block_in * tokens


def activation_bytes(lay: Layout) -> tuple[float, float]:
    """Activations of the first and the last pipeline stage's card."""
    s, deg = lay.strategy, lay.degrees
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    tokens = s.batch.micro_batch_size * lay.seq_len / (deg.sep * deg.cp)
    kept, _ = layer_activation_bytes(lay, tokens)
    layers = math.ceil(d.layers / deg.pp)
    in_flight = 1.0
    if deg.pp > 1:  # 1F1B: stage 0 holds pp micro batches; interleaving adds (pp-1)/(pp*v) more
        in_flight = min(deg.pp, s.batch.grad_accum)
        if s.parallel.virtual_pp > 1:
            in_flight *= 1 + (deg.pp - 1) / (deg.pp * s.parallel.virtual_pp)
    recomputing = 0.0
    if s.recompute.granularity == "full":  # the layer being recomputed holds everything once, on every stage
        recomputing = layer_activation_bytes(replace(lay, strategy=_no_recompute(s)), tokens)[0]
    first = layers * kept * in_flight + recomputing
    last = layers * kept + recomputing
    b = _bytes(s.precision.dtype)
    if d.alibi:  # the model-level ALiBi bias [b, heads/tp, s, s], built once per forward
        bias = s.batch.micro_batch_size * d.heads / deg.tp * lay.seq_len**2 * b
        first, last = first + bias, last + bias
    return first, last


def _no_recompute(s: Strategy) -> Strategy:
    return s.model_copy(update={"recompute": s.recompute.model_copy(update={"granularity": "off"})})


def logits_bytes(lay: Layout) -> float:
    """The last stage's logits and cross-entropy buffers for one micro batch: logits in the compute dtype, their
    float32 copy, the saved softmax and the float32 gradient (vocabulary-parallel under tp)."""
    s, deg = lay.strategy, lay.degrees
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    tokens = s.batch.micro_batch_size * lay.seq_len / (deg.sep * deg.cp)
    per = (_bytes(s.precision.dtype) + 12) if s.precision.dtype != "fp32" else 12
    return tokens * d.vocab / deg.tp * per + 2 * tokens * d.hidden * _bytes(s.precision.dtype)


def comm_buffer_bytes(lay: Layout, activations_and_logits: float, n_card: int) -> float:
    """Communication buffers beyond the tensors above, on one card.

    - pipeline: Paddle's p2p (fleet/meta_parallel/pp_utils/p2p_communication.py) receives each micro batch's
      activation forward and its gradient backward into fresh [micro_batch, seq, hidden] tensors: two in flight.
    - data parallel beside tp or pp: the hybrid optimizer all-reduces the gradients through
      fleet/utils/hybrid_parallel_util.py fused_allreduce_gradients, whose build_groups concatenates every gradient
      into 128 MB buckets that all live until _split_tensors copies them back: a second copy of the card's
      gradients, at the step's end when the activations are already freed (so only what exceeds them counts).
    - pure data parallel (paddle.DataParallel's reducer) and sharding stage 1/2 (DygraphShardingOptimizer reduces per
      parameter, or with enable_stage1_tensor_fusion fuses parameters and gradients into comm buffers the tensors
      then live in; GroupShardedStage2 fuses only parameters under 2^23 elements, i.e. norms and biases) add nothing
      measurable; their remainder is in the fitted runtime term.
    """
    s, deg = lay.strategy, lay.degrees
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    b = _bytes(s.precision.dtype)
    held = 0.0
    if deg.pp > 1:
        held += 2 * s.batch.micro_batch_size * lay.seq_len / (deg.sep * deg.cp) * d.hidden * b
    step_end = 0.0
    if deg.dp > 1 and deg.sharding == 1 and (deg.tp > 1 or deg.pp > 1):
        step_end = n_card * _grad_bytes(lay)
    return held + max(0.0, step_end - activations_and_logits)


def _grad_bytes(lay: Layout) -> int:
    """Bytes of one gradient element: fp32 unless AMP O2 keeps them in the compute dtype (no master_grad)."""
    p = lay.strategy.precision
    o2 = p.dtype != "fp32" and p.amp_level == "O2"
    return 2 if (o2 and not p.master_grad) else 4


def stage_memory(lay: Layout) -> tuple[tuple[dict[str, float], int], tuple[dict[str, float], int]]:
    """(bytes by component, parameters) of a card of the first and of the last pipeline stage (the same with pp1).

    Stages differ (1F1B, Narayanan et al. 2021): the first holds the embedding and pp micro batches of activations in
    flight, the last one micro batch but the LM head (+ the tied embedding's copy) and the logits with the
    cross-entropy's float32 buffers ([micro_batch, seq, vocab/tp])."""
    g = param_groups(lay.spec, lay.seq_len, lay.from_scratch)
    deg = lay.degrees
    first_n, last_n = stage_params(g, deg.tp, deg.pp, ep_degree(lay))
    layer_params = max(g.layer_on_card(m, deg.tp, ep_degree(lay)) for m in (False, g.moe_layers > 0))
    act_first, act_last = activation_bytes(lay)
    first = _state_bytes(first_n, layer_params, lay) | {"activations": act_first, "logits_and_loss": 0.0}
    last = _state_bytes(last_n, layer_params, lay) | {"activations": act_last, "logits_and_loss": logits_bytes(lay)}
    if deg.pp == 1:
        first["logits_and_loss"] = last["logits_and_loss"]
        last = first
    tables = math.ceil(g.layers / deg.pp) * rotary_table_bytes(
        lay.spec, lay.seq_len, lay.from_scratch, _bytes(lay.strategy.precision.dtype)
    )
    for stage, n in ((first, first_n), (last, last_n)):
        stage["rotary_tables"] = float(tables)
        stage["comm_buffers"] = comm_buffer_bytes(lay, stage["activations"] + stage["logits_and_loss"], n)
    return (first, first_n), (last, last_n)


def memory(lay: Layout, runtime_mb: float) -> tuple[dict[str, float], int]:
    """Per-card memory (MiB) of the busier pipeline stage (stage_memory), by component; and that card's parameter
    count."""
    (first, first_n), (last, last_n) = stage_memory(lay)
    busiest, n = (first, first_n) if sum(first.values()) >= sum(last.values()) else (last, last_n)
    out = {k: v / MiB for k, v in busiest.items()}
    out["runtime"] = runtime_mb
    return out, n


def flops_per_token(lay: Layout) -> tuple[float, float]:
    """(model FLOPs, hardware FLOPs) per trained token: 3 x forward, plus what recompute repeats of the forward.

    Recompute repeats decoder layers only (PaddleNLP wraps each layer, or its attention, or the core attention, in
    recompute; the embedding and LM head never): full = every layer's matmuls and attention again (about +33% of the
    step's FLOPs: 1 of 3 forward-equivalents); full_attn = the attention block's projections and core; core_attn =
    softmax(QK^T)V alone (Korthikanti et al. 2022, section 5: selective recompute)."""
    matmul, attention = forward_flops_per_token(lay.spec, lay.seq_len, lay.from_scratch)
    model = 3 * (matmul + attention)
    g = lay.strategy.recompute.granularity
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    attn_matmul = 2.0 * d.layers * param_groups(lay.spec, lay.seq_len, lay.from_scratch).attention
    layers_matmul = matmul - 2.0 * d.vocab * d.hidden + gshard_flops_per_token(lay)
    extra = {
        "off": 0.0,
        "core_attn": attention,
        "full_attn": attention + attn_matmul,
        "full": layers_matmul + attention,
    }
    return model, model + 3 * gshard_flops_per_token(lay) + extra[g]


def gshard_flops_per_token(lay: Layout) -> float:
    """Forward FLOPs per token of MoELayer's GShard dispatch and combine einsums (qwen2_moe, deepseek_v2;
    paddlenlp/transformers/moe_layer.py: "sec,sm->ecm" and "sec,ecm->sm", 2 x experts x capacity x hidden each per
    token, experts x capacity = micro-batch tokens x top-k at balanced load): work of the implementation, not of the
    model, so in hardware FLOPs only. Quadratic in the micro batch's tokens."""
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    if not d.gshard_dispatch:
        return 0.0
    s, deg = lay.strategy, lay.degrees
    tokens = s.batch.micro_batch_size * lay.seq_len / (deg.sep * deg.cp)
    return d.moe_layers * 2 * (2.0 * tokens * d.top_k * d.hidden)


def tp_replicated_flops_per_token(lay: Layout) -> float:
    """Hardware FLOPs per token that tensor parallel does not divide: deepseek_v2's routed experts (plain Linear on
    every tp rank) and its dispatch einsums; 0 for the families whose experts are tensor-parallel."""
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    if not d.moe_layers or d.experts_split_by_tp:
        return 0.0
    g = param_groups(lay.spec, lay.seq_len, lay.from_scratch)
    experts = 2.0 * g.moe_layers * g.active_experts
    again = experts if lay.strategy.recompute.granularity == "full" else 0.0
    return 3 * experts + again + 3 * gshard_flops_per_token(lay)


# Families whose projections carry biases (q/k/v at least): their bias adds are separate elementwise passes
BIASED_QKV = {"qwen", "qwen2", "chatglm2", "gpt", "opt", "bloom", "chatglm", "glm"}


def layer_traffic_bytes(lay: Layout, tokens: float) -> tuple[float, float, float]:
    """_layer_traffic_bytes, an MoE model's average over its dense and MoE layers."""
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    if not d.moe_layers:
        return _layer_traffic_bytes(lay, tokens, False)
    dense = d.layers - d.moe_layers
    a, m, c = _layer_traffic_bytes(lay, tokens, True)
    if dense:
        _, m_d, _ = _layer_traffic_bytes(lay, tokens, False)
        m = (dense * m_d + d.moe_layers * m) / d.layers
    return a, m, c


def _layer_traffic_bytes(lay: Layout, tokens: float, moe: bool) -> tuple[float, float, float]:
    """Bytes one decoder layer's memory-bound kernels move in one forward over `tokens` tokens on one card:
    (attention block outside the core, MLP block, core attention's score-sized traffic).

    Each elementwise kernel reads its inputs and writes its output once (fused kernels as PaddleNLP's pretrain configs
    enable them: fused RMSNorm, fused rotary, flash attention). Per token, in elements of the compute dtype:
    - a norm reads and writes h; a residual add reads 2h and writes h; norms and residuals see the whole hidden state
      on every tensor-parallel rank unless sequence parallel splits it (Korthikanti et al. 2022, section 4.2.2);
    - LLaMA-style (RMSNorm, SwiGLU): rotary reads and writes q and k; SwiGLU reads gate and up, writes their product;
    - GPT-style (LayerNorm with bias, GELU 4h MLP): a bias add on q/k/v, on the attention output, on fc1 and fc2
      (read and write each), GELU reads and writes the 4h activation; dropout (when set) reads, writes and stores a
      1-byte mask per site;
    - core attention: flash attention keeps scores on chip and moves nothing score-sized, except a dense additive bias
      (ALiBi) it reads per head; without flash, QK^T writes the scores, softmax reads them and writes the
      probabilities, which AV reads: 4 x heads x seq per token (+3 with dropout on the probabilities);
    - an MoE layer: the router's softmax and top-k over the experts (float32, read and written), for each of the
      top-k experts the token gathered in (read, write h), its SwiGLU (3 x the expert's width), the weighted
      output scattered back (read, multiply, add: 3h); the shared expert's SwiGLU."""
    s = lay.strategy
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    t = lay.degrees.tp
    b = _bytes(s.precision.dtype)
    sp = t if (s.parallel.sequence_parallel and t > 1) else 1
    h = d.hidden / sp
    q, kv, f = d.q_dim / t, d.kv_dim / t, d.ffn / t
    drop = 2 * h * b + h if lay.dropout > 0 else 0.0  # read, write and a 1-byte mask per dropout site
    bias = 2 * (q + 2 * kv) if lay.spec.family in BIASED_QKV else 0.0
    if d.gated:
        rope = 2 * (q + kv) if lay.spec.position == "rope" else 0.0
        attn = (2 * h + rope + bias + 3 * h) * b
        mlp = (2 * h + 3 * f + 3 * h) * b
        if moe:
            te = t if d.experts_split_by_tp else 1
            experts = d.top_k * (2 * d.hidden + 3 * d.expert_ffn / te + 3 * d.hidden)
            mlp = (2 * h + 3 * h + experts + 3 * d.shared_ffn / t) * b + 2 * d.num_experts * 4
    else:
        attn = (2 * h + bias + 2 * h + 3 * h) * b + drop
        mlp = (2 * h + 2 * f + 2 * f + 2 * h + 3 * h) * b + drop
    heads = d.heads / t
    if s.kernels.flash_attention:
        core = heads * lay.seq_len * b if d.alibi else 0.0
    else:
        core = heads * lay.seq_len * (4 + (3 if lay.dropout > 0 else 0)) * b
    return attn * tokens, mlp * tokens, core * tokens


# Bytes the cross-entropy moves per logit (vocabulary-parallel under tp): the cast of the logits to float32 (read b,
# write 4), softmax with cross-entropy forward (read 4, write the saved softmax 4) and backward (read 4, write the
# float32 gradient 4), the gradient's cast back (read 4, write b). PaddleNLP's pretraining criterion upcasts the
# logits (LlamaPretrainingCriterion: logits.astype("float32")).
def _logit_traffic(b: int) -> int:
    return 2 * b + 24 if b != 4 else 16


def step_traffic_bytes(lay: Layout, n_card: int) -> tuple[float, float]:
    """(bytes of memory-bound traffic per micro batch through the layers and the loss, bytes per optimizer step)
    on one card, averaged over pipeline stages as the FLOPs are.

    Per micro batch: each layer's forward traffic, twice that backward (each elementwise backward reads the saved
    input and the output gradient and writes the input gradient), once more for what recompute repeats; the
    cross-entropy over the vocabulary; the gradient accumulation (each micro batch's low-precision gradient cast and
    added into the float32 one: read 2, read and write 4 each; without master_grad, the add in place).
    Per step, over the card's optimizer shard: the update (AdamW reads and writes the fp32 master weight and both
    moments, reads the gradient and writes the low-precision weight), the global-norm clip's read of every gradient,
    and with fp16 the loss scaler's check_finite_and_unscale (read and write every gradient) — bf16 needs no scaler.
    """
    s, deg = lay.strategy, lay.degrees
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    b = _bytes(s.precision.dtype)
    tokens = s.batch.micro_batch_size * lay.seq_len / (deg.sep * deg.cp)
    attn, mlp, core = layer_traffic_bytes(lay, tokens)
    g = s.recompute.granularity
    again = {"off": 0.0, "core_attn": core, "full_attn": attn + core, "full": attn + mlp + core}[g]
    layers = d.layers / deg.pp
    micro = layers * (3 * (attn + mlp + core) + again)
    micro += tokens * d.vocab / deg.tp * _logit_traffic(b) / deg.pp
    gb = _grad_bytes(lay)
    o2 = b != 4 and s.precision.amp_level == "O2"
    if gb == 4 and o2:  # main_grad: every micro batch's bf16/fp16 gradient is cast-added into the float32 one
        micro += n_card * (b + 8)
    elif s.batch.grad_accum > 1:
        micro += n_card * 3 * gb * (s.batch.grad_accum - 1) / s.batch.grad_accum
    shard = n_card / deg.sharding if (deg.sharding > 1 and s.parallel.stage >= 1) else n_card
    if s.parallel.offload and deg.sharding > 1:
        update = 0.0  # the host updates (offload_time)
    else:
        state = 2 * OPTIMIZER_STATE_BYTES[lay.optimizer]  # moments read and written
        update = state + 8 + gb + (b if o2 else 0)  # master (or fp32 weight) read and written, grad, new weight
    step = shard * (update + gb + (2 * gb if s.precision.dtype == "fp16" else 0))
    return micro, step


def _group_bandwidth(lay: Layout, device: Device, degree: int, stride: int) -> float:
    """Bytes/s of a collective over `degree` ranks `stride` apart: the node's links, or the fabric across nodes."""
    within = degree * stride <= lay.nproc_per_node
    return (device.link_gbs if within else INTER_NODE_GBS) * 1e9 * LINK_EFFICIENCY


def step_parts(lay: Layout, device: Device, state: dict[str, float], n_card: int) -> dict[str, float]:
    """Seconds per optimizer step on one card, by part: matmuls at the device's matmul efficiency, memory-bound
    kernels at its HBM bandwidth, the pipeline bubble, communication the strategy cannot hide, offload."""
    s, deg = lay.strategy, lay.degrees
    dtype = s.precision.dtype
    peak = device.peak_tflops[dtype] * 1e12
    mp = deg.split_degree
    tokens_mb = s.batch.micro_batch_size * lay.seq_len
    tokens_step = tokens_mb * s.batch.grad_accum  # per data-parallel replica
    _, hw = flops_per_token(lay)
    rep = tp_replicated_flops_per_token(lay)  # runs whole on every tp rank
    matmul = tokens_step * ((hw - rep) / mp + rep * deg.tp / mp) / (peak * device.expected_hfu)
    hbm = device.hbm_gbs * 1e9 * HBM_EFFICIENCY
    micro_bytes, step_bytes = step_traffic_bytes(lay, n_card)
    micro_mem = s.batch.grad_accum * micro_bytes / hbm
    optimizer = step_bytes / hbm
    d = dims(lay.spec, lay.seq_len, lay.from_scratch)
    b = _bytes(dtype)
    bubble = p2p = 0.0
    if deg.pp > 1:  # 1F1B: (pp-1)/(v x micro batches) of the forward-backward idles (Narayanan et al. 2021)
        bubble = (matmul + micro_mem) * (deg.pp - 1) / (s.parallel.virtual_pp * s.batch.grad_accum)
        # each micro batch's activation forward and its gradient backward cross every stage boundary
        bw = _group_bandwidth(lay, device, 2, deg.tp * deg.sep * deg.cp)
        p2p = s.batch.grad_accum * 2 * tokens_mb / (deg.sep * deg.cp) * d.hidden * b * s.parallel.virtual_pp / bw
    tp_comm = 0.0
    if deg.tp > 1:  # 2 all-reduces forward, 2 backward per layer (+2 more when the forward is recomputed)
        per_layer = {"off": 4, "core_attn": 4, "full_attn": 5, "full": 6}[s.recompute.granularity]
        volume = tokens_mb / (deg.sep * deg.cp) * d.hidden * b * 2 * (deg.tp - 1) / deg.tp
        layers = math.ceil(d.layers / deg.pp)
        tp_comm += s.batch.grad_accum * layers * per_layer * volume / _group_bandwidth(lay, device, deg.tp, 1)
    ep, ep_comm = ep_degree(lay), 0.0
    if ep > 1 and d.moe_layers:
        # all-to-all over the ep ranks (moe_layer.py _AllToAll): each MoE layer dispatches its tokens' top-k copies
        # and combines them back, forward and again backward: 4 x tokens x top-k x hidden, (ep-1)/ep leaving the card
        volume = 4 * tokens_mb / (deg.sep * deg.cp) * d.top_k * d.hidden * b * (ep - 1) / ep
        moe_layers = d.moe_layers / deg.pp
        # the ep group is the data-parallel group (ep = dp on the pinned stack: strategies/parallel_dims.py), and
        # with use_expert_parallel PaddleNLP orders the topology [..., dp, mp]: dp ranks sit tp apart
        bw = _group_bandwidth(lay, device, ep, deg.tp * deg.sep)
        ep_comm = s.batch.grad_accum * moe_layers * volume / bw
    w_bytes = state["weights"] * MiB
    g_full = n_card * _grad_bytes(lay)
    dp_comm = 0.0
    if deg.sharding > 1:
        share = (deg.sharding - 1) / deg.sharding
        bw = _group_bandwidth(lay, device, deg.sharding, deg.tp * deg.sep)
        if s.parallel.stage == 3:  # gather the weights forward and backward, reduce-scatter grads, per micro batch
            full_w = n_card * (2 if dtype != "fp32" else 4)
            dp_comm += s.batch.grad_accum * share * (2 * full_w + g_full) / bw
        else:  # reduce the gradients to their owners, then broadcast the updated weights
            # Stage 2 (GroupShardedStage2) reduces each gradient from its backward hook on every micro batch:
            # PaddleNLP's trainer does not no_sync it under accumulation (trainer.py: "stage2 and stage3 should not
            # no_sync"), and without enable_stage2_overlap the reduce waits. Stage 1 reduces once, at the step.
            reduces = s.batch.grad_accum if s.parallel.stage == 2 else 1
            if s.parallel.stage == 2 and "enable_stage2_overlap" in s.overlap.sharding:
                reduces = 1  # overlapped with the backward but the last
            dp_comm += share * (reduces * g_full + w_bytes) / bw
    if deg.dp > 1:
        bw = _group_bandwidth(lay, device, deg.dp, deg.tp * deg.sep * deg.sharding * deg.pp)
        # under expert parallel each dp rank holds different experts: their gradients skip the all-reduce
        # (PaddleNLP's trainer: fused_allreduce_gradients_no_sync leaves the no_sync expert parameters out)
        shared_grads = (n_card - _expert_params_on_card(lay)) * _grad_bytes(lay) if ep > 1 else g_full
        dp_comm += 2 * (deg.dp - 1) / deg.dp * shared_grads / deg.sharding / bw
    return {
        "matmul": matmul,
        "memory_bound": micro_mem + optimizer,
        "pipeline_bubble": bubble + p2p,
        "tensor_parallel_comm": tp_comm,
        "expert_parallel_comm": ep_comm,
        "data_parallel_comm": dp_comm,
        "offload": offload_time(lay, n_card),
    }


def step_time(lay: Layout, device: Device, state: dict[str, float], n_card: int) -> tuple[float, float, dict]:
    """(seconds per optimizer step on one card, hardware FLOPs utilisation of that time, the seconds by part)."""
    s, deg = lay.strategy, lay.degrees
    parts = step_parts(lay, device, state, n_card)
    total = sum(parts.values())
    _, hw = flops_per_token(lay)
    tokens_step = s.batch.micro_batch_size * lay.seq_len * s.batch.grad_accum
    return total, tokens_step * hw / deg.split_degree / total / (device.peak_tflops[s.precision.dtype] * 1e12), parts


def usable_mb(device: Device) -> float:
    """What max_memory_allocated may reach on the card: its memory less the CUDA context and the allocator's cache
    (a share of the card: see ALLOCATOR_SHARE)."""
    return device.memory_mb * (1 - ALLOCATOR_SHARE) - CUDA_CONTEXT_MB


def offload_time(lay: Layout, n_card: int) -> float:
    """Seconds a step spends on an offloaded optimizer: this card's shard of the gradients down and of the updated
    weights up over PCIe, and the host's AdamW update of that shard (not overlapped with compute)."""
    s, deg = lay.strategy, lay.degrees
    if not (s.parallel.offload and deg.sharding > 1):
        return 0.0
    shard = n_card / deg.sharding
    grad = 4 if (s.precision.dtype == "fp32" or s.precision.master_grad) else 2
    pcie = shard * (grad + _bytes(s.precision.dtype)) / (OFFLOAD_PCIE_GBS * 1e9)
    return pcie + shard * OFFLOAD_HOST_BYTES / (OFFLOAD_HOST_GBS * 1e9)


def estimate(lay: Layout, device: Device | None) -> Estimate:
    """One estimate; device None means CPU ranks (memory only: no throughput model for CPUs)."""
    runtime = RUNTIME_MB_GPU if device is not None else RUNTIME_MB_CPU
    mem, n_card = memory(lay, runtime)
    model_f, hw_f = flops_per_token(lay)
    g = param_groups(lay.spec, lay.seq_len, lay.from_scratch)
    est = Estimate(device, mem, g.total, n_card, g.active, model_f, hw_f)
    if device is None:
        return est
    dtype = lay.strategy.precision.dtype
    if dtype not in device.peak_tflops:
        est.notes.append(f"{device.name} has no {dtype} tensor cores: throughput not estimated")
    else:
        t, hfu, est.step_time_parts = step_time(lay, device, mem, n_card)
        s = lay.strategy
        tokens_card = s.batch.micro_batch_size * lay.seq_len * s.batch.grad_accum / lay.degrees.split_degree
        est.step_time_s = t
        est.tokens_per_card_per_sec = tokens_card / t
        est.hfu = hfu
        est.mfu = est.tokens_per_card_per_sec * model_f / (device.peak_tflops[dtype] * 1e12)
    est.capacity_mb = usable_mb(device)
    est.fits = est.memory_mb_per_card <= est.capacity_mb
    if not device.calibrated:
        est.notes.append(f"{device.name}: expected utilisation {device.expected_hfu:.0%} is an assumption")
    if dtype == "fp16":
        est.notes.append(
            "fp16: the loss scaler's unscale pass over the gradients is counted (memory as bf16); steps it skips "
            "on overflow are not"
        )
    if lay.strategy.parallel.offload and lay.degrees.sharding > 1:
        est.notes.append(
            f"offload: {offload_time(lay, est.params_per_card):.2f} s per step for the host update, from assumed PCIe "
            f"({OFFLOAD_PCIE_GBS:g} GB/s) and host ({OFFLOAD_HOST_GBS:g} GB/s per card) bandwidths, not calibrated"
        )
    return est


RECOMPUTE_ORDER = ("off", "core_attn", "full_attn", "full")


def renamed(s: Strategy, degrees: ParallelDims, **parallel) -> Strategy:
    """`s` with new parallel fields / recompute granularity, under its canonical name."""
    from llmpt.strategies.grammar import rename

    granularity = parallel.pop("granularity", s.recompute.granularity)
    p = s.parallel.model_copy(update=parallel)
    # overlap options of an axis the new layout no longer has (or of another sharding stage) would do nothing
    dropped = {
        "tensor_parallel": p.tp == 1,
        "pipeline_parallel": p.pp == 1,
        "sharding": p.sharding == 1 or p.stage != s.parallel.stage,
    }
    overlap = s.overlap.model_copy(update={k: () for k, gone in dropped.items() if gone})
    return s.model_copy(
        update={
            "name": rename(s.name, granularity, **parallel),
            "parallel": p,
            "recompute": s.recompute.model_copy(update={"granularity": granularity}),
            "overlap": overlap,
        }
    )


def candidate_changes(lay: Layout) -> list[tuple[str, Layout, list[str]]]:
    """One-step changes among recompute, sharding stage, tensor parallel and micro batch: (what, layout, --set)."""
    s, deg, p = lay.strategy, lay.degrees, lay.strategy.parallel
    out: list[tuple[str, Layout, list[str]]] = []
    now = RECOMPUTE_ORDER.index(s.recompute.granularity)
    for g in RECOMPUTE_ORDER[now + 1 :]:
        if g == "core_attn" and s.kernels.flash_attention:
            continue  # flash attention keeps no scores: selective recompute of the core saves nothing
        out.append((f"recompute {g}", replace(lay, strategy=renamed(s, deg, granularity=g)), []))
    if deg.sharding > 1 and p.stage < 3 and not (deg.tp > 1 and p.stage == 2):  # PaddleNLP refuses tp + stage 3
        out.append((f"sharding stage {p.stage + 1}", replace(lay, strategy=renamed(s, deg, stage=p.stage + 1)), []))
    # expert parallel follows dp (ep = dp on the pinned stack): gone with dp, halved with it
    no_ep = {"ep": 1} if deg.ep > 1 else {}
    if deg.sharding == 1 and deg.dp > 1:  # turn data parallel into sharding stage 2 over the same ranks
        new = replace(deg, dp=1, sharding=deg.dp, **no_ep)
        st = renamed(s, new, dp=None if p.dp is None else 1, sharding=deg.dp, stage=2, **no_ep)
        out.append((f"sharding stage 2 over the dp{deg.dp} ranks", replace(lay, strategy=st, degrees=new), []))
    tp2 = deg.tp * 2
    spec = lay.spec
    if tp2 <= lay.nproc_per_node and spec.num_attention_heads % tp2 == 0 and spec.num_key_value_heads % tp2 == 0:
        if deg.sharding % 2 == 0:
            new = replace(deg, tp=tp2, sharding=deg.sharding // 2)
            st = renamed(s, new, tp=tp2, sharding=new.sharding, stage=p.stage if new.sharding > 1 else 1)
        elif deg.dp % 2 == 0:
            half_ep = {"ep": deg.dp // 2} if deg.ep > 1 else {}
            new = replace(deg, tp=tp2, dp=deg.dp // 2, **half_ep)
            st = renamed(s, new, tp=tp2, dp=None if p.dp is None else new.dp, **half_ep)
        else:
            new = None
        if new is not None:
            out.append((f"tensor parallel tp{tp2}", replace(lay, strategy=st, degrees=new), []))
    if s.batch.micro_batch_size > 1:
        mbs, acc = s.batch.micro_batch_size // 2, s.batch.grad_accum * 2
        st = s.model_copy(update={"batch": s.batch.model_copy(update={"micro_batch_size": mbs, "grad_accum": acc})})
        sets = [f"strategy.batch.micro_batch_size={mbs}", f"strategy.batch.grad_accum={acc}"]
        out.append((f"micro batch {mbs} x accumulation {acc}", replace(lay, strategy=st), sets))
    return out


def first_knob(lay: Layout, device: Device | None, capacity_mb: float) -> tuple[dict[str, Any], Layout] | None:
    """The smallest change that fits: of the one-step changes (then pairs) that fit, the fastest (CPU: smallest)."""

    def score(e: Estimate) -> tuple[float, float]:
        return (e.tokens_per_card_per_sec or 0.0, -e.memory_mb_per_card)

    def fits(e: Estimate) -> bool:
        return e.memory_mb_per_card <= capacity_mb

    level = [([what], cand, sets) for what, cand, sets in candidate_changes(lay) if allowed(cand, device is None)]
    for depth in (1, 2):
        scored = [(estimate(c, device), whats, c, sets) for whats, c, sets in level]
        ok = [x for x in scored if fits(x[0])]
        if ok:
            e, whats, c, sets = max(ok, key=lambda x: score(x[0]))
            return knob_dict(" + ".join(whats), c, sets, e), c
        if depth == 1:
            level = [
                (whats + [w2], c2, sets + s2)
                for whats, c, sets in level
                for w2, c2, s2 in candidate_changes(c)
                if allowed(c2, device is None) and w2.split()[0] != whats[0].split()[0]
            ]
    return None


def knob_dict(change: str, lay: Layout, sets: list[str], e: Estimate) -> dict[str, Any]:
    return {
        "change": change,
        "strategy": lay.strategy.name,
        "set": sets,
        "memory_mb_per_card": round(e.memory_mb_per_card, 1),
        "tokens_per_card_per_sec": None if e.tokens_per_card_per_sec is None else round(e.tokens_per_card_per_sec, 2),
    }


def allowed(lay: Layout, on_cpu: bool = False) -> bool:
    """The grammar, the matrix, the model's shape (and on CPU, llmpt's gloo backend) accept this layout."""
    from llmpt.errors import LlmptError
    from llmpt.models.matrix import model_supports
    from llmpt.models.shape import check_model_shape
    from llmpt.strategies.grammar import parse_name
    from llmpt.strategies.validate import check_runs_on_cpu, check_strategy

    try:
        if parse_name(lay.strategy.name).parallel != lay.strategy.parallel:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # options without effect in a candidate are not the user's concern
            check_strategy(lay.strategy)
        check_model_shape(lay.spec, lay.strategy, lay.degrees, lay.seq_len, lay.from_scratch)
        if not model_supports(lay.spec, lay.strategy, lay.degrees):
            return False
        if on_cpu:
            check_runs_on_cpu(lay.strategy)
    except LlmptError:
        return False
    return True


def host_memory_mb() -> float | None:
    """Total RAM (MiB) from /proc/meminfo; None where there is none (not Linux)."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def plan_estimate(lay: Layout, device: Device | None) -> Estimate:
    """The estimate `llmpt plan` shows: memory, throughput, the verdict against the card (CPU: this machine's RAM
    shared by its ranks) and, when it does not fit, the first knob to turn."""
    est = estimate(lay, device)
    if device is None:
        ram = host_memory_mb()
        if ram is not None:
            est.capacity_mb = ram / lay.nproc_per_node
            est.fits = est.memory_mb_per_card <= est.capacity_mb
    if est.fits is False:
        found = first_knob(lay, device, est.capacity_mb)
        if found is not None:
            est.knob, est.knob_layout = found
    return est
