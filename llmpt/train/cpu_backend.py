"""CPU (gloo) backend for Paddle fleet hybrid parallelism -- prototype.

Paddle 3.3.1 refuses tensor parallel, pipeline parallel and group-sharded
stage 2/3 on CPU.  ``install()`` patches the few places that refuse, each
with a replacement that computes the same forward AND backward using only
collectives that ProcessGroupGloo implements (all_reduce, broadcast,
all_gather, send/recv, isend/irecv).

Design rules for every replacement below:
  * it names the Paddle function it stands in for and why;
  * it only takes over when running in dynamic (eager) mode on CPU, and
    otherwise delegates to the original function;
  * collectives always work on a fresh tensor (never in place on a PyLayer
    input), so autograd's inplace-version check is never tripped;
  * every forward communication has its matching backward communication
    (a forward-only replacement would silently drop a gradient all-reduce).

Usage (before fleet.init / model construction):
    import cpu_backend; cpu_backend.install()
"""

from __future__ import annotations

import contextlib
import types

SUPPORTED_PADDLE = "3.3.1"

_INSTALLED = False
_ORIG = {}  # name -> original object, so that uninstall()/debugging is possible


class CpuBackendError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _on_cpu():
    import paddle

    return paddle.get_device().split(":")[0] == "cpu"


def _eager():
    import paddle

    return paddle.in_dynamic_mode()


def _group_or_default(group):
    from paddle.distributed import collective

    return collective._get_default_group() if group is None else group


def _fresh(x):
    """A new, contiguous tensor with x's values (gloo needs contiguous buffers;
    a fresh tensor also keeps collectives off PyLayer inputs)."""
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


def _swap_everywhere(orig, new, prefixes=("paddle", "paddlenlp")):
    """Replace every module-level reference to `orig` (e.g. names imported with
    `from mp_ops import _c_identity`) by `new`, in already-imported modules."""
    import sys

    n = 0
    for mname, mod in list(sys.modules.items()):
        if mod is None or not mname.startswith(prefixes):
            continue
        d = getattr(mod, "__dict__", None)
        if not d:
            continue
        for k, v in list(d.items()):
            if v is orig:
                d[k] = new
                n += 1
    return n


class _ModuleProxy(types.ModuleType):
    """A stand-in for a module object *inside one Paddle module only*: forwards
    every attribute to the real module except the few overridden ones."""

    def __init__(self, real, **overrides):
        super().__init__(real.__name__)
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_over", overrides)

    def __getattr__(self, name):
        over = object.__getattribute__(self, "_over")
        if name in over:
            return over[name]
        return getattr(object.__getattribute__(self, "_real"), name)


# --------------------------------------------------------------------------
# 1. tensor-parallel communication ops (paddle.distributed.fleet.layers.mpu.mp_ops)
# --------------------------------------------------------------------------


