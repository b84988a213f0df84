"""Every change llmpt makes to Paddle's code, as one table (PATCHES), so fleet's hybrid parallelism runs on CPU ranks.

Paddle 3.3.1 refuses tensor, pipeline and sequence parallel and group-sharded stage 2/3 on CPU: device asserts, ops
without CPU kernels (c_identity, c_concat, c_split, c_softmax_with_cross_entropy) and ProcessGroupGloo methods that do
not exist (`*_on_calc_stream`, reduce_scatter). Each Patch names one target, what stands in for it and why. The rank
entry point calls install() once, after paddle.set_device("cpu") and before fleet.init.

The rule, applied by install() to every entry alike: a patched target runs llmpt's CPU implementation only while
Paddle's device is cpu and it is in dynamic mode; otherwise it calls Paddle's original, kept in ORIGINALS (the only
record of them). A CPU implementation gets that original as its first argument and calls it for whatever needs no
CPU handling (new_group for two ranks, the default group's process group, ...). Nothing here is ever uninstalled.

Mechanism, by the kind of target (Patch.mechanism), each the narrowest that reaches every caller:
  * "rebind": a module-level function. Replaced in its module and in every loaded paddle/paddlenlp module that bound
    it by name -- `from mp_ops import _c_identity` copies the reference, so patching mp_ops alone would miss it.
  * "class": a method or property. Set on the class, where every instance looks it up.
  * "proxy": a name that one Paddle module uses for a check llmpt must answer differently in that module only (the
    `core.is_compiled_with_cuda()` of a device assert). That module's global becomes a proxy which answers the one
    attribute and forwards everything else, so no other module sees a change. Patch.uses pins how often the module's
    source uses the name: each use was read and is safe to answer so.
Where Paddle's own function is right but for one check, the check is answered (a proxy, or an argument) and Paddle's
body runs: no entry copies an upstream body. The entries that replace a body re-implement an operation with gloo's
collectives (all_reduce, broadcast, all_gather, send/recv); each says why Paddle's cannot be wrapped. Collectives work
on a fresh tensor, never in place on a PyLayer input (autograd's inplace-version check), and every forward
communication has its matching backward one.

Against a Paddle upgrade: each entry states the parameter names its target must have; install() checks every entry
before patching and refuses, naming the entry (tests/unit/test_cpu_backend_targets.py runs the same check). install()
also refuses any release but llmpt.versions.PADDLE, because a body can change under an unchanged signature.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from llmpt.train.targets import ModuleProxy, signature_problems
from llmpt.versions import PADDLE

Mechanism = Literal["rebind", "class", "proxy"]


class CpuBackendError(RuntimeError):
    pass


@dataclass(frozen=True)
class Patch:
    """One target in Paddle and what stands in for it on CPU."""

    target: str  # "module:attribute.path"; for a proxy the path starts with the module's global that is proxied
    mechanism: Mechanism
    expects_signature: tuple[str, ...] | None  # the target's parameter names; None: compiled, existence only
    why: str
    cpu: Callable[..., Any]  # the CPU implementation, called as cpu(original, *args, **kwargs)
    uses: int | None = None  # proxy only: how often the module's source uses the proxied name

    @property
    def name(self) -> str:
        module, path = self.target.split(":")
        return f"{module.rsplit('.', 1)[-1]}.{path}"


ORIGINALS: dict[str, Callable[..., Any]] = {}  # patch name -> Paddle's original (a property's getter)
_INSTALLED = False


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _active() -> bool:
    """The rule: CPU implementations run only on CPU in dynamic mode."""
    import paddle

    return paddle.get_device().split(":")[0] == "cpu" and paddle.in_dynamic_mode()


def _group_or_default(group):
    from paddle.distributed import collective

    return collective._get_default_group() if group is None else group


def _fresh(x):
    """A new, contiguous tensor with x's values (gloo needs contiguous buffers; a fresh tensor also keeps
    collectives off PyLayer inputs)."""
    if hasattr(x, "is_contiguous") and not x.is_contiguous():
        return x.contiguous()
    return x.clone()


def _all_reduce_copy(x, group, op=None):
    """Out-of-place all-reduce: returns a NEW tensor holding the reduction."""
    import paddle.distributed as dist

    out = _fresh(x)
    if group.nranks > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM if op is None else op, group=group, sync_op=True)
    return out


def _all_gather_concat(x, group, axis):
    """All-gather x from every rank of group and concatenate along axis."""
    import paddle
    import paddle.distributed as dist

    if group.nranks == 1:
        return x.clone()
    parts = []
    dist.all_gather(parts, _fresh(x), group=group, sync_op=True)
    return paddle.concat(parts, axis=axis)


def _slice_for_rank(x, rank, nranks, axis):
    import paddle

    size = x.shape[axis]
    assert size % nranks == 0, f"dim {axis} of size {size} not divisible by {nranks}"
    k = size // nranks
    return _fresh(paddle.slice(x, axes=[axis], starts=[rank * k], ends=[(rank + 1) * k]))


# --------------------------------------------------------------------------
# tensor-parallel communication (fleet.layers.mpu.mp_ops): forward and backward with gloo collectives
# --------------------------------------------------------------------------


@functools.cache
def _mp_layers() -> types.SimpleNamespace:
    """The PyLayers the mp_ops entries apply (built on first use: defining them needs paddle)."""
    import paddle
    import paddle.distributed as dist
    from paddle.autograd import PyLayer

    class Identity(PyLayer):
        """c_identity: forward is a copy, backward sums the gradient over the mp group."""

        @staticmethod
        def forward(ctx, x, group):
            ctx.group = group
            return x.clone()

        @staticmethod
        def backward(ctx, dy):
            return _all_reduce_copy(dy, ctx.group)

    class AllReduce(PyLayer):
        """mp_allreduce: forward sums over the mp group into a fresh tensor, backward is the identity."""

        @staticmethod
        def forward(ctx, x, group):
            return _all_reduce_copy(x, group)

        @staticmethod
        def backward(ctx, dy):
            return dy.clone()

    class SplitLast(PyLayer):
        """c_split: forward keeps this rank's slice of the last dim, backward all-gathers the slices back."""

        @staticmethod
        def forward(ctx, x, group):
            ctx.group = group
            return _slice_for_rank(x, group.rank, group.nranks, axis=-1)

        @staticmethod
        def backward(ctx, dy):
            return _all_gather_concat(dy, ctx.group, axis=-1)

    class ConcatLast(PyLayer):
        """c_concat (+ its grad op c_split): forward all-gathers along the last dim, backward keeps this rank's
        slice of the gradient (the output is replicated on every mp rank: no reduction, as c_concat_grad)."""

        @staticmethod
        def forward(ctx, x, group):
            ctx.group = group
            return _all_gather_concat(x, group, axis=-1)

        @staticmethod
        def backward(ctx, dy):
            return _slice_for_rank(dy, ctx.group.rank, ctx.group.nranks, axis=-1)

    class VocabParallelCE(PyLayer):
        """c_softmax_with_cross_entropy over logits whose last (vocab) dim is split over the mp group. forward:
        global max (all-reduce MAX), global sum of exp (all-reduce SUM), the target logit picked on the owning rank
        (all-reduce SUM). backward: softmax - onehot on the local slice, as c_softmax_with_cross_entropy_grad."""

        @staticmethod
        def forward(ctx, logits, label, group, ignore_index):
            rank = group.rank
            vloc = logits.shape[-1]
            start = rank * vloc
            x = logits.astype("float32")
            gmax = _all_reduce_copy(x.max(axis=-1, keepdim=True), group, op=dist.ReduceOp.MAX)
            shifted = x - gmax
            ex = paddle.exp(shifted)
            sumexp = _all_reduce_copy(ex.sum(axis=-1, keepdim=True), group)
            lab = label.astype("int64")
            in_range = paddle.logical_and(lab >= start, lab < start + vloc)
            local_lab = paddle.where(in_range, lab - start, paddle.zeros_like(lab))
            picked = paddle.take_along_axis(shifted, local_lab, axis=-1)
            picked = paddle.where(in_range, picked, paddle.zeros_like(picked))
            picked = _all_reduce_copy(picked, group)
            loss = paddle.log(sumexp) - picked
            valid = lab != ignore_index
            loss = paddle.where(valid, loss, paddle.zeros_like(loss))
            softmax = ex / sumexp
            ctx.save_for_backward(softmax, local_lab, in_range, valid)
            ctx.out_dtype = logits.dtype
            return loss.astype(logits.dtype)

        @staticmethod
        def backward(ctx, dloss):
            softmax, local_lab, in_range, valid = ctx.saved_tensor()
            onehot = paddle.nn.functional.one_hot(local_lab.squeeze(-1), softmax.shape[-1]).astype(softmax.dtype)
            onehot = onehot * in_range.astype(softmax.dtype)
            g = (softmax - onehot) * (dloss.astype(softmax.dtype) * valid.astype(softmax.dtype))
            return g.astype(ctx.out_dtype), None

    return types.SimpleNamespace(
        Identity=Identity,
        AllReduce=AllReduce,
        SplitLast=SplitLast,
        ConcatLast=ConcatLast,
        VocabParallelCE=VocabParallelCE,
    )


