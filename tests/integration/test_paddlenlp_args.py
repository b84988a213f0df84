"""Every shipped preset's expansion is accepted unchanged by PaddleNLP's own argument dataclasses, and the
fleet hybrid config PaddleNLP builds from those arguments equals llmpt's `hybrid_configs`.

PaddleNLP's TrainingArguments calls fleet.init only when the world size is > 1; here one process stands in
for rank 0 of the preset's world size (PADDLE_TRAINERS_NUM) and fleet.init is replaced by a recorder, so the
DistributedStrategy PaddleNLP would hand to fleet is compared field by field. GPU-only switches
(use_flash_attention, fused kernels, bf16 O2) are plain flags to the dataclass: their acceptance is checked
here, and their exact values are pinned by tests/unit/test_expand_golden.py.
"""

from __future__ import annotations

import pytest

from llmpt.strategies.expand import expand
from llmpt.strategies.presets import list_presets, resolve_strategy

paddlenlp_training_args = pytest.importorskip("paddlenlp.trainer.training_args")

DEGREE_FIELDS = (
    "tensor_parallel_degree",
    "pipeline_parallel_degree",
    "sharding_parallel_degree",
    "sep_parallel_degree",
    "context_parallel_degree",
)


def _cases():
    for name in list_presets():
        s = resolve_strategy(name)
        base = s.parallel.dims.min_ranks
        yield pytest.param(name, base, id=f"{name}@{base}")
        if s.parallel.dp is None and base <= 32:
            yield pytest.param(name, 2 * base, id=f"{name}@{2 * base}")
    # expert parallel in a hybrid layout: PaddleNLP's use_expert_parallel reorders the topology (no preset has it)
    yield pytest.param("dp2tp2ep2", 4, id="dp2tp2ep2@4")


@pytest.fixture
def fake_world(monkeypatch, tmp_path):
    captured = {}

    def record_init(is_collective=False, strategy=None, **kwargs):
        captured["strategy"] = strategy

    monkeypatch.setattr(paddlenlp_training_args.fleet, "init", record_init)

    def set_world(n: int):
        import paddle.distributed

        # paddle caches the world size of the first ParallelEnv it builds; PaddleNLP asks this function
        monkeypatch.setattr(paddle.distributed, "get_world_size", lambda *a, **k: n)
        # pure data parallel: PaddleNLP starts a plain parallel env instead of fleet
        monkeypatch.setattr(paddle.distributed, "init_parallel_env", lambda: captured.setdefault("plain_dp", True))
        monkeypatch.setenv("PADDLE_TRAINERS_NUM", str(n))
        monkeypatch.setenv("PADDLE_TRAINER_ID", "0")
        monkeypatch.setenv("PADDLE_RANK_IN_NODE", "0")
        return captured

    return set_world


@pytest.mark.paddle
@pytest.mark.parametrize("name,world", list(_cases()))
def test_preset_accepted_by_paddlenlp(name, world, fake_world, tmp_path):
    from paddlenlp.trainer import PdArgumentParser

    from llmpt.train.args import ModelArguments, PretrainArguments

    e = expand(resolve_strategy(name), world)
    captured = fake_world(world)
    parser = PdArgumentParser((PretrainArguments, ModelArguments))
    targs, margs = parser.parse_dict({**e.training_args, **e.model_args, "output_dir": str(tmp_path)})

    # accepted unchanged
    for key, ours in e.training_args.items():
        theirs = getattr(targs, key)
        if key == "sharding":
            theirs = " ".join(o.value for o in theirs)
        if key in DEGREE_FIELDS and theirs == -1:  # PaddleNLP's spelling of "not used" in pure data parallel
            theirs = 1
        assert theirs == ours, f"{key}: llmpt {ours!r} != PaddleNLP {theirs!r}"
    for key, ours in e.model_args.items():
        assert getattr(margs, key) == ours
    assert targs.dataset_world_size == e.degrees.dp * e.degrees.sharding

    strategy = captured.get("strategy")
    if not e.uses_hybrid_parallel:
        assert strategy is None, "PaddleNLP initialised fleet for a pure data-parallel run"
        assert captured.get("plain_dp", False) == (world > 1)
        return
    assert strategy is not None
    hc = strategy.hybrid_configs
    for key, ours in e.hybrid_configs.items():
        if key == "order":
            assert list(strategy.hybrid_parallel_order) == ours
        elif isinstance(ours, dict):
            sub = hc[key]
            for field, value in ours.items():
                assert getattr(sub, field) == value, f"{key}.{field}: llmpt {value!r} != fleet {getattr(sub, field)!r}"
        else:
            assert hc[key] == ours, f"{key}: llmpt {ours!r} != fleet {hc[key]!r}"
    for key, ours in e.pipeline_configs.items():
        assert strategy.pipeline_configs[key] == ours, f"pipeline_configs.{key}"