def _make_mp_ops():
    import paddle
    from paddle.autograd import PyLayer

    class CpuIdentity(PyLayer):
        """Stands in for mp_ops.c_identity_eager: forward is a copy, backward
        all-reduces (sums) the gradient over the mp group.  The original uses
        the c_identity kernel (no CPU kernel) and
        ProcessGroup.all_reduce_on_calc_stream (not implemented by gloo)."""

        @staticmethod
        def forward(ctx, x, group):
            ctx.group = group
            return x.clone()

        @staticmethod
        def backward(ctx, dy):
            return _all_reduce_copy(dy, ctx.group)

    class CpuAllReduce(PyLayer):
        """Stands in for mp_ops.mp_allreduce_eager: forward sums over the mp
        group, backward is the identity.  The original all-reduces *in place*
        on the PyLayer input through all_reduce_on_calc_stream (no gloo
        implementation, and the in-place write trips autograd's version check);
        here the sum goes to a fresh tensor."""

        @staticmethod
        def forward(ctx, x, group):
            return _all_reduce_copy(x, group)

        @staticmethod
        def backward(ctx, dy):
            return dy.clone()

    class CpuSplitLast(PyLayer):
        """Stands in for mp_ops.c_split_eager: forward keeps this rank's slice
        of the last dim, backward all-gathers the gradient slices back along the
        last dim.  The original uses the c_split kernel (no CPU kernel) and
        all_gather_into_tensor_on_calc_stream (gathers along dim 0)."""

        @staticmethod
        def forward(ctx, x, group):
            ctx.group = group
            return _slice_for_rank(x, group.rank, group.nranks, axis=-1)

        @staticmethod
        def backward(ctx, dy):
            return _all_gather_concat(dy, ctx.group, axis=-1)

    class CpuConcatLast(PyLayer):
        """Stands in for _C_ops.c_concat (+ its registered grad op c_split):
        forward all-gathers along the last dim, backward keeps this rank's
        slice of the gradient (the output is replicated on every mp rank, so no
        reduction is needed -- same as Paddle's c_concat_grad)."""

        @staticmethod
        def forward(ctx, x, group):
            ctx.group = group
            return _all_gather_concat(x, group, axis=-1)

        @staticmethod
        def backward(ctx, dy):
            return _slice_for_rank(dy, ctx.group.rank, ctx.group.nranks, axis=-1)

    class CpuVocabParallelCE(PyLayer):
        """Stands in for _C_ops.c_softmax_with_cross_entropy (no CPU kernel):
        softmax cross entropy over logits whose last (vocab) dim is split over
        the mp group.  forward: global max (all-reduce MAX), global sum of exp
        (all-reduce SUM), the target logit picked on the owning rank
        (all-reduce SUM).  backward: d loss/d logits = softmax - onehot, local
        slice only (exactly what c_softmax_with_cross_entropy_grad computes)."""

        @staticmethod
        def forward(ctx, logits, label, group, ignore_index):
            import paddle.distributed as dist

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

    return CpuIdentity, CpuAllReduce, CpuSplitLast, CpuConcatLast, CpuVocabParallelCE


