"""Weights in and out without paddle: the safetensors reader/writer, the conversion table (every tensor of every
family mapped once, both ways, exactly), what --init-from accepts and refuses (directories, caches, shapes, the
tokenizer), the merge of tensor-parallel slices, and `llmpt export` on checkpoints written here as PaddleNLP's Trainer
writes them (.pdparams pickles of numpy arrays). The numerical proof against PaddleNLP is in
tests/integration/test_interop_reference.py."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from llmpt.interop import checkpoint, convert, families, safetensors
from llmpt.interop.source import InitError, find_init
from llmpt.interop.tokenizer_files import differs, tokenizer_record
from llmpt.launch.checkpoints import mark_complete
from llmpt.models.registry import paddlenlp_config, resolve_model

TINY = ("llama-tiny", "qwen-tiny", "gpt-tiny", "opt-tiny", "bloom-tiny", "chatglm2-tiny")


def tiny_config(model: str, **changes) -> dict:
    return {**paddlenlp_config(resolve_model(model), 64), **changes}


def random_state(family: str, config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = families.conversion(family).paddle_shapes(config)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


def write_hf(directory: Path, model: str, max_bytes: int = 2**40, **changes) -> dict[str, np.ndarray]:
    """A Hugging Face directory of the tiny model (random weights), as llmpt's export writes one."""
    spec = resolve_model(model)
    config = tiny_config(model, **changes)
    state = random_state(spec.family, config)
    directory.mkdir(parents=True, exist_ok=True)
    convert.write_model(directory, "hf", spec.family, config, state, "F32", max_bytes)
    return state


def write_pdparams(path: Path, state: dict[str, np.ndarray]) -> None:
    """As paddle.save writes a state dict: a pickle of numpy arrays (plus its name table)."""
    with path.open("wb") as f:
        pickle.dump({**state, "StructuredToParameterName@@": {n: f"p{i}" for i, n in enumerate(state)}}, f, protocol=4)


# ---- safetensors -----------------------------------------------------------------------------------------------


def test_safetensors_round_trip_sharded_with_bfloat16(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"t{i}": rng.standard_normal((3, 5 + i)).astype(np.float32) for i in range(4)}
    pend = {n: safetensors.pending(a, "BF16" if n == "t0" else "F32") for n, a in arrays.items()}
    files = safetensors.write_sharded(tmp_path, pend, {"format": "pt"}, max_shard_bytes=150)
    assert [f.name for f in files][-1] == safetensors.INDEX_NAME and len(files) > 2
    index = json.loads((tmp_path / safetensors.INDEX_NAME).read_text())
    assert set(index["weight_map"]) == set(arrays)
    back = safetensors.read_headers(tmp_path)
    for n, a in arrays.items():
        got = safetensors.to_float32(safetensors.load(back[n]), back[n].dtype)
        if n == "t0":  # bfloat16 keeps 8 bits of mantissa, rounded to nearest
            assert np.max(np.abs(got - a) / np.abs(a)) <= 2**-8
        else:
            assert np.array_equal(got, a)


def test_bfloat16_rounds_to_nearest_even():
    x = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5, np.float32(3.1415927)], dtype=np.float32)
    bits = safetensors.float32_to_bf16_bits(x)
    back = safetensors.to_float32(bits, "BF16")
    assert list(back[:4]) == [1.0, 1.0, 1.0 + 4 * 2**-8, -2.5]  # ties to even both ways
    assert abs(back[4] - 3.140625) < 1e-7