def _c_identity(original, tensor, group=None, skip_c_identity_dynamic=False):
    if group is not None and not group.is_member():
        return None
    # skip_c_identity_dynamic only skips Paddle's forward copy; its backward all-reduce stays, so it is ignored here
    return _mp_layers().Identity.apply(tensor, _group_or_default(group))


def _c_concat(original, tensor, group=None):
    if group is not None and not group.is_member():
        return None
    return _mp_layers().ConcatLast.apply(tensor, _group_or_default(group))


def _c_split(original, tensor, group=None):
    if group is not None and not group.is_member():
        return None
    return _mp_layers().SplitLast.apply(tensor, _group_or_default(group))


def _mp_allreduce(
    original, tensor, op=None, group=None, use_calc_stream=True, use_model_parallel=True, skip_c_identity_dynamic=False
):
    if group is not None and not group.is_member():
        return None
    from paddle.distributed import ReduceOp

    if op is not None and op != ReduceOp.SUM:
        raise CpuBackendError(f"cpu_backend: mp all-reduce supports SUM only, got {op}")
    return _mp_layers().AllReduce.apply(tensor, _group_or_default(group))


def _c_softmax_with_cross_entropy(original, logits, label, group=None, return_softmax=False, ignore_index=-100):
    if group is not None and not group.is_member():
        return None
    if return_softmax:
        raise CpuBackendError("cpu_backend: return_softmax=True is not implemented")
    if logits.ndim - 1 == label.ndim:
        label = label.unsqueeze(-1)
    return _mp_layers().VocabParallelCE.apply(logits, label, _group_or_default(group), ignore_index)