def _patch_mp_ops():
    from paddle.distributed.fleet.layers.mpu import mp_ops

    CpuIdentity, CpuAllReduce, CpuSplitLast, CpuConcatLast, CpuVocabParallelCE = _make_mp_ops()

    orig_identity = mp_ops._c_identity
    orig_concat = mp_ops._c_concat
    orig_split = mp_ops._c_split
    orig_allreduce = mp_ops._mp_allreduce
    orig_ce = mp_ops._c_softmax_with_cross_entropy
    _ORIG.update(
        _c_identity=orig_identity,
        _c_concat=orig_concat,
        _c_split=orig_split,
        _mp_allreduce=orig_allreduce,
        _c_softmax_with_cross_entropy=orig_ce,
    )

    # replaces mp_ops._c_identity (ColumnParallelLinear input, llama parallel_matmul)
    def _c_identity(tensor, group=None, skip_c_identity_dynamic=False):
        if not (_eager() and _on_cpu()):
            return orig_identity(tensor, group, skip_c_identity_dynamic)
        if group is not None and not group.is_member():
            return None
        # skip_c_identity_dynamic only skips the forward copy in Paddle; the
        # backward all-reduce is kept, so it is ignored here on purpose.
        return CpuIdentity.apply(tensor, _group_or_default(group))

    # replaces mp_ops._c_concat (ColumnParallelLinear(gather_output=True),
    # llama parallel_matmul with tensor_parallel_output=False)
    def _c_concat(tensor, group=None):
        if not (_eager() and _on_cpu()):
            return orig_concat(tensor, group)
        if group is not None and not group.is_member():
            return None
        return CpuConcatLast.apply(tensor, _group_or_default(group))

    # replaces mp_ops._c_split (RowParallelLinear(input_is_parallel=False))
    def _c_split(tensor, group=None):
        if not (_eager() and _on_cpu()):
            return orig_split(tensor, group)
        if group is not None and not group.is_member():
            return None
        return CpuSplitLast.apply(tensor, _group_or_default(group))

    # replaces mp_ops._mp_allreduce (RowParallelLinear / VocabParallelEmbedding output)
    def _mp_allreduce(
        tensor, op=None, group=None, use_calc_stream=True, use_model_parallel=True, skip_c_identity_dynamic=False
    ):
        if not (_eager() and _on_cpu()):
            kw = dict(
                group=group,
                use_calc_stream=use_calc_stream,
                use_model_parallel=use_model_parallel,
                skip_c_identity_dynamic=skip_c_identity_dynamic,
            )
            return orig_allreduce(tensor, op, **kw) if op is not None else orig_allreduce(tensor, **kw)
        if group is not None and not group.is_member():
            return None
        from paddle.distributed import ReduceOp

        assert op is None or op == ReduceOp.SUM, f"only SUM is supported, got {op}"
        return CpuAllReduce.apply(tensor, _group_or_default(group))

    # replaces mp_ops._c_softmax_with_cross_entropy (ParallelCrossEntropy,
    # used when tensor_parallel_output=True)
    def _c_softmax_with_cross_entropy(logits, label, group=None, return_softmax=False, ignore_index=-100):
        if not (_eager() and _on_cpu()):
            return orig_ce(logits, label, group, return_softmax, ignore_index)
        if group is not None and not group.is_member():
            return None
        if return_softmax:
            raise CpuBackendError("cpu_backend: return_softmax=True is not implemented")
        if logits.ndim - 1 == label.ndim:
            label = label.unsqueeze(-1)
        return CpuVocabParallelCE.apply(logits, label, _group_or_default(group), ignore_index)

    for orig, new in [
        (orig_identity, _c_identity),
        (orig_concat, _c_concat),
        (orig_split, _c_split),
        (orig_allreduce, _mp_allreduce),
        (orig_ce, _c_softmax_with_cross_entropy),
    ]:
        new.__name__ = orig.__name__
        new.__doc__ = f"cpu_backend replacement for paddle mp_ops.{orig.__name__}"
        _swap_everywhere(orig, new)


# --------------------------------------------------------------------------
# 2. fleet.utils.hybrid_parallel_util.broadcast_input_data
# --------------------------------------------------------------------------


