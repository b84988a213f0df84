"""llmpt/train/experts.py's arithmetic on one process, the ep group stood in for (its effect on real ranks:
tests/integration/test_new_families.py, dp2ep2 = tp2 = one process)."""

from __future__ import annotations

import types

import pytest

pytest.importorskip("paddlenlp")
pytestmark = pytest.mark.paddle


def _hcg(ep: int, tp: int = 1):
    group = types.SimpleNamespace(nranks=ep)
    return types.SimpleNamespace(
        get_data_parallel_group=lambda: group,
        get_model_parallel_world_size=lambda: tp,
        get_pipe_parallel_world_size=lambda: 1,
        get_sharding_parallel_world_size=lambda: 1,
    )


class _Model:
    def __init__(self, params):
        self._params = params

    def parameters(self):
        return self._params


def _param(values, expert: bool):
    import paddle

    p = paddle.create_parameter([len(values)], "float32")
    p.grad_value = paddle.to_tensor(values, dtype="float32")
    p._set_grad_ivar(p.grad_value)
    p.no_sync = expert  # what MoELayer marks on the experts it splits
    return p


def test_expert_gradients_are_divided_by_ep_and_clipped_by_the_global_norm(monkeypatch):
    import numpy as np
    import paddle.distributed as dist

    from llmpt.train import experts

    monkeypatch.setattr(dist.fleet, "get_hybrid_communicate_group", lambda: _hcg(ep=2))
    other_rank_squares = 9.0  # the other rank's experts, after its own 1/ep: their squares sum to 9

    def all_reduce(t, group=None):
        t.set_value(t + other_rank_squares)

    monkeypatch.setattr(experts.dist, "all_reduce", all_reduce)
    shared, expert = _param([3.0, 0.0], False), _param([8.0, 0.0], True)
    cb = experts.ExpertGradients(max_grad_norm=2.5)
    cb.on_optimizer_begin(None, None, None, model=_Model([shared, expert]))
    # expert 8 -> 4 (1/ep); global norm sqrt(3^2 + 4^2 + 9) = sqrt(34); every gradient times 2.5/sqrt(34)
    k = 2.5 / np.sqrt(34.0)
    np.testing.assert_allclose(shared.grad.numpy(), [3.0 * k, 0.0], rtol=1e-6)
    np.testing.assert_allclose(expert.grad.numpy(), [4.0 * k, 0.0], rtol=1e-6)

    unclipped = _param([8.0, 0.0], True)
    experts.ExpertGradients(max_grad_norm=0).on_optimizer_begin(None, None, None, model=_Model([unclipped]))
    np.testing.assert_allclose(unclipped.grad.numpy(), [4.0, 0.0])


def test_ep_with_tensor_parallel_and_clipping_is_refused_at_start(monkeypatch):
    import paddle.distributed as dist

    from llmpt.train import experts

    monkeypatch.setattr(dist.fleet, "get_hybrid_communicate_group", lambda: _hcg(ep=2, tp=2))
    with pytest.raises(
        experts.ExpertParallelError, match=r"ep2 with tp2 and gradient clipping .*train.max_grad_norm=0"
    ):
        experts.ExpertGradients(max_grad_norm=1.0)
    assert experts.ExpertGradients(max_grad_norm=0).ep == 2  # without clipping nothing needs the other groups
