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
        assert (f.uses is not None) == (f.mechanism in ("global", "proxy")), f"{f.name}: states how often it is used"
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


@pytest.mark.paddle
def test_installed_moe_fixes_answer_the_old_paddle_in_their_module_only():
    """mixtral's one-argument paddle.where gives [N, 1] columns and moe_gate's cumsum keeps int32, as the modeling
    was written for; paddle itself (and every other module) still answers as Paddle 3.3.1 does."""
    pytest.importorskip("paddlenlp")
    import paddle
    import paddlenlp.transformers.mixtral.modeling as mixtral
    import paddlenlp.transformers.moe_gate as moe_gate

    from llmpt.train import checkpoint_fixes

    checkpoint_fixes.install()
    mask = paddle.to_tensor([[True, False, True], [False, True, False]])
    rows, cols = mixtral.paddle.where(mask)
    assert rows.shape == [3, 1] and rows.flatten().tolist() == [0, 0, 1] and cols.flatten().tolist() == [0, 2, 1]
    assert [t.shape for t in paddle.where(mask)] == [[3], [3]]
    assert mixtral.paddle.where(mask, 1.0, 0.0).tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    ones = paddle.ones([3, 2], dtype="int32")
    assert moe_gate.paddle.cumsum(ones, axis=0).dtype == paddle.int32
    assert moe_gate.paddle.cumsum(ones, axis=0).tolist() == [[1, 1], [2, 2], [3, 3]]
    assert moe_gate.paddle.cumsum(ones, axis=0, dtype="int64").dtype == paddle.int64
    assert paddle.cumsum(ones, axis=0).dtype == paddle.int64
    assert moe_gate.paddle.ones is paddle.ones  # everything else is Paddle's own


@pytest.mark.paddle
def test_installed_fix_lets_the_mixtral_block_route_as_its_equations():
    """MixtralSparseMoeBlock after the fix equals the routing written out: softmax over the router, top-2,
    renormalised, each token the weighted sum of its two experts' SwiGLU outputs."""
    pytest.importorskip("paddlenlp")
    import numpy as np
    import paddle
    from paddlenlp.transformers import MixtralConfig
    from paddlenlp.transformers.mixtral.modeling import MixtralSparseMoeBlock

    from llmpt.train import checkpoint_fixes

    checkpoint_fixes.install()
    paddle.seed(3)
    config = MixtralConfig(hidden_size=16, intermediate_size=24, num_local_experts=4, num_experts_per_tok=2)
    block = MixtralSparseMoeBlock(config)
    x = paddle.randn([2, 5, 16])
    out, router_logits = block(x)
    h = x.numpy().reshape(-1, 16)
    logits = h @ block.gate.weight.numpy()
    np.testing.assert_allclose(router_logits.numpy(), logits, rtol=1e-5, atol=1e-6)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    want = np.zeros_like(h)
    for t in range(h.shape[0]):
        top = np.argsort(-probs[t])[:2]
        for e in top:
            w = {k: getattr(block.experts[e], k).weight.numpy() for k in ("w1", "w2", "w3")}
            a = h[t] @ w["w1"]
            want[t] += probs[t, e] / probs[t, top].sum() * (((a / (1 + np.exp(-a))) * (h[t] @ w["w3"])) @ w["w2"])
    np.testing.assert_allclose(out.numpy().reshape(-1, 16), want, rtol=1e-4, atol=1e-6)


@pytest.mark.paddle
def test_installed_fixes_give_the_moe_router_the_gradient_of_its_routing():
    """Qwen2-MoE's MoELayer block (PaddleNLP's GShard dispatch, shared by deepseek_v2) after the fixes: its output
    and the router's, the experts' and the input's gradients equal the routing written out (softmax, top-2, the
    scores as weights, plus the sigmoid-gated shared expert), at 1, 2 and 4 copies of the batch (a mean loss: the
    router's gradient must not grow with the batch, as it did through Paddle 3.3.1's differentiable bool cast)."""
    pytest.importorskip("paddlenlp")
    import numpy as np
    import paddle
    import paddle.nn.functional as F
    from paddlenlp.transformers import Qwen2MoeConfig
    from paddlenlp.transformers.qwen2_moe.modeling import Qwen2MoeSparseMoEBlock

    from llmpt.train import checkpoint_fixes

    checkpoint_fixes.install()
    paddle.seed(3)
    config = Qwen2MoeConfig(
        hidden_size=16, intermediate_size=24, moe_intermediate_size=8, shared_expert_intermediate_size=24,
        num_experts=4, num_experts_per_tok=2,
    )  # fmt: skip
    block = Qwen2MoeSparseMoEBlock(config)
    block.gate.weight.set_value(paddle.randn(block.gate.weight.shape) * 0.5)
    x0, r0 = paddle.randn([1, 6, 16]), paddle.randn([1, 6, 16])

    def written_out(x):
        h = x.reshape([-1, 16])
        p = F.softmax(h @ block.gate.weight, -1)
        chosen = F.one_hot(paddle.topk(p, 2, -1)[1], 4).sum(1)
        experts = paddle.stack([block.experts[e](h) for e in range(4)], 1)
        y = ((p * chosen).unsqueeze(-1) * experts).sum(1)
        return (y + F.sigmoid(block.shared_expert_gate(h)) * block.shared_expert(h)).reshape(x.shape)

    def grads(forward, copies):
        x = paddle.concat([x0] * copies, 0)
        x.stop_gradient = False
        out = forward(x)
        (out * paddle.concat([r0] * copies, 0)).mean().backward()
        got = [out.numpy(), x.grad.numpy()] + [
            p.grad.numpy() for p in (block.gate.weight, block.experts[0].up_proj.weight)
        ]
        block.clear_gradients()
        return got

    for copies in (1, 2, 4):
        want = grads(written_out, copies)
        got = grads(lambda x: block(x)[0], copies)
        for name, a, b in zip(("output", "input grad", "router grad", "expert grad"), got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"{name} at {copies} copies")
    assert float(np.abs(want[2]).max()) > 1e-3  # the router learns something here


@pytest.mark.paddle
def test_installed_fixes_initialise_the_moe_routers_apart():
    """From scratch, qwen2_moe's router is N(0, initializer_range) and deepseek_v2's kaiming-uniform over fan_in =
    hidden (bound 1/sqrt(hidden)), not PaddleNLP's constant 1.0 that makes every expert's score a tie."""
    pytest.importorskip("paddlenlp")
    import numpy as np
    import paddle
    from paddlenlp.transformers import AutoModelForCausalLM

    from llmpt.models.registry import paddlenlp_config, resolve_model
    from llmpt.train import checkpoint_fixes
    from llmpt.train.model_config import config_class

    checkpoint_fixes.install()
    for model, low, high in (("qwen2-moe-tiny", 0.015, 0.025), ("deepseek-v2-tiny", 0.05, 1 / 8)):
        d = paddlenlp_config(resolve_model(model), 64)
        paddle.seed(1)
        built = AutoModelForCausalLM.from_config(
            config_class(d["model_type"])(**{k: v for k, v in d.items() if k != "model_type"})
        )
        routers = [v.numpy() for k, v in built.state_dict().items() if k.endswith("mlp.gate.weight")]
        assert routers, model
        for w in routers:
            spread = float(w.std()) if model == "qwen2-moe-tiny" else float(np.abs(w).max())
            assert low < spread <= high, (model, spread)
