"""The PaddleNLP config object a rank builds its model from: registry dict, or a local checkpoint's config."""

from __future__ import annotations

from paddlenlp import transformers

from llmpt.run_config import RunConfig

CONFIG_CLASSES = {
    "llama": "LlamaConfig",
    "qwen": "QWenConfig",
    "gpt": "GPTConfig",
    "opt": "OPTConfig",
    "bloom": "BloomConfig",
    "chatglm": "ChatGLMConfig",
    "chatglm_v2": "ChatGLMv2Config",
    "glm": "GLMConfig",
    "qwen2": "Qwen2Config",
    "mistral": "MistralConfig",
    "mixtral": "MixtralConfig",
    "qwen2_moe": "Qwen2MoeConfig",
    "deepseek_v2": "DeepseekV2Config",
}


def config_class(model_type: str):
    return getattr(transformers, CONFIG_CLASSES[model_type])


def build_config(cfg: RunConfig):
    """The config run.yaml's model.config states (for --init-from: the checkpoint's config.json as resolved)."""
    d = dict(cfg.model.config)
    return config_class(d["model_type"]).from_dict(d)
