"""The conversion table, proven numerically: for every exported family (and the fused variants GPU presets train
with), PaddleNLP's logits equal a numpy implementation of the Hugging Face model's equations (reference_forward.py)
run on llmpt's export, within 1e-4 relative in fp32 (max |difference| / max |logit|; measured: 3e-7 to 7e-7); the
export converted back by --init-from's conversion loads into PaddleNLP with the same logits and the same tensors, bit
for bit; and llmpt's merge of tensor-parallel slices inverts PaddleNLP's own split for every family.

Tiny models (2 layers, hidden 64) with every parameter drawn at random, norms and biases included, so that a
tensor mapped to the wrong place, left out, or transposed wrongly moves the logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmpt.interop import checkpoint, convert, families, safetensors
from llmpt.interop.export import export
from llmpt.models.registry import paddlenlp_config, resolve_model
from tests.integration import reference_forward

pytest.importorskip("paddlenlp")
pytestmark = pytest.mark.paddle

TOLERANCE = 1e-4
SEQ = 16
# (registry model, config changes): every family, and the fused layouts PaddleNLP trains with on GPUs
CASES = {
    "llama": ("llama-tiny", {}),
    "llama GQA fused qkv+ffn": ("llama-tiny", {"num_key_value_heads": 2, "fuse_attention_qkv": True,
                                               "fuse_attention_ffn": True}),
    # Llama-3.1's shape rules: GQA, rope_theta 500000 and the llama3 rope scaling (PaddleNLP's Llama3RotaryEmbedding)
    "llama3.1": ("llama3-tiny", {}),
    "qwen2": ("qwen2-tiny", {}),
    "qwen2 tied": ("qwen2-tiny", {"tie_word_embeddings": True}),
    "qwen2 fused qkv+ffn": ("qwen2-tiny", {"fuse_attention_qkv": True, "fuse_attention_ffn": True}),
    "mistral": ("mistral-tiny", {}),
    "gpt": ("gpt-tiny", {}),
    "gpt fused qkv": ("gpt-tiny", {"fuse_attention_qkv": True}),
    "opt": ("opt-tiny", {}),
    "bloom": ("bloom-tiny", {}),
    "qwen": ("qwen-tiny", {}),
    "qwen fused ffn": ("qwen-tiny", {"fuse_attention_ffn": True}),
    "chatglm2": ("chatglm2-tiny", {}),
}  # fmt: skip


def _config(model: str, changes: dict):
    from llmpt.train.model_config import config_class

    d = paddlenlp_config(resolve_model(model), SEQ * 2)
    model_type = d.pop("model_type")
    d.update(changes)
    d["n_layer" if "n_layer" in d else "num_hidden_layers"] = 2
    config = config_class(model_type)(**d)
    config.seq_length = SEQ * 2
    return config


def _logits(model, ids: np.ndarray) -> np.ndarray:
    import paddle

    with paddle.no_grad():
        out = model(input_ids=paddle.to_tensor(ids))
    out = out.logits if hasattr(out, "logits") else out[0] if isinstance(out, (tuple, list)) else out
    return np.asarray(out.numpy(), dtype=np.float64)


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each case: a random tiny PaddleNLP model saved with save_pretrained(), its logits on fixed ids, its export."""
    import paddle
    from paddlenlp.transformers import AutoModelForCausalLM

    paddle.set_device("cpu")
    root = tmp_path_factory.mktemp("reference")
    ids = np.random.default_rng(1).integers(0, 1000, size=(2, SEQ))
    out = {}
    for case, (model, changes) in CASES.items():
        paddle.seed(7)
        m = AutoModelForCausalLM.from_config(_config(model, changes), dtype="float32")
        m.eval()
        rng = np.random.default_rng(0)
        for name, p in m.named_parameters():
            scale, center = (
                (0.3, 1.0 if "norm" in name and name.endswith("weight") else 0.0) if p.ndim == 1 else (0.08, 0.0)
            )
            p.set_value(paddle.to_tensor((rng.standard_normal(p.shape) * scale + center).astype("float32")))
        tag = case.replace(" ", "_").replace("+", "_")
        m.save_pretrained(str(root / f"{tag}-paddle"))
        export(str(root / f"{tag}-paddle"), str(root / f"{tag}-hf"), "hf")
        out[case] = (root / f"{tag}-paddle", root / f"{tag}-hf", _logits(m, ids))
    return ids, out


def _hf(directory: Path):
    config = json.loads((directory / "config.json").read_text())
    tensors = {n: safetensors.load(i) for n, i in safetensors.read_headers(directory).items()}
    return config, tensors