def test_a_truncated_safetensors_file_is_refused_by_its_header(tmp_path):
    safetensors.write_file(
        tmp_path / "m.safetensors", {"w": safetensors.pending(np.ones((64, 64), np.float32), "F32")}, {}
    )
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[:-100])
    with pytest.raises(safetensors.SafetensorsError, match="truncated"):
        safetensors.read_header(tmp_path / "m.safetensors")
    (tmp_path / "m.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(safetensors.SafetensorsError, match="not a safetensors file"):
        safetensors.read_header(tmp_path / "m.safetensors")


# ---- the conversion table --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", TINY)
def test_every_paddle_tensor_has_exactly_one_place_in_the_hugging_face_layout(model):
    spec = resolve_model(model)
    conv = families.conversion(spec.family)
    config = tiny_config(model)
    mapped = [p for r in conv.rules(config) for p in r.paddle]
    head = conv.head(config)
    if head is not None and head.paddle is not None:
        mapped.append(head.paddle)
    assert sorted(mapped) == sorted(conv.paddle_shapes(config))
    hf = [r.hf for r in conv.rules(config)]
    assert len(hf) == len(set(hf))


@pytest.mark.parametrize("model", TINY)
def test_tensors_go_to_hugging_face_and_back_exactly(model):
    family = resolve_model(model).family
    config = tiny_config(model)
    state = random_state(family, config)
    hf, tied = convert.to_hf(family, config, state)
    layout = families.hf_layout(families.conversion(family), config, tied)
    assert {n: a.shape for n, a in hf.items()} == layout
    back = convert.from_hf(family, config, hf)
    assert set(back) == set(state)
    assert all(np.array_equal(back[n], state[n]) for n in state)


@pytest.mark.parametrize("model", TINY)
def test_configs_go_to_hugging_face_and_back(model):
    family = resolve_model(model).family
    conv = families.conversion(family)
    config = tiny_config(model)
    back = conv.from_hf(conv.to_hf(config, tied=family in ("gpt", "bloom")))
    assert back["model_type"] == config["model_type"]
    for key in ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size", "ffn_hidden_size",
                "multi_query_group_num", "kv_channels", "num_key_value_heads", "n_head"):  # fmt: skip
        if key in config:
            assert back[key] == config[key], key


def test_an_opt_head_equal_to_the_embedding_is_exported_tied_and_a_trained_one_apart():
    config = tiny_config("opt-tiny")
    state = random_state("opt", config)
    hf, tied = convert.to_hf("opt", config, state)
    assert not tied and "lm_head.weight" in hf
    state["lm_head.decoder_weight"] = state["opt.embeddings.word_embeddings.weight"].copy()
    hf, tied = convert.to_hf("opt", config, state)
    assert tied and "lm_head.weight" not in hf
    assert families.conversion("opt").to_hf(config, tied)["tie_word_embeddings"] is True
    back = convert.from_hf("opt", config, hf)  # a tied Hugging Face head starts as a copy of the embedding
    assert np.array_equal(back["lm_head.decoder_weight"], state["opt.embeddings.word_embeddings.weight"])