# --------------------------------------------------------------------------
# tensor-parallel input broadcast (fleet.utils.hybrid_parallel_util)
# --------------------------------------------------------------------------


def _broadcast_input_data(original, /, hcg, *inputs, **kwargs):
    from paddle.distributed.fleet.utils import hybrid_parallel_util as hpu

    def bcast(obj):
        import paddle

        if isinstance(obj, paddle.Tensor):
            # Paddle's device copy also makes sliced (strided) inputs contiguous, which gloo requires
            if not obj.is_contiguous():
                obj = obj.contiguous()
            hpu._broadcast_data_help(obj, obj.shape, obj.dtype, hcg)
            return obj
        if isinstance(obj, dict):
            return {k: bcast(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(bcast(v) for v in obj)
        box = [obj]
        hpu._broadcast_object_list_help(box, hcg)
        return box[0]

    if len(inputs) > 0:
        inputs = bcast(tuple(inputs))
    if len(kwargs) > 0:
        kwargs = bcast(dict(kwargs))
    return inputs, kwargs


# --------------------------------------------------------------------------
# pipeline parallel (ParallelEnv, fleet.meta_parallel.pp_utils.p2p_communication)
# --------------------------------------------------------------------------


def _device_id(original, self):
    try:
        return original(self)
    except AttributeError:  # only set from FLAGS_selected_gpus/xpus/custom devices
        return 0


def _batch_send_recv_on_calc_stream(original, p2p_op_list):
    from paddle.distributed.fleet.meta_parallel.pp_utils import p2p_communication as p2p

    tasks = []
    for op in p2p_op_list:
        grp = op.group
        peer = grp.get_group_rank(op.peer)
        if op.op is p2p._send_on_calc_stream:
            tasks.append(grp.process_group.send(op.tensor, peer, False))
        elif op.op is p2p._recv_on_calc_stream:
            tasks.append(grp.process_group.recv(op.tensor, peer, False))
        else:
            raise CpuBackendError(f"cpu_backend: unexpected p2p op {op.op}")
    for t in tasks:
        t.wait()


def _is_valid_send_recv_partial(original, tensor, mp_degree):
    return False


# --------------------------------------------------------------------------
# sequence parallel (fleet.utils.sequence_parallel_utils)
# --------------------------------------------------------------------------


def _mp_group():
    from paddle.distributed import fleet

    return fleet.get_hybrid_communicate_group().get_model_parallel_group()


def _sp_reduce_scatter(original, input):
    g = _mp_group()
    return _slice_for_rank(_all_reduce_copy(input, g), g.rank, g.nranks, axis=0)


# --------------------------------------------------------------------------
# expert parallel (PaddleNLP's MoELayer: stream.alltoall_single over the data-parallel group)
# --------------------------------------------------------------------------


def _alltoall_single(
    original, out_tensor, in_tensor, out_split_sizes=None, in_split_sizes=None, group=None, sync_op=True,
    use_calc_stream=False,
):  # fmt: skip
    """All-to-all of equal dim-0 chunks: rank r receives chunk r of every rank's input, in rank order. gloo has
    all_gather: each rank gathers every input whole and keeps its own chunk of each (n times the traffic of a true
    all-to-all; the tiny models CPU ranks run do not mind)."""
    import paddle

    if out_split_sizes is not None or in_split_sizes is not None:
        raise CpuBackendError("cpu_backend: all-to-all with split sizes is not implemented (MoELayer passes none)")
    group = _group_or_default(group)
    if group is not None and not group.is_member():
        return None
    n = group.nranks
    if in_tensor.shape[0] % n:
        raise CpuBackendError(f"cpu_backend: all-to-all of {in_tensor.shape[0]} rows over {n} ranks")
    parts = _all_gather_concat(in_tensor.unsqueeze(0), group, axis=0)  # [n, rows, ...]: rank s's input at s
    mine = [paddle.split(parts[s], n, axis=0)[group.rank] for s in range(n)]
    paddle.assign(paddle.concat(mine, axis=0), out_tensor)
    return None


# --------------------------------------------------------------------------
# group sharded stage 2 / 3 (paddle.distributed.sharding, fleet.meta_parallel.sharding)
# --------------------------------------------------------------------------


def _answer_true(original):
    return True


def _get_device_with_index(original, *args, **kwargs):
    device = original(*args, **kwargs)
    return "cpu:0" if device == "cpu" else device


def _custom_device_types_with_cpu(original):
    return [*original(), "cpu"]


def _add_rank_params(original, self, trainable_params, param2align, convert_gpu=True):
    return original(self, trainable_params, param2align, False)


def _dygraph_clip(original, self, params_grads):
    import paddle

    with paddle.no_grad():
        sliced = paddle.zeros([], dtype="float32")
        unsliced = paddle.zeros([], dtype="float32")
        for p, g in params_grads:
            if g is None or getattr(p, "need_clip", True) is False:
                continue
            sq = paddle.sum(paddle.square(g.astype("float32")))
            if hasattr(p, "unslice"):
                unsliced = unsliced + sq
            else:
                sliced = sliced + sq
        sliced = _all_reduce_copy(sliced, self._group)
        gnorm = paddle.sqrt(sliced + unsliced)
        max_norm = paddle.full([], self.clip_norm, dtype="float32")
        scale = max_norm / paddle.maximum(gnorm, max_norm)
        for p, g in params_grads:
            if g is None or getattr(p, "need_clip", True) is False:
                continue
            keep = g.stop_gradient
            g.stop_gradient = True
            g.scale_(scale.astype(g.dtype))
            g.stop_gradient = keep
    return params_grads


# --------------------------------------------------------------------------
# gloo sub-groups (paddle.distributed.collective)
# --------------------------------------------------------------------------


_GROUP_RANKS: list[list[int]] = []  # the ranks of the group new_group is creating (read by _new_process_group_impl)


@contextlib.contextmanager
def _creating(ranks, default):
    """While new_group creates a group: its global ranks (its store lives on the first one's host)."""
    _GROUP_RANKS.append(sorted(ranks) if ranks is not None else sorted(default.ranks))
    try:
        yield
    finally:
        _GROUP_RANKS.pop()


def _new_group(original, ranks=None, backend=None, *args, **kwargs):
    from paddle.distributed import collective

    default = collective._get_group_map_by_name().get(collective._default_group_name)
    if backend not in (None, "gloo") or default is None:
        return original(ranks, backend, *args, **kwargs)
    if default.nranks <= 2:  # never raced with two ranks; leave untouched (but say whose group it is)
        with _creating(ranks, default):
            return original(ranks, backend, *args, **kwargs)
    if ranks is not None and sorted(ranks) == sorted(default.ranks):
        gid = collective._custom_gid if collective._custom_gid else collective._new_ring_id()
        name = collective._default_group_name + str(gid)
        group = collective.Group(default.rank, gid, sorted(ranks), pg=default.process_group, name=name)
        collective._group_map_by_name[name] = group
        collective._group_map[gid] = group
        collective._group_map_backend[group] = "gloo"
        collective._add_new_group(group)
        return group
    default.process_group.barrier().wait()
    with _creating(ranks, default):
        group = original(ranks, backend, *args, **kwargs)
    default.process_group.barrier().wait()
    return group


def _new_process_group_impl(original, backend, store, rank, world_size, group_name, pg_options, group_id=0, **kwargs):
    from paddle.base import core

    if backend != "gloo" or group_id == 0:  # the default group keeps the default store
        return original(backend, store, rank, world_size, group_name, pg_options, group_id=group_id, **kwargs)
    host, port = os.environ.get("PADDLE_MASTER", "127.0.0.1:6170").rsplit(":", 1)
    endpoints = [e for e in os.environ.get("PADDLE_TRAINER_ENDPOINTS", "").split(",") if e]
    if _GROUP_RANKS and endpoints and _GROUP_RANKS[-1][0] < len(endpoints):
        host = endpoints[_GROUP_RANKS[-1][0]].rsplit(":", 1)[0]
    own = core.TCPStore(host, int(port) + 1 + group_id, rank == 0, world_size, 900)
    return core.ProcessGroupGloo.create(own, rank, world_size, group_id)


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------

_MP = "paddle.distributed.fleet.layers.mpu.mp_ops"
_P2P = "paddle.distributed.fleet.meta_parallel.pp_utils.p2p_communication"
_SP = "paddle.distributed.fleet.utils.sequence_parallel_utils"
_SHARDING = "paddle.distributed.fleet.meta_parallel.sharding"
_NO_CPU_KERNEL = "the {} kernel has no CPU build and ProcessGroupGloo lacks the *_on_calc_stream collective it uses"

PATCHES: tuple[Patch, ...] = (
    Patch(
        f"{_MP}:_c_identity",
        "rebind",
        ("tensor", "group", "skip_c_identity_dynamic"),
        "ColumnParallelLinear's input and llama's parallel_matmul. "
        + _NO_CPU_KERNEL.format("c_identity")
        + "; a PyLayer copies forward and all-reduces (sums) the gradient backward.",
        _c_identity,
    ),
    Patch(
        f"{_MP}:_c_concat",
        "rebind",
        ("tensor", "group"),
        "ColumnParallelLinear(gather_output=True), parallel_matmul with tensor_parallel_output=False. "
        + _NO_CPU_KERNEL.format("c_concat")
        + "; a PyLayer all-gathers along the last dim and keeps its own gradient slice.",
        _c_concat,
    ),
    Patch(
        f"{_MP}:_c_split",
        "rebind",
        ("tensor", "group"),
        "RowParallelLinear(input_is_parallel=False). "
        + _NO_CPU_KERNEL.format("c_split")
        + " (all_gather_into_tensor, which also gathers along dim 0); a PyLayer slices the last dim and all-gathers"
        " the gradient back.",
        _c_split,
    ),
    Patch(
        f"{_MP}:_mp_allreduce",
        "rebind",
        ("tensor", "op", "group", "use_calc_stream", "use_model_parallel", "skip_c_identity_dynamic"),
        "RowParallelLinear's and VocabParallelEmbedding's output. Paddle all-reduces in place on the PyLayer input"
        " through all_reduce_on_calc_stream (no gloo implementation; the in-place write trips autograd's version"
        " check); a PyLayer sums into a fresh tensor, identity backward. SUM only, as every mp caller uses.",
        _mp_allreduce,
    ),
    Patch(
        f"{_MP}:_c_softmax_with_cross_entropy",
        "rebind",
        ("logits", "label", "group", "return_softmax", "ignore_index"),
        "ParallelCrossEntropy (tensor_parallel_output=True). The c_softmax_with_cross_entropy kernel has no CPU build;"
        " a PyLayer computes the vocab-parallel softmax cross entropy with three all-reduces (max, sum of exp, target"
        " logit) and its exact gradient. return_softmax=True is refused (no caller on the llmpt path uses it).",
        _c_softmax_with_cross_entropy,
    ),
    Patch(
        "paddle.distributed.fleet.utils.hybrid_parallel_util:broadcast_input_data",
        "rebind",
        ("hcg", "inputs", "kwargs"),
        "TensorParallel's pre-forward. Paddle's asserts a gpu/xpu/custom device, then builds a Place from 'dev:N'"
        " (CPUPlace takes no index) and copies each input there: not a check a wrapper can answer. Re-implemented as"
        " Paddle's own per-tensor/per-object broadcast helpers over the mp group, made contiguous for gloo.",
        _broadcast_input_data,
    ),
    Patch(
        "paddle.distributed.parallel:ParallelEnv.device_id",
        "class",
        ("self",),
        "PipelineLayer reads it; the property returns self._device_id, which is only set from"
        " FLAGS_selected_gpus/xpus/custom devices, so on CPU it raises AttributeError. A CPU rank's device is 0.",
        _device_id,
    ),
    Patch(
        f"{_P2P}:batch_send_recv_on_calc_stream",
        "rebind",
        ("p2p_op_list",),
        "Pipeline activations and gradients. Paddle runs send/recv_on_calc_stream in a coalescing manager, neither"
        " implemented by ProcessGroupGloo; every op is posted as an async gloo send/recv on the same group and all"
        " are awaited before returning (the same batch semantics).",
        _batch_send_recv_on_calc_stream,
    ),
    Patch(
        f"{_P2P}:_is_valid_send_recv_partial",
        "rebind",
        ("tensor", "mp_degree"),
        "Partial send/recv (each mp rank sends 1/mp of an activation, all_gather_partial rebuilds it) needs"
        " send_partial and all_gather_partial_on_calc_stream, which gloo lacks. Answering False makes every mp rank"
        " send the whole tensor, as pipeline_configs.enable_partial_send_recv=False does.",
        _is_valid_send_recv_partial,
    ),
    Patch(
        f"{_SP}:reduce_scatter",
        "rebind",
        ("input",),
        "ReduceScatterOp forward, AllGatherOp backward. gloo has no reduce_scatter (does not support reduce_scatter"
        " with sync_op flag); the same result as an out-of-place all-reduce that keeps this rank's dim-0 slice."
        " (Its other half, sequence_parallel_utils.all_gather, runs on gloo as Paddle wrote it.)",
        _sp_reduce_scatter,
    ),
    Patch(
        "paddle.distributed.communication.stream.all_to_all:alltoall_single",
        "rebind",
        ("out_tensor", "in_tensor", "out_split_sizes", "in_split_sizes", "group", "sync_op", "use_calc_stream"),
        "PaddleNLP's MoELayer (qwen2_moe, deepseek_v2) sends each expert its tokens and back with"
        " stream.alltoall_single over the data-parallel group when that group splits the experts (ep = dp);"
        " ProcessGroupGloo has no all-to-all (dp2ep2 failed at the first step: 'ProcessGroupGLOO does not support"
        " all_to_all with sync_op and use_calc_stream flag'). The same exchange from gloo's all_gather: each rank"
        " keeps its own dim-0 chunk of every rank's input. Equal chunks only, as MoELayer sends; the PyLayer around"
        " it (_AllToAll) does the backward all-to-all through the same function.",
        _alltoall_single,
    ),
    Patch(
        f"{_SHARDING}.group_sharded_optimizer_stage2:core.is_compiled_with_cuda",
        "proxy",
        None,
        "GroupShardedOptimizerStage2.__init__ asserts a CUDA, XPU or custom-device build; its one use, that assert,"
        " answers True.",
        _answer_true,
        uses=1,
    ),
    Patch(
        f"{_SHARDING}.group_sharded_stage3:core.is_compiled_with_cuda",
        "proxy",
        None,
        "GroupShardedStage3.__init__ asserts a CUDA, XPU or custom-device build; its one use, that assert,"
        " answers True.",
        _answer_true,
        uses=1,
    ),
    Patch(
        f"{_SHARDING}.group_sharded_optimizer_stage2:paddle.get_device",
        "proxy",
        ("input",),
        "GroupShardedOptimizerStage2.__init__ parses int(get_device().split(':')[1]) (an IndexError on 'cpu'; the id"
        " only feeds the offload path's .cuda()); its other two uses hand the device to GroupShardedClipGrad, whose"
        " CPU clip ignores it. Answers 'cpu:0' for 'cpu'.",
        _get_device_with_index,
        uses=3,
    ),
    Patch(
        "paddle.distributed.sharding.group_sharded:paddle.device.get_all_custom_device_type",
        "proxy",
        (),
        "group_sharded_parallel (PaddleNLP's stage 2/3 wrapper) asserts a gpu/xpu/custom device; its one use, that"
        " assert, also lists 'cpu', so Paddle's own body runs and passes device='cpu' down.",
        _custom_device_types_with_cpu,
        uses=1,
    ),
    Patch(
        f"{_SHARDING}.group_sharded_storage:ParamStorage.add_rank_params",
        "class",
        ("self", "trainable_params", "param2align", "convert_gpu"),
        "GroupShardedOptimizerStage2 calls it with convert_gpu=True, which does param.cpu() then param._clear_data():"
        " on CPU .cpu() aliases the storage, so the value is gone before it is copied ('Tensor not initialized'),"
        " and then cvt_to_device (CUDA/XPU only). The buffer already is on the CPU: Paddle's own body with"
        " convert_gpu=False.",
        _add_rank_params,
    ),
    Patch(
        f"{_SHARDING}.group_sharded_utils:GroupShardedClipGrad._dygraph_clip",
        "class",
        ("self", "params_grads"),
        "Global-norm clip of stage 3 (and of stage 2). Paddle's parses a device id out of 'dev:N' and, when the"
        " device is cpu, moves the norm to the accelerator (.cuda(dev_id)); answering both with 'cpu:0' would make its"
        " device_guard call set_device('cpu:0'), which Paddle rejects, so it cannot be wrapped. Re-implemented: the"
        " same math (squares of sharded grads summed over the group, of replicated 'unslice' params added once, every"
        " grad scaled by clip/max(norm, clip)), in fp32, without SelectedRows (no sparse gradients here).",
        _dygraph_clip,
    ),
    Patch(
        "paddle.distributed.collective:new_group",
        "rebind",
        ("ranks", "backend", "timeout", "nccl_comm_init_option", "nccl_config"),
        "With more than 2 gloo ranks, HybridCommunicateGroup creates sub-groups back to back and the TCP pair"
        " connects race ('Connection refused', timeouts). Every rank waits on the default group before and after"
        " each creation (fleet calls new_group on ALL ranks for every group, so the barrier is collective), and a"
        " group of every rank reuses the default group's process group. Two ranks go to Paddle's.",
        _new_group,
    ),
    Patch(
        "paddle.distributed.collective:_new_process_group_impl",
        "rebind",
        (
            "backend",
            "store",
            "rank",
            "world_size",
            "group_name",
            "pg_options",
            "group_id",
            "nccl_comm_init_option",
            "nccl_config",
        ),
        "ProcessGroupGloo rendezvous through the one default TCPStore with keys that do not name the group: with 8"
        " ranks the second of two disjoint 4-rank groups reads the first one's addresses, and 3+ rank groups clobber"
        " keys the default group connects with later. Each gloo sub-group gets its own TCPStore on its first"
        " member's host (PADDLE_TRAINER_ENDPOINTS), port master + 1 + group id; the default group is Paddle's.",
        _new_process_group_impl,
    ),
)


# --------------------------------------------------------------------------
# checking and installing
# --------------------------------------------------------------------------


def _resolve(patch: Patch) -> tuple[types.ModuleType, Any, str, Any]:
    """(module, owner of the last attribute, its name, the target object). Raises LookupError naming what is gone."""
    module_name, path = patch.target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise LookupError(f"module {module_name} is gone ({e})") from None
    owner, obj, names = None, module, path.split(".")
    for i, name in enumerate(names):
        owner = obj
        try:
            obj = inspect.getattr_static(owner, name) if isinstance(owner, type) else getattr(owner, name)
        except AttributeError:
            raise LookupError(f"{module_name}.{'.'.join(names[: i + 1])} is gone") from None
    return module, owner, names[-1], obj


def _original(obj: Any) -> Callable[..., Any]:
    """What a patch delegates to: a property's getter, an unwrapped patch, or the object itself."""
    if isinstance(obj, property):
        obj = obj.fget
    return getattr(obj, "__llmpt_original__", obj)


def check_target(patch: Patch) -> list[str]:
    """What no longer holds about this patch's target in the installed Paddle; empty when the patch still fits."""
    try:
        module, owner, _, obj = _resolve(patch)
    except LookupError as e:
        return [str(e)]
    problems = []
    fn = _original(obj)
    kinds = {
        "rebind": inspect.isfunction(fn) and isinstance(owner, types.ModuleType),
        "class": isinstance(owner, type) and (inspect.isfunction(fn) or isinstance(obj, property)),
        "proxy": callable(fn) and patch.target.split(":")[1].count(".") >= 1,
    }
    if not kinds[patch.mechanism]:
        problems.append(f"is a {type(obj).__name__} of {type(owner).__name__}, not a {patch.mechanism} target")
    if patch.expects_signature is not None:
        problems += signature_problems(fn, patch.expects_signature, "patch")
    if patch.uses is not None:
        name = patch.target.split(":")[1]
        found_uses = inspect.getsource(module).count(f"{name}(")
        if found_uses != patch.uses:
            problems.append(f"{module.__name__} calls {name}() {found_uses} times; the patch was read for {patch.uses}")
    return problems


def _guarded(patch: Patch, like: Callable[..., Any]) -> Callable[..., Any]:
    """The rule, one place: the CPU implementation on CPU in dynamic mode, Paddle's original otherwise."""
    name, cpu = patch.name, patch.cpu

    @functools.wraps(like)
    def patched(*args, **kwargs):
        original = ORIGINALS[name]
        if _active():
            return cpu(original, *args, **kwargs)
        return original(*args, **kwargs)

    patched.__llmpt_original__ = like
    return patched


def _rebind_everywhere(orig, new, prefixes=("paddle", "paddlenlp")) -> None:
    """Replace every module-level reference to `orig` by `new` in already-imported modules."""
    for mname, mod in list(sys.modules.items()):
        if mod is None or not mname.startswith(prefixes):
            continue
        d = getattr(mod, "__dict__", None)
        for k, v in list((d or {}).items()):
            if v is orig:
                d[k] = new


def _proxied(real, names: list[str], value) -> ModuleProxy:
    """`real` as seen through a proxy whose attribute path `names` answers `value`."""
    proxy = real if isinstance(real, ModuleProxy) else ModuleProxy(real)
    head, *rest = names
    over = object.__getattribute__(proxy, "_over")
    over[head] = value if not rest else _proxied(getattr(proxy, head), rest, value)
    return proxy


def _apply(patch: Patch) -> None:
    module, owner, attr, obj = _resolve(patch)
    ORIGINALS[patch.name] = _original(obj)
    new = _guarded(patch, ORIGINALS[patch.name])
    if patch.mechanism == "rebind":
        _rebind_everywhere(obj, new)
    elif patch.mechanism == "class":
        setattr(owner, attr, property(new, doc=obj.__doc__) if isinstance(obj, property) else new)
    else:
        head, *rest = patch.target.split(":")[1].split(".")
        module.__dict__[head] = _proxied(module.__dict__[head], rest, new)


def install() -> bool:
    """Apply every patch (idempotent). True if the patches are active, False if the device is not CPU (nothing
    patched). Raises CpuBackendError on another Paddle release or a target that no longer fits its patch."""
    global _INSTALLED
    import paddle

    if paddle.__version__ != PADDLE:
        raise CpuBackendError(
            f"cpu_backend was written against paddlepaddle=={PADDLE}; found {paddle.__version__}. "
            "The patched internals may differ; refusing to patch."
        )
    if _INSTALLED:
        return True
    if paddle.get_device().split(":")[0] != "cpu":
        return False
    problems = [f"{p.name}: {msg}" for p in PATCHES for msg in check_target(p)]
    if problems:
        raise CpuBackendError("cpu_backend: Paddle no longer matches these patches: " + "; ".join(problems))
    for patch in PATCHES:
        _apply(patch)
    _INSTALLED = True
    return True
