"""Every entry of llmpt/train/checkpoint_fixes.py's table still fits the installed PaddleNLP (an upgrade that moves a
target fails here, by the fix's name), and what each replacement does; the Trainer methods llmpt's checkpoint timing
wraps (llmpt/train/checkpoint_timing.py) still exist with the parameters it passes on."""

from __future__ import annotations

import inspect
import json

import pytest

from llmpt.train.checkpoint_fixes import FIXES, Fix, _load_every_shard, _with_tied_head, shards_of


@pytest.mark.paddle
@pytest.mark.parametrize("fix", FIXES, ids=lambda f: f.name)
def test_target_exists_with_the_expected_signature(fix: Fix):
    pytest.importorskip("paddlenlp")
    from llmpt.train.checkpoint_fixes import check_fix

    assert check_fix(fix) == [], f"checkpoint fix {fix.name} no longer fits: {check_fix(fix)}"


def test_table_is_well_formed():
    names = [f.name for f in FIXES]
    assert len(names) == len(set(names))
    for f in FIXES:
        assert f.why.strip(), f.name
        assert (f.uses is not None) == (f.mechanism == "global"), f"{f.name}: a global fix states how often it is used"
        assert list(inspect.signature(f.replacement).parameters)[0] == "original", f.name


def _sharded(tmp_path, index_name: str, files: list[str]):
    for f in files:
        (tmp_path / f).write_bytes(b"")
    weight_map = {f"w{i}": f for i, f in enumerate(files)}
    (tmp_path / index_name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_shards_of_follows_the_index_that_lists_the_file(tmp_path):
    _sharded(
        tmp_path,
        "model.safetensors.index.json",
        ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
    )
    _sharded(tmp_path, "optimizer.safetensors.index.json", ["optimizer-00001-of-00001.safetensors"])
    (tmp_path / "broken.index.json").write_text("{not json")
    first = str(tmp_path / "model-00001-of-00002.safetensors")
    assert shards_of(first) == [first, str(tmp_path / "model-00002-of-00002.safetensors")]
    opt = str(tmp_path / "optimizer-00001-of-00001.safetensors")
    assert shards_of(opt) == [opt]
    lone = str(tmp_path / "model_state.pdparams")
    assert shards_of(lone) == [lone]


def test_load_every_shard_merges_what_each_file_holds(tmp_path):
    _sharded(
        tmp_path,
        "model.safetensors.index.json",
        ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
    )
    calls = []

    def original(path, mapping=None, keys=None, device="cpu", ckpt_quant_stage="O0"):
        calls.append((path.rsplit("/", 1)[1], keys, device))
        return {path.rsplit("-of-", 1)[0][-1]: 1}

    got = _load_every_shard(
        original, str(tmp_path / "model-00001-of-00002.safetensors"), None, {"a"}, device="expected"
    )
    assert got == {"1": 1, "2": 1}
    assert calls == [("model-00001-of-00002.safetensors", {"a"}, "expected"),
                     ("model-00002-of-00002.safetensors", {"a"}, "expected")]  # fmt: skip


def test_the_tied_head_takes_the_word_embeddings_rule():
    def original(cls, config, is_split=True):
        return {"word_embeddings.weight": ("row", is_split), "h.0.mlp.weight": ("column", is_split)}

    mappings = _with_tied_head("lm_head.decoder_weight")
    got = mappings(original, object, None, is_split=False)
    assert got["lm_head.decoder_weight"] == got["word_embeddings.weight"] == ("row", False)
    assert mappings(lambda cls, config, is_split=True: {}, object, None) == {}  # nothing to copy: nothing added


@pytest.mark.paddle
def test_installed_fixes_split_the_tied_heads():
    pytest.importorskip("paddlenlp")
    from paddlenlp.transformers import (
        BloomConfig,
        BloomForCausalLM,
        ChatGLMConfig,
        ChatGLMForCausalLM,
        GPTConfig,
        GPTForCausalLM,
    )

    from llmpt.train import checkpoint_fixes

    checkpoint_fixes.install()
    assert [checkpoint_fixes.check_fix(f) for f in FIXES] == [[]] * len(FIXES)
    for config, cls, head, embed in (
        (BloomConfig(n_layer=2, hidden_size=64, n_head=4, vocab_size=256), BloomForCausalLM,
         "lm_head.decoder_weight", "bloom.word_embeddings.weight"),
        (GPTConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=256), GPTForCausalLM,
         "lm_head.weight", "gpt.embeddings.word_embeddings.weight"),
        (ChatGLMConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=256),
         ChatGLMForCausalLM, "lm_head.decoder_weight", "chatglm.transformer.word_embeddings.weight"),
    ):  # fmt: skip
        config.tensor_parallel_degree, config.tensor_parallel_rank = 2, 1
        actions = cls.get_tensor_parallel_convert_actions(config, [head, embed], is_split=True, ignore_error=True)
        assert actions[head] is actions[embed], cls.__name__


@pytest.mark.paddle
def test_installed_fix_lets_glm_qkv_merge_into_a_tensor_and_split_a_lazy_slice():
    pytest.importorskip("paddlenlp")
    import numpy as np
    import paddle
    from paddlenlp.transformers import GLMConfig, GLMForConditionalGeneration

    from llmpt.train import checkpoint_fixes

    checkpoint_fixes.install()
    config = GLMConfig(num_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=256)
    config.tensor_parallel_degree, config.tensor_parallel_rank = 2, 0
    key = "glm.transformer.layers.0.attention.query_key_value.weight"
    merge = GLMForConditionalGeneration.get_tensor_parallel_convert_actions(
        config, [key], is_split=False, ignore_error=True
    )[key]
    shards = [paddle.arange(64 * 96, dtype="float32").reshape([64, 96]) + 10000 * r for r in range(2)]
    merged = merge(shards)
    assert isinstance(merged, paddle.Tensor) and merged.shape == [64, 192] and merged.dtype == paddle.float32
    np.testing.assert_array_equal(merged.numpy(), merge([t.numpy() for t in shards]))  # values: PaddleNLP's merge

    class LazySlice:  # what a safetensors checkpoint hands the split rules: read whole by [:]
        def __init__(self, array):
            self.array = array

        def __getitem__(self, index):
            return self.array[index]

    split = GLMForConditionalGeneration.get_tensor_parallel_convert_actions(
        config, [key], is_split=True, ignore_error=True
    )[key]
    whole = np.arange(64 * 192, dtype="float32").reshape([64, 192])
    np.testing.assert_array_equal(split(LazySlice(whole)), split(whole))


@pytest.mark.paddle
@pytest.mark.parametrize(
    "method,params",
    [
        ("_save_checkpoint", ("self", "model", "metrics")),
        ("_load_from_checkpoint", ("self", "resume_from_checkpoint")),
        ("_load_optimizer_and_scheduler", ("self", "checkpoint")),
    ],
)
def test_the_trainer_methods_timed_around(method, params):
    pytest.importorskip("paddlenlp")
    from paddlenlp.trainer import Trainer

    from llmpt.train.checkpoint_timing import TimedCheckpoints

    assert tuple(inspect.signature(getattr(Trainer, method)).parameters) == params, method
    assert tuple(inspect.signature(getattr(TimedCheckpoints, method)).parameters) == params, method
