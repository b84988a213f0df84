"""What each family's PaddleNLP modeling takes as a training batch, built from the causal dataset's token windows.

PaddleNLP's causal pretraining dataset hands every sample as a window of seq_len + 1 token ids. Most families read
it as next-token prediction on plain ids (`causal`). ChatGLM v1 and GLM are prefix LMs: their modeling wants the
sample in its generation layout, [gMASK] (the context: here empty) then BOS (<sop>) then the generated text, a 4-D
attention mask and 2-D position ids (position, block position). Pretraining on a window is "generate the whole
window": `glm_layout` builds that, as PaddleNLP's own helpers lay a generation sample out (ChatGLMTokenizer._pad;
GLMTokenizerMixin.build_inputs_for_generation; tests/integration/test_glm_families.py compares them):

    input_ids      [gMASK, BOS, w0,  w1, …, w(L-3)]           L = seq_len
    labels         [ BOS , w0,  w1,  w2, …, w(L-2)]           label i = the token after input i
    position_ids   [0, 0, …, 0]  and  [0, 1, 2, …, L-1]        every generated token sits at the gMASK position
                                                               (0); the block position counts the generated tokens
    attention      causal (the one-token context column is visible to every row, which causal already gives)

The gMASK's label is BOS, as PaddleNLP's own ChatGLM data path labels it (llm/utils/data.py convert_example_chatglm:
labels from the BOS position on, shifted): a constant, learnt at once, that keeps every position in the loss. It
matters: Paddle 3.3.1's F.cross_entropy(reduction="mean") divides by every position, ignored ones included
(measured: the sum over 62 valid tokens of 64 divided by 64), while ChatGLM's tensor-parallel loss averages over the
valid ones only, so an ignored position would make tp2 and one process disagree by L/(L-1). GLM's loss has a
loss_mask of its own and leaves the context out, as GLMTokenizerMixin.build_inputs_for_generation does.

So a ChatGLM/GLM sample trains on L-1 of the window's tokens (w0..w(L-2)) where the other families train on L. The
gMASK and BOS ids are the model config's (`gmask_token_id`, `bos_token_id`), chosen before launch
(llmpt/models/registry.py added_token_ids: from scratch, the first ids after the tokenizer's vocabulary).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class FamilyInputs:
    """How a family's model is built and what it is fed."""

    build: Callable[[np.ndarray, Any], Batch]  # (windows [batch, seq_len + 1], model config) -> model kwargs
    model_class: str = "AutoModelForCausalLM"  # the paddlenlp.transformers class that takes these kwargs
    # config values the family's forward needs whatever the run's arguments say (set after LlmMetaConfig's)
    config_overrides: tuple[tuple[str, Any], ...] = ()
    why_overrides: str = ""


def causal(windows: np.ndarray, config: Any) -> Batch:
    """run_pretrain.py's batch: the window shifted by one."""
    return {"input_ids": windows[:, :-1], "labels": windows[:, 1:]}


def glm_layout(windows: np.ndarray, gmask_id: int, bos_id: int) -> Batch:
    """The window as a ChatGLM/GLM generation sample (see the module docstring)."""
    batch, length = windows.shape[0], windows.shape[1] - 1
    input_ids = np.concatenate(
        [np.full((batch, 1), gmask_id), np.full((batch, 1), bos_id), windows[:, : length - 2]], axis=1
    ).astype(np.int64)
    labels = np.concatenate([np.full((batch, 1), bos_id), windows[:, : length - 1]], axis=1).astype(np.int64)
    mask_position = 0  # the gMASK's index: ChatGLM's and GLM's helpers set every generated token's position to it
    position = np.full((batch, length), mask_position, dtype=np.int64)
    block_position = np.broadcast_to(np.arange(length, dtype=np.int64), (batch, length))
    causal_mask = np.broadcast_to(np.tril(np.ones((length, length), dtype=np.int64)), (batch, 1, length, length))
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": np.stack([position, block_position], axis=1),  # [batch, 2, seq_len]
        "attention_mask": np.ascontiguousarray(causal_mask),  # [batch, 1, seq_len, seq_len], 1 = may attend
    }


def chatglm(windows: np.ndarray, config: Any) -> Batch:
    """ChatGLMForCausalLM: loss = cross_entropy(logits, labels) with no shift of its own (labels come aligned, as
    convert_example_chatglm aligns them); the mask is read as bool, true = may attend (ChatGLMModel.forward)."""
    return glm_layout(windows, config.gmask_token_id, config.bos_token_id)


def glm(windows: np.ndarray, config: Any) -> Batch:
    """GLMForConditionalGeneration: its loss is per token unless a loss_mask averages it (forward), so the context
    (the gMASK) gets label 0 and loss_mask 0, as build_inputs_for_generation gives them; the mask multiplies the
    scores (GLMAttention.forward), so it is float. A 4-D mask is passed on as it is: GLMStack.forward's
    `attention_mask.dim == 1` compares the method, never the rank."""
    batch = glm_layout(windows, config.gmask_token_id, config.bos_token_id)
    context = np.arange(batch["labels"].shape[1]) < 1  # the gMASK: the one-token context
    batch["labels"] = np.where(context, 0, batch["labels"])
    batch["loss_mask"] = np.broadcast_to(~context, batch["labels"].shape).astype(np.float32)
    batch["attention_mask"] = batch["attention_mask"].astype(np.float32)
    return batch


CAUSAL = FamilyInputs(causal)
# families whose modeling does not take the plain causal batch; every other family is CAUSAL
FAMILY_INPUTS: dict[str, FamilyInputs] = {
    "chatglm": FamilyInputs(chatglm),
    # PaddleNLP has no GLMForCausalLM (AutoModelForCausalLM refuses glm); its generation class takes the layout
    "glm": FamilyInputs(
        glm,
        model_class="GLMForConditionalGeneration",
        config_overrides=(("tensor_parallel_output", False),),
        why_overrides="GLMForConditionalGeneration.forward's tensor-parallel loss calls self.parallel_loss_fun, a "
        "typo of parallel_loss_func (AttributeError at the first step of tp2, measured); with the logits gathered "
        "over the tp ranks it takes its plain cross-entropy path",
    ),
}


def inputs_of(family: str) -> FamilyInputs:
    return FAMILY_INPUTS.get(family, CAUSAL)


def collate(family: str, config: Any) -> Callable[[list[dict]], dict]:
    """The Trainer's data_collator: the dataset's samples ({"text": window}) -> paddle tensors the model takes."""
    import paddle

    build = inputs_of(family).build

    def collate_fn(samples: list[dict]) -> dict:
        windows = np.asarray([s["text"] for s in samples], dtype=np.int64)
        return {k: paddle.to_tensor(v) for k, v in build(windows, config).items()}

    return collate_fn


def override_config(family: str, config: Any) -> None:
    """Set the family's config_overrides on the model config the rank builds."""
    for key, value in inputs_of(family).config_overrides:
        setattr(config, key, value)


def model_class(family: str):
    """The paddlenlp.transformers class a family's model is built with (without pipeline parallel)."""
    from paddlenlp import transformers

    return getattr(transformers, inputs_of(family).model_class)
