"""The position rule of continued pretraining (llmpt/resolve/request.py LEARNED_POSITIONS / COMPUTED_POSITIONS),
checked against PaddleNLP's modeling: tiny CPU models built with 16 positions, configured as the rank does
(config.seq_length = the sequence length) and fed 32 tokens. A learned table cannot take them (llmpt refuses); llama's
computed rotary table gives wrong positions past its end until its config is raised (same weights, the first 16
positions unchanged; llmpt raises it for ALiBi llamas and under model.rope_scaling, and refuses a rope llama's
longer sequence without one: tests/unit/test_long_context.py); chatglm2, qwen and bloom need nothing."""

from __future__ import annotations

import pytest

pytest.importorskip("paddlenlp")
pytestmark = pytest.mark.paddle

POSITIONS, TOKENS = 16, 32


def build(family: str, positions: int):
    """The tiny model of `family` with `positions` positions, its config set for TOKENS-token sequences as the rank
    sets it (llmpt/train/entry.py: config.seq_length)."""
    import paddle
    from paddlenlp.transformers import AutoModelForCausalLM

    from llmpt.models.registry import paddlenlp_config, resolve_model
    from llmpt.train.model_config import config_class

    d = paddlenlp_config(resolve_model(f"{family}-tiny"), POSITIONS, from_scratch=False)
    for key in ("max_position_embeddings", "max_sequence_length"):
        if key in d:
            d[key] = positions
    config = config_class(d["model_type"]).from_dict(d)
    config.seq_length = TOKENS
    paddle.seed(0)
    return d, AutoModelForCausalLM.from_config(config)


def logits(model, ids):
    import paddle

    model.eval()
    with paddle.no_grad():
        out = model(input_ids=ids)
    return out[0] if isinstance(out, (tuple, list)) else out.logits


def tokens():
    import paddle

    paddle.seed(1)
    return paddle.randint(1, 100, [1, TOKENS], dtype="int64")


@pytest.mark.parametrize("family", ["gpt", "opt"])
def test_a_learned_position_table_cannot_take_a_longer_sequence(family):
    from llmpt.resolve.request import COMPUTED_POSITIONS, LEARNED_POSITIONS

    assert family in LEARNED_POSITIONS and family not in COMPUTED_POSITIONS
    _, model = build(family, POSITIONS)
    with pytest.raises(Exception):  # noqa: B017 - an out-of-range lookup in the position embedding
        logits(model, tokens())


def test_llamas_rotary_table_is_raised_without_touching_a_weight():
    from llmpt.resolve.request import extend_positions

    config, short = build("llama", POSITIONS)
    assert extend_positions("llama", config, TOKENS) and config["max_position_embeddings"] == TOKENS
    _, long = build("llama", TOKENS)
    assert {k: v.shape for k, v in short.state_dict().items()} == {k: v.shape for k, v in long.state_dict().items()}
    long.set_state_dict(short.state_dict())  # the checkpoint, loaded into the extended model
    ids = tokens()
    a, b = logits(short, ids), logits(long, ids)
    assert float((a[:, :POSITIONS] - b[:, :POSITIONS]).abs().max()) == 0.0  # inside the table: the same model
    assert float((a[:, POSITIONS:] - b[:, POSITIONS:]).abs().max()) > 1e-3  # past it: the short table was wrong


@pytest.mark.parametrize("family", ["chatglm2", "qwen", "bloom"])
def test_no_bound_where_the_table_follows_the_sequence(family):
    from llmpt.resolve.request import COMPUTED_POSITIONS, LEARNED_POSITIONS, extend_positions

    assert family not in LEARNED_POSITIONS and family not in COMPUTED_POSITIONS
    config, short = build(family, POSITIONS)
    assert extend_positions(family, config, TOKENS) is None
    _, long = build(family, TOKENS)
    long.set_state_dict(short.state_dict())
    ids = tokens()
    assert float((logits(short, ids) - logits(long, ids)).abs().max()) == 0.0