def _patch_broadcast_input_data():
    from paddle.distributed.fleet.utils import hybrid_parallel_util as hpu

    orig = hpu.broadcast_input_data
    _ORIG["broadcast_input_data"] = orig

    def _bcast(hcg, obj):
        import paddle

        if isinstance(obj, paddle.Tensor):
            # Paddle's helper already works on CPU tensors; only the device
            # assert/copy in broadcast_input_data is GPU-specific.  Paddle's
            # device copy also makes sliced (strided) inputs contiguous, which
            # gloo requires, so do that here.
            if not obj.is_contiguous():
                obj = obj.contiguous()
            hpu._broadcast_data_help(obj, obj.shape, obj.dtype, hcg)
            return obj
        if isinstance(obj, dict):
            return {k: _bcast(hcg, v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(_bcast(hcg, v) for v in obj)
        box = [obj]
        hpu._broadcast_object_list_help(box, hcg)
        return box[0]

    # Replaces hybrid_parallel_util.broadcast_input_data, which asserts
    # "Only support xpu, gpu and custom_device" and copies inputs to the device.
    # On CPU the inputs already live where they are used: broadcast each tensor
    # from the mp source rank over the mp group, exactly as Paddle does after its
    # device copy.
    def broadcast_input_data(hcg, *inputs, **kwargs):
        if not _on_cpu():
            return orig(hcg, *inputs, **kwargs)
        if len(inputs) > 0:
            inputs = _bcast(hcg, tuple(inputs))
        if len(kwargs) > 0:
            kwargs = _bcast(hcg, dict(kwargs))
        return inputs, kwargs

    _swap_everywhere(orig, broadcast_input_data)


# --------------------------------------------------------------------------
# 3. ParallelEnv.device_id
# --------------------------------------------------------------------------


def _patch_parallel_env():
    from paddle.distributed import parallel

    cls = parallel.ParallelEnv
    orig = cls.__dict__["device_id"]
    _ORIG["ParallelEnv.device_id"] = orig

    # Replaces the ParallelEnv.device_id property: it returns self._device_id,
    # which is only set when FLAGS_selected_gpus/xpus/custom devices exist; on
    # CPU it raises AttributeError (PipelineLayer.__init__ reads it).  CPU
    # ranks have a single "device" 0.
    def device_id(self):
        try:
            return orig.fget(self)
        except AttributeError:
            return 0

    cls.device_id = property(device_id, doc=orig.__doc__)


# --------------------------------------------------------------------------
# 4. pipeline p2p (fleet.meta_parallel.pp_utils.p2p_communication)
# --------------------------------------------------------------------------


def _patch_p2p():
    from paddle.distributed.fleet.meta_parallel.pp_utils import p2p_communication as p2p

    orig_batch = p2p.batch_send_recv_on_calc_stream
    orig_partial = p2p._is_valid_send_recv_partial
    _ORIG.update(batch_send_recv_on_calc_stream=orig_batch, _is_valid_send_recv_partial=orig_partial)

    # Replaces p2p_communication.batch_send_recv_on_calc_stream, which runs
    # send_on_calc_stream / recv_on_calc_stream inside a coalescing manager
    # (neither is implemented by ProcessGroupGloo).  Here every op is posted
    # as an asynchronous gloo send/recv on the same pipe group and all are
    # waited for before returning -- the same "batch" semantics (the caller
    # may use the received tensors right after the call).
    def batch_send_recv_on_calc_stream(p2p_op_list):
        if not _on_cpu():
            return orig_batch(p2p_op_list)
        tasks = []
        for op in p2p_op_list:
            grp = op.group
            peer = grp.get_group_rank(op.peer)
            if op.op is p2p._send_on_calc_stream:
                tasks.append(grp.process_group.send(op.tensor, peer, False))
            elif op.op is p2p._recv_on_calc_stream:
                tasks.append(grp.process_group.recv(op.tensor, peer, False))
            else:
                raise CpuBackendError(f"unexpected p2p op {op.op}")
        for t in tasks:
            t.wait()

    # Replaces p2p_communication._is_valid_send_recv_partial.  Partial send/recv
    # (each mp rank sends 1/mp of the activation, then an all_gather_partial
    # rebuilds it) needs send_partial/all_gather_partial_on_calc_stream, which
    # gloo lacks.  Returning False makes every mp rank send the whole tensor,
    # which is what pipeline_configs.enable_partial_send_recv=False does.
    def _is_valid_send_recv_partial(tensor, mp_degree):
        if not _on_cpu():
            return orig_partial(tensor, mp_degree)
        return False

    p2p.batch_send_recv_on_calc_stream = batch_send_recv_on_calc_stream
    p2p._is_valid_send_recv_partial = _is_valid_send_recv_partial


# --------------------------------------------------------------------------
# 5. sequence parallel (fleet.utils.sequence_parallel_utils)
# --------------------------------------------------------------------------


def _patch_sequence_parallel():
    from paddle.distributed.fleet.utils import sequence_parallel_utils as spu

    orig_rs = spu.reduce_scatter
    orig_ag = spu.all_gather
    _ORIG.update(sp_reduce_scatter=orig_rs, sp_all_gather=orig_ag)

    def _mp_group():
        from paddle.distributed import fleet

        return fleet.get_hybrid_communicate_group().get_model_parallel_group()

    # Replaces sequence_parallel_utils.reduce_scatter (used by ReduceScatterOp
    # forward and AllGatherOp backward): gloo has no reduce_scatter ("does not
    # support reduce_scatter with sync_op flag").  Same result via an
    # out-of-place all-reduce followed by keeping this rank's dim-0 slice.
    def reduce_scatter(input):
        if not _on_cpu():
            return orig_rs(input)
        g = _mp_group()
        return _slice_for_rank(_all_reduce_copy(input, g), g.rank, g.nranks, axis=0)

    # Replaces sequence_parallel_utils.all_gather (GatherOp/AllGatherOp forward,
    # ScatterOp/ReduceScatterOp backward) with an explicit gather+concat along
    # dim 0; Paddle's version allocates with paddle.empty and fills it through
    # the raw process-group call, which works on gloo but is kept uniform here.
    def all_gather(input):
        if not _on_cpu():
            return orig_ag(input)
        return _all_gather_concat(input, _mp_group(), axis=0)

    spu.reduce_scatter = reduce_scatter
    spu.all_gather = all_gather


# --------------------------------------------------------------------------
# 6. group sharded stage 2 / 3
# --------------------------------------------------------------------------


def _patch_group_sharded():
    import paddle
    from paddle.base import core
    from paddle.distributed.fleet.meta_parallel.sharding import (
        group_sharded_optimizer_stage2 as os2,
    )
    from paddle.distributed.fleet.meta_parallel.sharding import (
        group_sharded_stage3 as s3,
    )
    from paddle.distributed.sharding import group_sharded as gs

    # GroupShardedOptimizerStage2.__init__ and GroupShardedStage3.__init__
    # assert core.is_compiled_with_cuda() or xpu or custom device.  The only
    # use of core.is_compiled_with_cuda in those two modules is that assert, so
    # the module-local `core` is replaced by a proxy answering True there.
    os2.core = _ModuleProxy(core, is_compiled_with_cuda=lambda: True)
    s3.core = _ModuleProxy(core, is_compiled_with_cuda=lambda: True)

    # GroupShardedOptimizerStage2.__init__ does
    # `self.dev_id = int(paddle.get_device().split(":")[1])`, an IndexError on
    # "cpu".  dev_id is only used by the offload path (.cuda(dev_id)).  Inside
    # that module only, paddle.get_device() reports "cpu:0".
    real_get_device = paddle.get_device

    def get_device():
        d = real_get_device()
        return "cpu:0" if d == "cpu" else d

    os2.paddle = _ModuleProxy(paddle, get_device=get_device)

    from paddle.distributed.fleet.meta_parallel.sharding import group_sharded_storage as gss

    orig_add = gss.ParamStorage.add_rank_params
    _ORIG["ParamStorage.add_rank_params"] = orig_add

    # Replaces ParamStorage.add_rank_params (called by
    # GroupShardedOptimizerStage2._integration_params with convert_gpu=True).
    # With convert_gpu=True it does `param_cpu = param.cpu(); param._clear_data()`
    # -- on CPU, .cpu() aliases the same storage, so clearing destroys the value
    # before it is copied into the flat buffer ("Tensor not initialized") -- and
    # then moves the buffer with cvt_to_device (CUDA/XPU only).  The buffer
    # already lives on the CPU, so convert_gpu=False is the exact CPU
    # equivalent: copy the param into its slice, then make the param a view of it.
    def add_rank_params(self, trainable_params, param2align, convert_gpu=True):
        if _on_cpu():
            convert_gpu = False
        return orig_add(self, trainable_params, param2align, convert_gpu)

    gss.ParamStorage.add_rank_params = add_rank_params

    from paddle.distributed.fleet.meta_parallel.sharding import group_sharded_utils as gsu

    orig_clip = gsu.GroupShardedClipGrad._dygraph_clip
    _ORIG["GroupShardedClipGrad._dygraph_clip"] = orig_clip

    # Replaces GroupShardedClipGrad._dygraph_clip (the global-norm clip that
    # GroupShardedStage3 -- and stage 2 in pure-dp mode -- installs on the
    # optimizer).  Paddle's version parses a device id out of "gpu:N" and, when
    # the current device is "cpu", moves the norm to CUDA (.cuda(dev_id)).  Same
    # math here: squared norms of sharded slices are summed over the sharding
    # group, squared norms of params marked `unslice` (replicated, same on every
    # rank) are added once, then every grad is scaled by
    # clip_norm / max(global_norm, clip_norm).
    @paddle.autograd.no_grad()
    def _dygraph_clip(self, params_grads):
        if not _on_cpu():
            return orig_clip(self, params_grads)
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

    gsu.GroupShardedClipGrad._dygraph_clip = _dygraph_clip

    orig = gs.group_sharded_parallel
    _ORIG["group_sharded_parallel"] = orig

    # Replaces paddle.distributed.sharding.group_sharded_parallel, which asserts
    # the device is gpu/xpu/custom.  Same construction (stage-2 optimizer +
    # GroupShardedStage2 for "os"/"os_g", GroupShardedStage3 for "p_g_os"),
    # with device="cpu" passed down.
    def group_sharded_parallel(
        model,
        optimizer,
        level,
        scaler=None,
        group=None,
        offload=False,
        sync_buffers=False,
        buffer_max_size=2**23,
        segment_size=2**20,
        sync_comm=False,
        dp_group=None,
        exclude_layer=None,
    ):
        if not _on_cpu():
            return orig(
                model,
                optimizer,
                level,
                scaler=scaler,
                group=group,
                offload=offload,
                sync_buffers=sync_buffers,
                buffer_max_size=buffer_max_size,
                segment_size=segment_size,
                sync_comm=sync_comm,
                dp_group=dp_group,
                exclude_layer=exclude_layer,
            )
        if offload:
            raise CpuBackendError("cpu_backend: sharding offload is meaningless on CPU")
        if level not in ("os", "os_g", "p_g_os"):
            raise ValueError("The level must be os, os_g or p_g_os.")
        if any(p.dtype in (paddle.float16,) for p in model.parameters()) and scaler is not None:
            scaler = gs.GroupShardedScaler(scaler)
        if level in ("os", "os_g"):
            optimizer = gs.GroupShardedOptimizerStage2(
                params=optimizer._parameter_list,
                optim=optimizer,
                group=group,
                offload=False,
                dp_group=dp_group,
                device="cpu",
            )
            model = gs.GroupShardedStage2(
                model,
                optimizer,
                group=group,
                sync_buffers=sync_buffers,
                buffer_max_size=buffer_max_size,
                dp_group=dp_group,
                device="cpu",
            )
        else:
            model = gs.GroupShardedStage3(
                model,
                optimizer=optimizer,
                group=group,
                sync_buffers=sync_buffers,
                segment_size=segment_size,
                offload=False,
                sync_comm=sync_comm,
                dp_group=dp_group,
                device="cpu",
                exclude_layer=exclude_layer,
            )
        if isinstance(scaler, paddle.amp.GradScaler):
            scaler = gs.GroupShardedScaler(scaler)
        return model, optimizer, scaler

    gs.group_sharded_parallel = group_sharded_parallel
    _swap_everywhere(orig, group_sharded_parallel)


# --------------------------------------------------------------------------
# 7. gloo sub-group creation (paddle.distributed.collective.new_group)
# --------------------------------------------------------------------------


_GROUP_RANKS: list[list[int]] = []  # the ranks of the group new_group is creating (read by the store patch)


@contextlib.contextmanager
def _creating(ranks, default):
    """While new_group creates a group: its global ranks (its store lives on the first one's host)."""
    _GROUP_RANKS.append(sorted(ranks) if ranks is not None else sorted(default.ranks))
    try:
        yield
    finally:
        _GROUP_RANKS.pop()


def _patch_new_group():
    from paddle.distributed import collective

    orig = collective.new_group
    _ORIG["new_group"] = orig

    # Replaces paddle.distributed.new_group.  With more than 2 gloo ranks,
    # HybridCommunicateGroup creates many sub-groups back to back; each
    # ProcessGroupGloo.create makes its members connect TCP pairs through the
    # store while other ranks are already creating the next group, and the
    # connects race ("Connection refused" / timeouts).  On CPU:
    #   * every rank synchronises on the default group before and after each
    #     creation (HybridCommunicateGroup calls new_group on ALL ranks for
    #     every group, members or not, so the barrier is collective);
    #   * a group spanning every rank reuses the default group's gloo process
    #     group instead of opening a second set of connections.
    # The returned Group has its own gid/name exactly as new_group would give.
    def new_group(
        ranks=None, backend=None, timeout=collective._default_timeout, nccl_comm_init_option=0, nccl_config=None
    ):
        default = collective._get_group_map_by_name().get(collective._default_group_name)
        if not (_eager() and _on_cpu()) or backend not in (None, "gloo") or default is None:
            return orig(ranks, backend, timeout, nccl_comm_init_option, nccl_config)
        world = default.nranks
        if world <= 2:  # never raced with two ranks; leave untouched (but say whose group it is)
            with _creating(ranks, default):
                return orig(ranks, backend, timeout, nccl_comm_init_option, nccl_config)
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
            group = orig(ranks, backend, timeout, nccl_comm_init_option, nccl_config)
        default.process_group.barrier().wait()
        return group

    _swap_everywhere(orig, new_group)


def _patch_group_stores():
    import os

    from paddle.base import core
    from paddle.distributed import collective

    orig = collective._new_process_group_impl
    _ORIG["_new_process_group_impl"] = orig

    # Replaces paddle.distributed.collective._new_process_group_impl for gloo sub-groups on CPU.
    # ProcessGroupGloo rendezvous through the one default TCPStore with keys that do not carry the group:
    # with 8 ranks, the second of two disjoint 4-rank groups ([0,2,4,6] then [1,3,5,7]) reads the first
    # group's addresses and fails ("sizeof(impl_) == bytes.size()", connection refused, pair timeouts);
    # any group of 3+ ranks also clobbers keys the default group connects with later. Each sub-group now
    # rendezvous through its own TCPStore, hosted by its first member on master port + 1 + group id: on that
    # member's own host (PADDLE_TRAINER_ENDPOINTS lists every rank's), so groups may span nodes.
    def _new_process_group_impl(backend, store, rank, world_size, group_name, pg_options, group_id=0, **kwargs):
        if backend != "gloo" or group_id == 0 or not _on_cpu():
            return orig(backend, store, rank, world_size, group_name, pg_options, group_id=group_id, **kwargs)
        host, port = os.environ.get("PADDLE_MASTER", "127.0.0.1:6170").rsplit(":", 1)
        endpoints = [e for e in os.environ.get("PADDLE_TRAINER_ENDPOINTS", "").split(",") if e]
        if _GROUP_RANKS and endpoints and _GROUP_RANKS[-1][0] < len(endpoints):
            host = endpoints[_GROUP_RANKS[-1][0]].rsplit(":", 1)[0]
        own = core.TCPStore(host, int(port) + 1 + group_id, rank == 0, world_size, 900)
        return core.ProcessGroupGloo.create(own, rank, world_size, group_id)

    collective._new_process_group_impl = _new_process_group_impl


# --------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------


def install():
    """Apply all CPU patches.  Idempotent.  Returns True if patches are (now)
    active, False if the current device is not CPU (nothing patched).
    Raises CpuBackendError on an unsupported Paddle version."""
    global _INSTALLED
    import paddle

    if paddle.__version__ != SUPPORTED_PADDLE:
        raise CpuBackendError(
            f"cpu_backend was written against paddlepaddle=={SUPPORTED_PADDLE}; found "
            f"{paddle.__version__}. The patched internals may differ; refusing to patch."
        )
    if _INSTALLED:
        return True
    if not _on_cpu():
        return False
    _patch_mp_ops()
    _patch_broadcast_input_data()
    _patch_parallel_env()
    _patch_p2p()
    _patch_sequence_parallel()
    _patch_group_sharded()
    _patch_new_group()
    _patch_group_stores()
    _INSTALLED = True
    return True


def installed():
    return _INSTALLED