@pytest.mark.parametrize(
    ("family", "config", "fragment"),
    [
        ("llama", {"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ("llama", {"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
        ("llama", {"attention_bias": True}, "attention_bias True"),
        ("gpt", {"activation_function": "relu"}, "activation_function 'relu'"),
        ("gpt", {"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon 1e-06"),
        ("opt", {"do_layer_norm_before": False}, "post-LayerNorm OPT"),
        ("opt", {"word_embed_proj_dim": 32}, "project_in/out"),
        ("chatglm2", {"position_encoding_2d": True}, "ChatGLM (v1)"),
        ("chatglm2", {"rope_ratio": 50}, "rope_ratio 50"),
        ("qwen", {"no_bias": False}, "no_bias False"),
    ],
)
def test_hugging_face_variants_the_modeling_lacks_are_refused_with_the_key(family, config, fragment):
    conv = families.conversion(family)
    model = {"chatglm2": "chatglm2-tiny"}.get(family, f"{family}-tiny")
    base = conv.to_hf(tiny_config(model), tied=True)
    with pytest.raises(families.ConversionRefused, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        conv.from_hf({**base, **config})


def test_baichuan_alibi_is_not_exported_to_the_hugging_face_llama_layout():
    with pytest.raises(families.ConversionRefused, match="no ALiBi"):
        families.conversion("llama").to_hf(tiny_config("baichuan-tiny"), tied=False)


def test_fused_tensors_split_as_paddlenlp_fuses_them():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((8, n)).astype(np.float32) for n in (4 * 3, 2 * 3, 2 * 3))  # 4 heads, 2 kv, d 3
    heads = lambda a: np.split(a, a.shape[1] // 3, axis=1)  # noqa: E731
    fused = np.concatenate([*heads(q)[:2], heads(k)[0], heads(v)[0], *heads(q)[2:], heads(k)[1], heads(v)[1]], axis=1)
    got = families.unfuse(families.fused_tensors("llama", {"num_attention_heads": 4, "num_key_value_heads": 2})[
        "self_attn.qkv_proj.weight"], fused)  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(got, (q, k, v), strict=True))


# ---- tensor-parallel merge -------------------------------------------------------------------------------------


def _split(arr, tp, axis=None, parts=None):
    if parts is not None:
        pieces = np.split(arr, np.cumsum([arr.shape[-1] * p // sum(parts) for p in parts])[:-1], axis=-1)
        per = [np.split(p, tp, axis=-1) for p in pieces]
        return [np.concatenate([p[r] for p in per], axis=-1) for r in range(tp)]
    return [arr] * tp if axis is None else np.split(arr, tp, axis=axis)


@pytest.mark.parametrize("tp", [2, 4])
def test_tensor_parallel_slices_merge_back(tp):
    config = tiny_config("chatglm2-tiny")
    full = random_state("chatglm2", config)
    for name in ("chatglm_v2.encoder.layers.0.self_attention.query_key_value.weight",
                 "chatglm_v2.encoder.layers.0.mlp.dense_h_to_4h.weight"):  # fmt: skip
        parts = families.tp_parts("chatglm2", name, config)
        if tp == 4 and name.endswith("query_key_value.weight"):
            continue  # 2 multi-query groups do not split 4 ways
        shards = _split(full[name], tp, parts=parts)
        assert np.array_equal(checkpoint.merge_tp("chatglm2", name, shards, full[name].shape, config), full[name])
    name = "chatglm_v2.encoder.layers.0.self_attention.dense.weight"  # row parallel
    assert np.array_equal(checkpoint.merge_tp("chatglm2", name, _split(full[name], tp, 0), full[name].shape, config),
                          full[name])  # fmt: skip
    name = "chatglm_v2.encoder.final_layernorm.weight"  # replicated
    assert checkpoint.merge_tp("chatglm2", name, _split(full[name], tp), full[name].shape, config) is full[name]


# ---- --init-from -----------------------------------------------------------------------------------------------


def test_a_hugging_face_directory_is_found_checked_and_recorded(tmp_path):
    write_hf(tmp_path / "hf", "llama-tiny", max_bytes=200_000)  # sharded, with an index
    found = find_init(str(tmp_path / "hf"), resolve_model("llama-tiny"))
    assert found.layout == "hf" and found.where == "directory"
    assert found.paddle_config["num_hidden_layers"] == 4 and found.paddle_config["model_type"] == "llama"
    assert found.load_dir.parent.name == "init" and found.record()["converted_to"] == str(found.load_dir)
    assert found.tokenizer is None


def test_a_hugging_face_directory_is_converted_once_into_the_cache(tmp_path):
    state = write_hf(tmp_path / "hf", "qwen-tiny")
    found = find_init(str(tmp_path / "hf"), resolve_model("qwen-tiny"))
    out = convert.prepare_init_weights(found.record(), "qwen")
    assert out == found.load_dir and (out / "model.safetensors").is_file()
    back = safetensors.read_headers(out)
    assert set(back) == set(state)
    assert all(np.array_equal(safetensors.load(back[n]), state[n]) for n in state)
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert convert.prepare_init_weights(found.record(), "qwen") == out  # already there: not converted again
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime


def test_older_checkpoints_without_the_base_prefix_are_read(tmp_path):
    write_hf(tmp_path / "hf", "gpt-tiny")
    headers = safetensors.read_headers(tmp_path / "hf")
    stripped = {n.removeprefix("transformer."): safetensors.pending(np.array(safetensors.load(i)), "F32")
                for n, i in headers.items()}  # fmt: skip
    stripped["h.0.attn.bias"] = safetensors.pending(np.ones((1, 1, 4, 4), np.float32), "F32")  # a mask buffer
    (tmp_path / "hf" / "model.safetensors").unlink()
    safetensors.write_file(tmp_path / "hf" / "model.safetensors", stripped, {"format": "pt"})
    assert find_init(str(tmp_path / "hf"), resolve_model("gpt-tiny")).layout == "hf"


def refusal(tmp_path, given: str, model: str = "llama-tiny") -> str:
    with pytest.raises(InitError) as e:
        find_init(given, resolve_model(model))
    return e.value.message


def test_weights_of_another_size_are_refused_naming_the_first_difference(tmp_path):
    write_hf(tmp_path / "hf", "qwen-tiny")
    msg = refusal(tmp_path, str(tmp_path / "hf"), "qwen-7b")
    assert msg == (f"--init-from {tmp_path / 'hf'}: config.json gives hidden_size 64, but qwen/qwen-7b has 4096: "
                   "these weights are another model")  # fmt: skip
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2}))
    assert "num_hidden_layers 2, but qwen-tiny has 4" in refusal(tmp_path, str(tmp_path / "hf"), "qwen-tiny")


def test_a_tensor_of_the_wrong_shape_is_named_with_its_file(tmp_path):
    write_hf(tmp_path / "hf", "llama-tiny", max_bytes=200_000)
    index = json.loads((tmp_path / "hf" / safetensors.INDEX_NAME).read_text())["weight_map"]
    target = "model.layers.1.mlp.up_proj.weight"
    shard = tmp_path / "hf" / index[target]
    infos, _ = safetensors.read_header(shard)
    tensors = {n: safetensors.pending(np.array(safetensors.load(i)), "F32") for n, i in infos.items()}
    tensors[target] = safetensors.pending(np.zeros((176, 32), np.float32), "F32")
    safetensors.write_file(shard, tensors, {"format": "pt"})
    msg = refusal(tmp_path, str(tmp_path / "hf"))
    assert f"{target} is [176, 32] in {shard.name}, but llama-tiny with this config.json needs [176, 64]" in msg


def test_a_missing_and_an_unknown_tensor_are_refused(tmp_path):
    write_hf(tmp_path / "hf", "bloom-tiny")
    infos = safetensors.read_headers(tmp_path / "hf")
    kept = {n: safetensors.pending(np.array(safetensors.load(i)), "F32") for n, i in infos.items()}
    extra = dict(kept, **{"v_head.weight": safetensors.pending(np.zeros(3, np.float32), "F32")})
    safetensors.write_file(tmp_path / "hf" / "model.safetensors", extra, {"format": "pt"})
    assert "v_head.weight (model.safetensors) has no place in a bloom model" in refusal(
        tmp_path, str(tmp_path / "hf"), "bloom-tiny"
    )
    kept.pop("transformer.ln_f.bias")
    safetensors.write_file(tmp_path / "hf" / "model.safetensors", kept, {"format": "pt"})
    assert "the weights have no transformer.ln_f.bias" in refusal(tmp_path, str(tmp_path / "hf"), "bloom-tiny")


def test_what_a_directory_cannot_be_is_said(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    assert "no config.json" in refusal(tmp_path, str(d))
    (d / "config.json").write_text(json.dumps(tiny_config("llama-tiny")))
    assert "no weights there (looked for model_state.pdparams" in refusal(tmp_path, str(d))
    (d / "pytorch_model.bin").write_bytes(b"x")
    assert "torch pickles" in refusal(tmp_path, str(d))
    (d / "model_state.tp00.pdparams").write_bytes(b"x")
    msg = refusal(tmp_path, str(d))
    assert "split for tensor/pipeline parallel (model_state.tp00.pdparams" in msg
    (d / "config.json").write_text(json.dumps({"model_type": "baichuan"}))
    assert "a 'baichuan' checkpoint, but the model is a llama model (Baichuan's Hugging Face layout" in refusal(
        tmp_path, str(d)
    )
    assert refusal(tmp_path, str(tmp_path / "nope")).endswith("no such directory")


def test_a_model_id_is_found_in_the_caches_and_where_llmpt_looked_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("PPNLP_HOME", str(tmp_path / "ppnlp"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    msg = refusal(tmp_path, "Org/Tiny-Llama")
    assert str(tmp_path / "ppnlp" / "models" / "Org/Tiny-Llama") in msg
    assert str(tmp_path / "hf-home" / "hub" / "models--Org--Tiny-Llama" / "snapshots") in msg
    assert "llmpt downloads nothing" in msg
    repo = tmp_path / "hf-home" / "hub" / "models--org--tiny-llama"  # the Hub's names match whatever the case
    write_hf(repo / "snapshots" / "abc123", "llama-tiny")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    found = find_init("Org/Tiny-Llama", resolve_model("llama-tiny"))
    assert (found.where, found.directory) == ("Hugging Face cache", repo / "snapshots" / "abc123")
    pp = tmp_path / "ppnlp" / "models" / "Org" / "Tiny-Llama"
    write_hf(pp, "llama-tiny")
    assert find_init("Org/Tiny-Llama", resolve_model("llama-tiny")).where == "PaddleNLP cache"


def test_the_tokenizer_that_came_with_the_weights_is_compared_by_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, vocab in ((a, {"x": 0, "y": 1}), (b, {"x": 0, "z": 1, "w": 2})):
        d.mkdir()
        (d / "vocab.json").write_text(json.dumps(vocab))
        (d / "merges.txt").write_text("#version\n")
        (d / "tokenizer_config.json").write_text("{}")
    rec_a, rec_b = tokenizer_record(a), tokenizer_record(b)
    assert rec_a["vocab_size"] == 2 and differs(rec_a, rec_a) is None
    assert "the data's vocab.json is not among the weights' tokenizer files" in differs(rec_a, rec_b)
    assert differs(rec_a, {"vocab_size": 3}) == "a 3-token vocabulary, the weights' tokenizer has 2"
    (a / "tokenizer_config.json").write_text('{"rewritten": true}')  # a save_pretrained() rewrites its config
    assert differs(tokenizer_record(a), rec_a) is None


# ---- export ----------------------------------------------------------------------------------------------------


def paddle_checkpoint(directory: Path, model: str, tp: int = 1, **changes) -> dict[str, np.ndarray]:
    """A checkpoint as PaddleNLP's Trainer writes one: config.json and model_state[.tpNN].pdparams."""
    family = resolve_model(model).family
    config = tiny_config(model, **changes)
    state = random_state(family, config)
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({**config, "tensor_parallel_degree": tp}))
    if tp == 1:
        write_pdparams(directory / "model_state.pdparams", state)
        return state
    for r in range(tp):
        shard = {}
        for (
            n,
            a,
        ) in state.items():  # PaddleNLP's split: row-parallel on axis 0, column-parallel on the last, norms whole
            axis = 0 if any(k in n for k in ("o_proj", "down_proj", "embed_tokens")) else -1
            split = _split(a, tp, axis=None if "norm" in n else axis, parts=families.tp_parts(family, n, config))
            shard[n] = split[r]
        write_pdparams(directory / f"model_state.tp{r:02d}.pdparams", shard)
    return state


def test_export_merges_tensor_parallel_slices_and_writes_hugging_face_files(cli, tmp_path):
    state = paddle_checkpoint(tmp_path / "run" / "checkpoint-5", "llama-tiny", tp=2)
    mark_complete(tmp_path / "run" / "checkpoint-5", 5)
    r = cli("export", str(tmp_path / "run" / "checkpoint-5"), "--output", str(tmp_path / "hf"), "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["schema"] == "llmpt.export/1" and report["step"] == 5
    assert report["merged"] == {"files": ["model_state.tp00.pdparams", "model_state.tp01.pdparams"], "tp": 2, "pp": 1}
    hf = {n: safetensors.load(i) for n, i in safetensors.read_headers(tmp_path / "hf").items()}
    expected, _ = convert.to_hf("llama", tiny_config("llama-tiny"), state)
    assert set(hf) == set(expected) and all(np.array_equal(hf[n], expected[n]) for n in hf)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["torch_dtype"] == "float32"
    assert "tensor_parallel_degree" not in config


def test_export_refuses_an_incomplete_checkpoint_a_used_output_and_writes_nothing(cli, tmp_path):
    paddle_checkpoint(tmp_path / "run" / "checkpoint-5", "gpt-tiny")
    r = cli("export", str(tmp_path / "run" / "checkpoint-5"), "-o", str(tmp_path / "out"))
    assert r.exit_code == 2 and "an incomplete checkpoint (no llmpt-complete.json)" in r.stderr
    mark_complete(tmp_path / "run" / "checkpoint-5", 5)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    r = cli("export", str(tmp_path / "run" / "checkpoint-5"), "-o", str(tmp_path / "used"))
    assert r.exit_code == 2 and "--output" in r.stderr and "not empty" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "used"]


def test_export_in_paddle_layout_reloads_as_the_same_tensors(cli, tmp_path):
    state = paddle_checkpoint(tmp_path / "m", "qwen-tiny", fuse_attention_ffn=False)
    r = cli("export", str(tmp_path / "m"), "-o", str(tmp_path / "p"), "--format", "paddle", "--dtype", "fp16")
    assert r.exit_code == 0, r.stderr
    back = safetensors.read_headers(tmp_path / "p")
    assert set(back) == set(state) and {i.dtype for i in back.values()} == {"F16"}
    assert all(np.array_equal(safetensors.load(back[n]), state[n].astype(np.float16)) for n in state)


def test_export_converts_one_tensor_at_a_time(tmp_path):
    """A bf16 checkpoint of 25M parameters (100 MB as float32) exports to bf16 Hugging Face files while Python holds
    a few of its 0.7 MB tensors at a time, not the model in float32 (a 70B export would need 280 GB)."""
    import tracemalloc

    from llmpt.interop.export import export

    config = tiny_config("llama-tiny", hidden_size=256, intermediate_size=688, num_hidden_layers=32)
    state = random_state("llama", config)
    d = tmp_path / "saved"  # a save_pretrained() directory
    d.mkdir()
    safetensors.write_sharded(d, {n: safetensors.pending(a, "BF16") for n, a in state.items()}, {"format": "np"}, 2**40)
    (d / "config.json").write_text(json.dumps(config))
    fp32_bytes = sum(a.nbytes for a in state.values())
    largest = max(a.nbytes for a in state.values())
    del state
    tracemalloc.start()
    try:
        report = export(str(d), str(tmp_path / "hf"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["dtype"] == "bf16" and fp32_bytes > 90 * largest
    assert peak < 10 * largest, f"peak {peak / 2**20:.1f} MiB for a {fp32_bytes / 2**20:.0f} MiB float32 model"
    back = safetensors.read_headers(tmp_path / "hf")
    stored = safetensors.read_headers(d)
    q = "layers.31.self_attn.q_proj.weight"
    # the bf16 bits exactly, transposed into Hugging Face's layout
    assert np.array_equal(safetensors.load(back[f"model.{q}"]), safetensors.load(stored[f"llama.{q}"]).T)


# ---- llmpt train --init-from (dry run: nothing converted, nothing written) ------------------------------------


def test_train_records_a_hugging_face_source_and_its_converted_copy(cli, prefix, tmp_path):
    write_hf(tmp_path / "hf", "gpt-tiny", max_position_embeddings=64)
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps({str(i): i for i in range(900)}))
    (tmp_path / "hf" / "merges.txt").write_text("#version: 0.2\n")
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"tokenizer_class": "GPTTokenizer"}')
    r = cli("train", "gpt-tiny", "--strategy", "dp1", "--device", "cpu", "--data", prefix, "--init-from",
            str(tmp_path / "hf"), "--dry-run", "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    cfg = json.loads(r.stdout)["run_config"]
    source = cfg["model"]["init_source"]
    assert (source["layout"], source["found_in"], source["given"]) == ("hf", "directory", str(tmp_path / "hf"))
    assert cfg["model"]["init_from"] == source["converted_to"] and "/init/hf-" in source["converted_to"]
    assert not Path(source["converted_to"]).exists()  # converted at launch, after every check
    assert cfg["model"]["config"]["model_type"] == "gpt" and cfg["model"]["config"]["max_position_embeddings"] == 64
    assert cfg["data"]["seq_len"] == 64  # GPT-2's n_positions bound the default sequence length
    assert source["tokenizer"]["vocab_size"] == 900 and set(source["tokenizer"]["files"]) >= {"vocab.json"}
    assert cfg["data"]["tokenizer_dir"] == str(tmp_path / "hf")  # no manifest to compare with: the weights' is used


def test_train_refuses_weights_of_another_model_before_writing(cli, prefix, tmp_path):
    write_hf(tmp_path / "hf", "llama-tiny", num_hidden_layers=2)
    r = cli("train", "llama-tiny", "--strategy", "dp1", "--device", "cpu", "--data", prefix, "--init-from",
            str(tmp_path / "hf"), "-o", str(tmp_path / "run"))  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.startswith(f"error: --init-from {tmp_path / 'hf'}: config.json gives num_hidden_layers 2, but "
                               "llama-tiny has 4")  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_a_sharded_directory_whose_index_names_a_missing_shard_is_refused(tmp_path):
    write_hf(tmp_path / "hf", "llama-tiny", max_bytes=200_000)
    index = json.loads((tmp_path / "hf" / safetensors.INDEX_NAME).read_text())["weight_map"]
    (tmp_path / "hf" / sorted(set(index.values()))[1]).unlink()
    assert "which is not in" in refusal(tmp_path, str(tmp_path / "hf"))


def test_a_unified_checkpoint_is_a_paddlenlp_source(tmp_path):
    """What llmpt's runs save: PaddleNLP's names in sharded safetensors, the optimizer's files beside them, and a
    tied head saved as well (gpt)."""
    config = tiny_config("gpt-tiny")
    state = random_state("gpt", config)
    state["lm_head.weight"] = state["gpt.embeddings.word_embeddings.weight"]
    d = tmp_path / "checkpoint-4"
    d.mkdir()
    pend = {n: safetensors.pending(a, "F32") for n, a in state.items()}
    safetensors.write_sharded(d, pend, {"format": "np"}, 400_000)
    (d / "optimizer.safetensors.index.json").write_text('{"weight_map": {}}')
    (d / "config.json").write_text(json.dumps(config))
    found = find_init(str(d), resolve_model("gpt-tiny"))
    assert (found.layout, found.load_dir) == ("paddle", d)
    assert checkpoint.read_state(d, "gpt", config).tensors.keys() == state.keys()
