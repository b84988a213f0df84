"""Every registry model's PaddleNLP config dict is accepted by its real PaddleNLP config class with every key
a real parameter; the tiny variants build real PaddleNLP models whose forward pass gives a finite loss."""

from __future__ import annotations

import inspect

import pytest

from llmpt.models.registry import all_models, paddlenlp_config, resolve_model
from llmpt.train.model_config import config_class

transformers = pytest.importorskip("paddlenlp.transformers")

# PretrainedConfig's own; rope_scaling (Llama-3.1) is no LlamaConfig parameter: PretrainedConfig keeps it as an
# attribute, and LlamaAttention._init_rope reads it
COMMON = {"model_type", "architectures", "tie_word_embeddings", "rope_scaling"}


def _config(cfg: dict):
    cls = config_class(cfg["model_type"])
    params = set(inspect.signature(cls.__init__).parameters) | set(getattr(cls, "attribute_map", {}))
    unknown = set(cfg) - params - COMMON
    assert not unknown, f"{cls.__name__} has no parameter(s) {unknown}"
    return cls(**{k: v for k, v in cfg.items() if k != "model_type"})


@pytest.mark.paddle
@pytest.mark.parametrize("model_id", [m.id for m in all_models()])
def test_config_dict_builds_the_real_config(model_id):
    spec = resolve_model(model_id)
    cfg = paddlenlp_config(spec, seq_len=2048)
    config = _config(cfg)
    assert config.hidden_size == spec.hidden_size
    assert (getattr(config, "num_hidden_layers", None) or config.n_layer) == spec.num_hidden_layers
    assert config.num_attention_heads == spec.num_attention_heads
    assert config.vocab_size == cfg["vocab_size"]
    for key, value in cfg.items():
        if key not in ("model_type", "architectures"):
            assert getattr(config, key) == value, key


# chatglm (v1) and glm take their generation layout, not plain ids: tests/integration/test_glm_families.py
TRAINABLE_TINY = [
    "llama-tiny",
    "baichuan-tiny",
    "qwen-tiny",
    "gpt-tiny",
    "opt-tiny",
    "bloom-tiny",
    "chatglm2-tiny",
    "llama3-tiny",
    "qwen2-tiny",
    "mistral-tiny",
]


@pytest.mark.paddle
@pytest.mark.parametrize("model_id", TRAINABLE_TINY)
def test_tiny_model_forward_gives_finite_loss(model_id):
    import numpy as np
    import paddle

    paddle.seed(0)
    spec = resolve_model(model_id)
    config = _config(paddlenlp_config(spec, seq_len=64))
    config.seq_length = 64  # run_pretrain.py sets it on every family's config, whether a parameter or not
    model = transformers.AutoModelForCausalLM.from_config(config)
    ids = paddle.to_tensor(np.random.RandomState(0).randint(0, spec.vocab_size, (2, 65)), dtype="int64")
    out = model(input_ids=ids[:, :-1], labels=ids[:, 1:])
    loss = out[0] if isinstance(out, tuple) else out.loss
    value = float(loss)
    # an untrained model predicts near-uniformly over the (padded) vocabulary
    assert np.isfinite(value) and abs(value - np.log(config.vocab_size)) < 1.0, value


CAUSAL_CLASSES = {"glm": "GLMForConditionalGeneration"}  # the others: AutoModelForCausalLM
ROTARY_BUFFERS = {"llama", "qwen2", "mistral"}


@pytest.mark.paddle
@pytest.mark.parametrize("model_id", [m.id for m in all_models()])
def test_planner_parameter_count_is_paddlenlps(model_id):
    """The planner's parameter layout (llmpt/planner/shapes.py) against the real PaddleNLP class, built lazily
    (no weights allocated) for every registry model, 176B included."""
    import numpy as np
    import paddle
    from paddlenlp.transformers.model_utils import no_init_weights

    from llmpt.planner.shapes import param_groups

    spec = resolve_model(model_id)
    cfg = paddlenlp_config(spec, seq_len=2048)
    config = _config(cfg)
    config.seq_length = 2048
    if cfg["model_type"] in ROTARY_BUFFERS:
        # each layer computes a rotary cos/sin table of max_position_embeddings rows, a buffer, not a parameter:
        # Llama-3.1-405B's 126 x 131072-row tables alone would take ~16 GB
        config.max_position_embeddings = 2048
    cls = getattr(transformers, CAUSAL_CLASSES.get(cfg["model_type"], "AutoModelForCausalLM"))
    with no_init_weights(_enable=True), paddle.LazyGuard():
        model = cls.from_config(config) if cls is transformers.AutoModelForCausalLM else cls(config)
    real = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert param_groups(spec, 2048).total == real