@pytest.mark.parametrize("case", CASES)
def test_paddlenlp_logits_equal_the_hugging_face_equations_on_the_export(built, case):
    ids, runs = built
    _, hf_dir, paddle_logits = runs[case]
    config, tensors = _hf(hf_dir)
    reference = reference_forward.logits(config, tensors, ids)
    error = _relative(paddle_logits, reference)
    print(f"{case}: max relative logits error {error:.1e}")
    assert error <= TOLERANCE, f"{case}: {error:.2e}"


@pytest.mark.parametrize("case", [c for c in CASES if " " not in c])
def test_the_export_converted_back_loads_into_paddlenlp_unchanged(built, case, tmp_path):
    from paddlenlp.transformers import AutoModelForCausalLM

    from llmpt.train.model_config import config_class

    ids, runs = built
    paddle_dir, hf_dir, paddle_logits = runs[case]
    family = resolve_model(CASES[case][0]).family
    config, tensors = _hf(hf_dir)
    pcfg = families.conversion(family).from_hf(config)
    convert.convert_hf_dir(hf_dir, family, pcfg, tmp_path)
    back = {n: safetensors.load(i) for n, i in safetensors.read_headers(tmp_path).items()}
    original = checkpoint.read_pdparams(paddle_dir / "model_state.pdparams")
    assert set(back) <= set(original) and all(np.array_equal(back[n], original[n]) for n in back)
    assert set(original) - set(back) <= {"lm_head.weight"}  # gpt's head: the embedding itself
    pconfig = config_class(pcfg["model_type"]).from_dict(pcfg)
    pconfig.seq_length = SEQ * 2
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), config=pconfig, dtype="float32")
    model.eval()
    assert np.array_equal(_logits(model, ids), paddle_logits)
    assert _relative(paddle_logits, reference_forward.logits(config, tensors, ids)) <= TOLERANCE


def _split(action, arr: np.ndarray) -> np.ndarray:
    """PaddleNLP's split functions take numpy arrays, except chatglm2's q|k|v split, which concatenates with paddle."""
    import paddle

    try:
        return np.asarray(action(arr.copy()))
    except (ValueError, TypeError):
        return action(paddle.to_tensor(arr)).numpy()


@pytest.mark.parametrize(
    "model",
    ["llama-tiny", "qwen-tiny", "gpt-tiny", "opt-tiny", "bloom-tiny", "chatglm2-tiny", "qwen2-tiny", "mistral-tiny"],
)
@pytest.mark.parametrize("tp", [2, 4])
def test_merging_inverts_paddlenlps_tensor_parallel_split(model, tp):
    """PaddleNLP's `_get_tensor_parallel_mappings(is_split=True)` cuts each rank's slice of a whole state (what
    from_pretrained does for tp); llmpt's merge_tp puts the slices back."""
    import paddlenlp.transformers as T

    spec = resolve_model(model)
    d = paddlenlp_config(spec, 64)
    if spec.family == "chatglm2" and d["multi_query_group_num"] % tp:
        pytest.skip(f"{d['multi_query_group_num']} multi-query groups do not split {tp} ways")
    classes = {"llama": T.LlamaForCausalLM, "qwen": T.QWenForCausalLM, "gpt": T.GPTForCausalLM,
               "opt": T.OPTForCausalLM, "bloom": T.BloomForCausalLM, "chatglm2": T.ChatGLMv2ForCausalLM,
               "qwen2": T.Qwen2ForCausalLM, "mistral": T.MistralForCausalLM}  # fmt: skip
    full = {
        n: np.random.default_rng(i).standard_normal(s).astype(np.float32)
        for i, (n, s) in enumerate(families.conversion(spec.family).paddle_shapes(d).items())
    }
    from llmpt.train.model_config import config_class

    slices: list[dict[str, np.ndarray]] = []
    for rank in range(tp):
        config = config_class(d["model_type"])(**{k: v for k, v in d.items() if k != "model_type"})
        config.tensor_parallel_degree, config.tensor_parallel_rank = tp, rank
        actions = classes[spec.family]._get_tensor_parallel_mappings(config, is_split=True)
        mine = {}
        for name, arr in full.items():
            act = next((a for k, a in actions.items() if name == k or name.endswith("." + k)), None)
            mine[name] = _split(act, arr) if act else arr
        slices.append(mine)
    for name, arr in full.items():
        merged = checkpoint.merge_tp(spec.family, name, [s[name] for s in slices], arr.shape, d)
        assert np.array_equal(merged, arr), name


def test_the_llama3_scaling_is_what_makes_llama31_match(built):
    """Without its rope_scaling the same export's equations miss PaddleNLP's logits: the case checks the scaling."""
    ids, runs = built
    _, hf_dir, paddle_logits = runs["llama3.1"]
    config, tensors = _hf(hf_dir)
    assert config["rope_scaling"]["rope_type"] == "llama3" and config["rope_theta"] == 500000.0
    unscaled = reference_forward.logits({**config, "rope_scaling": None}, tensors, ids)
    assert _relative(paddle_logits, unscaled) > 100 * TOLERANCE
