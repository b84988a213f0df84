"""PaddleNLP's argument dataclasses as the rank entry uses them (the shape of PaddleNLP's llm/run_pretrain.py)."""

from dataclasses import dataclass, field
from typing import Optional

from paddlenlp.trainer import TrainingArguments
from paddlenlp.transformers.configuration_utils import llmmetaclass


@dataclass
@llmmetaclass
class PretrainArguments(TrainingArguments):
    """TrainingArguments plus PaddleNLP's LLM meta fields (flash attention, fused kernels, recompute, degrees)
    and the pretraining schedule fields of run_pretrain.py."""

    min_learning_rate: float = field(default=1e-5, metadata={"help": "Learning rate floor of the decay."})
    # Optional[...] and no `from __future__ import annotations`: PdArgumentParser cannot read `int | None`
    decay_steps: Optional[int] = field(  # noqa: UP045
        default=None, metadata={"help": "Steps of the decay; default max_steps."}
    )


@dataclass
class ModelArguments:
    """Model-construction switches that PaddleNLP keeps out of TrainingArguments."""

    fuse_attention_qkv: bool = field(default=False, metadata={"help": "One QKV projection matmul."})
    fuse_attention_ffn: bool = field(default=False, metadata={"help": "One gate+up projection matmul."})
