"""The mixture-of-experts registry models (Mixtral, Qwen2-MoE, DeepSeek-V2): each one's PaddleNLP class, built
lazily from its config dict, has exactly the parameters its published checkpoint holds, and llmpt's own count
(llmpt/models/moe.py) says the same."""

from __future__ import annotations

import pytest

from llmpt.models.moe import moe_counts
from llmpt.models.registry import all_models, paddlenlp_config, resolve_model

transformers = pytest.importorskip("paddlenlp.transformers")

# Published totals (elements), each from the checkpoint itself: model.safetensors.index.json total_size / 2 bytes
# (bf16) or the Hugging Face API's safetensors total; where each was read is in the entry's `source`
PUBLISHED = {
    "mistralai/Mixtral-8x7B-v0.1": 46_702_792_704,  # total_size 93,405,585,408
    "mistralai/Mixtral-8x22B-v0.1": 140_620_634_112,  # safetensors payload 281,241,268,224 bytes
    "Qwen/Qwen1.5-MoE-A2.7B": 14_315_784_192,  # total_size 28,631,568,384
    "Qwen/Qwen2-57B-A14B": 57_408_658_944,  # HF API safetensors.total
    "deepseek-ai/DeepSeek-V2-Lite": 15_706_484_224,  # total_size 31,412,968,448
    "deepseek-ai/DeepSeek-V2": 235_741_434_880,  # HF model table total_params
}
# Active per token: the published names' "A2.7B", "A14B" and Mistral's 12.9B / 39B, DeepSeek's 21B (V2), to the
# rounding they are given in; llmpt counts embedding and head as active
ACTIVE_ROUNDED = {
    "mistralai/Mixtral-8x7B-v0.1": (12.9e9, 0.05e9),
    "mistralai/Mixtral-8x22B-v0.1": (39e9, 0.5e9),
    "Qwen/Qwen1.5-MoE-A2.7B": (2.7e9, 0.05e9),
    "Qwen/Qwen2-57B-A14B": (14e9, 0.5e9),
    "deepseek-ai/DeepSeek-V2": (21e9, 0.5e9),
}
# (config class, causal-LM class) of each MoE family in PaddleNLP 3.0.0b4
CLASSES = {
    "mixtral": ("MixtralConfig", "MixtralForCausalLM"),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM"),
    "deepseek_v2": ("DeepseekV2Config", "DeepseekV2ForCausalLM"),
}


def test_every_moe_registry_model_has_a_published_total():
    assert {m.id for m in all_models() if m.is_moe and not m.id.endswith("-tiny")} == set(PUBLISHED)


@pytest.mark.parametrize("model_id", sorted(PUBLISHED))
def test_llmpt_counts_the_published_total_and_active(model_id):
    counts = moe_counts(resolve_model(model_id), from_scratch=False)
    assert counts.total == PUBLISHED[model_id]
    if model_id in ACTIVE_ROUNDED:
        value, tolerance = ACTIVE_ROUNDED[model_id]
        assert abs(counts.active - value) <= tolerance, counts.active


@pytest.mark.slow  # ~20 s for the six, DeepSeek-V2's 160 x 60 expert layers the most
@pytest.mark.paddle
@pytest.mark.parametrize("model_id", sorted(PUBLISHED))
def test_paddlenlp_class_holds_the_published_total(model_id):
    import numpy as np
    import paddle
    from paddlenlp.transformers.model_utils import no_init_weights

    spec = resolve_model(model_id)
    cfg = paddlenlp_config(spec, seq_len=2048, from_scratch=False)
    config_cls, model_cls = (getattr(transformers, c) for c in CLASSES[spec.family])
    config = config_cls(**{k: v for k, v in cfg.items() if k != "model_type"})
    for key, value in cfg.items():  # every key is one the config class keeps, with the value given
        if key != "model_type":
            assert getattr(config, key) == value, key
    # each layer's rotary cos/sin table is a buffer of max_position_embeddings rows, not a parameter: 163840 rows
    # x 60 layers would take gigabytes
    config.max_position_embeddings = 2048
    with no_init_weights(_enable=True), paddle.LazyGuard():
        model = model_cls(config)
    real = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert real == PUBLISHED[model_id] == moe_counts(spec, from_scratch=False).total
