"""The gMASK/BOS ids ChatGLM v1 and GLM put in every sample (llmpt/models/registry.py added_token_ids)."""

from __future__ import annotations

import pytest

from llmpt.models.registry import ADDED_TOKENS, added_token_ids, padded_vocab


@pytest.mark.parametrize("family", ["chatglm", "glm"])
def test_from_scratch_ids_follow_the_tokenizer_vocabulary(family):
    ids = added_token_ids(family, 2000, {"vocab_size": 1024})  # the shipped tokenizer, the tiny model's table
    assert ids == {"gmask_token_id": 2000, "bos_token_id": 2001}
    assert padded_vocab(max(ids.values()) + 1) == 2048


def test_a_vocabulary_that_is_a_multiple_of_128_grows_by_a_block():
    ids = added_token_ids("chatglm", 2048, {"vocab_size": 2048})
    assert ids == {"gmask_token_id": 2048, "bos_token_id": 2049} and padded_vocab(2050) == 2176


def test_a_checkpoint_keeps_its_own_ids_inside_its_vocabulary():
    # THUDM/chatglm-6b-v1.1's config: [gMASK] 130001, <sop> 130004 of 130528
    cfg = {"vocab_size": 130528, "gmask_token_id": 130001, "bos_token_id": 130004}
    assert added_token_ids("chatglm", 130528, cfg) == {"gmask_token_id": 130001, "bos_token_id": 130004}
    # ChatGLMConfig's defaults in a 2048-token checkpoint point outside it: replaced
    tiny = {"vocab_size": 2048, "gmask_token_id": 130001, "bos_token_id": 130004}
    assert added_token_ids("chatglm", 2000, tiny) == {"gmask_token_id": 2000, "bos_token_id": 2001}


def test_other_families_add_nothing():
    assert set(ADDED_TOKENS) == {"chatglm", "glm"}
    assert added_token_ids("llama", 2000, {"vocab_size": 2048}) == {}
