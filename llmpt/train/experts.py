"""Expert-parallel gradients as PaddleNLP 3.0.0b4's Trainer leaves them, made those of the global loss.

With ep (= dp, llmpt/strategies: PaddleNLP's MoELayer splits each layer's experts over the data-parallel group),
each rank's loss is the mean over its own tokens, and a rank's experts receive, through the all-to-all's backward,
the gradient of every dp rank's loss: their sum. The Trainer (use_expert_parallel) leaves them out of the
data-parallel all-reduce, which would have divided by dp, and divides them by nothing: the experts' gradient is dp
times that of the global mean loss. Measured on CPU ranks (qwen2-moe-tiny, SGD, no clipping, from one saved
initialisation): dp2ep2 equalled dp1 at the first step and was 7.1e-3 off at the third (7.7175 vs 7.6632); AdamW
hides most of it (it is almost blind to a gradient's scale) but not the clipping. Gradient clipping
(ClipGradByGlobalNorm, max_grad_norm) measures each rank's norm over its own experts only, so the ranks clip by
different factors and their replicated weights drift apart.

ExpertGradients, at every optimizer step before the optimizer runs: the experts' gradients are divided by ep, and
with clipping on, every gradient is clipped by the global norm (replicated weights counted once, each rank's
experts summed over the ep group), after which the optimizer's own clip, whose rank-local norm is no larger, leaves
them as they are.
"""

from __future__ import annotations

import paddle
import paddle.distributed as dist
from paddlenlp.trainer import TrainerCallback


class ExpertParallelError(RuntimeError):
    pass


def is_expert(p) -> bool:
    """An expert weight this rank owns alone: MoELayer marks them no_sync when it splits the experts."""
    return bool(getattr(p, "no_sync", False))


def _squares(grads) -> paddle.Tensor:
    """Sum of squares in float32, as ClipGradByGlobalNorm sums them."""
    total = paddle.zeros([], "float32")
    for g in grads:
        total = total + g.astype("float32").square().sum()
    return total


def _grad(p):
    g = getattr(p, "main_grad", None)
    return g if g is not None else p.grad


class ExpertGradients(TrainerCallback):
    def __init__(self, max_grad_norm: float) -> None:
        hcg = dist.fleet.get_hybrid_communicate_group()
        self.group = hcg.get_data_parallel_group()  # MoELayer's moe_group "data"
        self.ep = self.group.nranks
        self.max_grad_norm = max_grad_norm
        others = {
            "tp": hcg.get_model_parallel_world_size(),
            "pp": hcg.get_pipe_parallel_world_size(),
            "sharding": hcg.get_sharding_parallel_world_size(),
        }
        others = {k: v for k, v in others.items() if v > 1}
        if max_grad_norm > 0 and others:
            # the global norm would need each of those groups' reductions as well; not written (nor measured)
            raise ExpertParallelError(
                f"ep{self.ep} with {', '.join(f'{k}{v}' for k, v in others.items())} and gradient clipping "
                f"(train.max_grad_norm {max_grad_norm}): PaddleNLP 3.0.0b4 clips each rank by its own experts' norm "
                "and llmpt's correction covers ep with data parallel only; set train.max_grad_norm=0 or use dpNepN"
            )

    def on_optimizer_begin(self, args, state, control, model=None, **kwargs):
        if model is None or self.ep <= 1:
            return
        params = [p for p in model.parameters() if _grad(p) is not None]
        experts = [_grad(p) for p in params if is_expert(p)]
        with paddle.no_grad():
            for g in experts:
                g.scale_(1.0 / self.ep)
            if self.max_grad_norm <= 0:
                return
            shared = _squares([_grad(p) for p in params if not is_expert(p)])
            own = _squares(experts)
            dist.all_reduce(own, group=self.group)  # every rank's experts, each counted once
            norm = float((shared + own).sqrt())
            if norm > self.max_grad_norm:
                for p in params:
                    _grad(p).scale_(self.max_grad_norm / norm)
