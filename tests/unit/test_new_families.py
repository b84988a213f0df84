"""Llama-3/3.1, Qwen2/2.5 and Mistral in the registry and the matrix, without paddle: listed, resolved (and
misspelt), checked against their shapes and their modeling's capability rows."""

from __future__ import annotations

import json

import pytest

from llmpt.errors import ModelError
from llmpt.models.matrix import load_families
from llmpt.models.registry import dropout_config, paddlenlp_config, resolve_model

NEW = {
    "meta-llama/Meta-Llama-3-8B": "llama", "meta-llama/Meta-Llama-3-70B": "llama",
    "meta-llama/Llama-3.1-8B": "llama", "meta-llama/Llama-3.1-70B": "llama", "meta-llama/Llama-3.1-405B": "llama",
    "Qwen/Qwen2-0.5B": "qwen2", "Qwen/Qwen2-1.5B": "qwen2", "Qwen/Qwen2-7B": "qwen2", "Qwen/Qwen2-72B": "qwen2",
    "Qwen/Qwen2.5-0.5B": "qwen2", "Qwen/Qwen2.5-1.5B": "qwen2", "Qwen/Qwen2.5-3B": "qwen2", "Qwen/Qwen2.5-7B": "qwen2",
    "Qwen/Qwen2.5-14B": "qwen2", "Qwen/Qwen2.5-32B": "qwen2", "Qwen/Qwen2.5-72B": "qwen2",
    "mistralai/Mistral-7B-v0.1": "mistral",
    "llama3-tiny": "llama", "qwen2-tiny": "qwen2", "mistral-tiny": "mistral",
}  # fmt: skip


def test_models_list_shows_the_new_families(cli):
    r = cli("models", "list", "--json")
    assert r.exit_code == 0
    listed = {m["id"]: m for m in json.loads(r.stdout)["models"]}
    for model_id, family in NEW.items():
        assert listed[model_id]["family"] == family and not listed[model_id]["seed_weight"]
        assert listed[model_id]["source"]
    assert listed["meta-llama/Llama-3.1-405B"]["rope_scaling"]["original_max_position_embeddings"] == 8192
    table = cli("models", "list").stdout
    for name in ("Qwen/Qwen2.5-72B", "mistralai/Mistral-7B-v0.1", "meta-llama/Llama-3.1-405B", "qwen2-tiny"):
        assert name in table


@pytest.mark.parametrize(
    "name,expected",
    [("llama3-8b", "meta-llama/Meta-Llama-3-8B"), ("Llama-3.1-70B", "meta-llama/Llama-3.1-70B"),
     ("qwen2.5-7b", "Qwen/Qwen2.5-7B"), ("QWEN/QWEN2-72B", "Qwen/Qwen2-72B"), ("mistral-7b", "mistralai/Mistral-7B-v0.1"),
     ("Mistral-7B-v0.1", "mistralai/Mistral-7B-v0.1")],
)  # fmt: skip
def test_new_names_resolve(name, expected):
    assert resolve_model(name).id == expected


def test_a_misspelt_new_model_gets_a_suggestion(cli):
    r = cli("models", "show", "qwen2.5-8b")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: unknown model 'qwen2.5-8b'. Did you mean 'Qwen/Qwen2.5-7B'")
    with pytest.raises(ModelError, match="Did you mean 'mistralai/Mistral-7B-v0.1'"):
        resolve_model("mistral-8b")


def test_published_shapes():
    q = resolve_model("qwen2.5-72b")
    assert (q.hidden_size, q.num_hidden_layers, q.num_attention_heads, q.num_key_value_heads) == (8192, 80, 64, 8)
    assert (q.intermediate_size, q.vocab_size) == (29568, 152064)
    m = resolve_model("mistral-7b")
    assert (m.hidden_size, m.intermediate_size, m.num_key_value_heads, m.vocab_size) == (4096, 14336, 8, 32000)
    big = resolve_model("llama3.1-405b")
    assert (big.hidden_size, big.num_hidden_layers, big.num_attention_heads, big.intermediate_size) == (
        16384, 126, 128, 53248)  # fmt: skip


def test_dropout_goes_where_each_modeling_reads_it():
    assert dropout_config(resolve_model("qwen2-7b"), 0.1) == {"attention_dropout": 0.1}
    with pytest.raises(ModelError, match="PaddleNLP's mistral modeling has no dropout layers"):
        dropout_config(resolve_model("mistral-7b"), 0.1)


def test_capability_rows_are_each_familys_own():
    fam = load_families()
    qwen2, mistral = fam.families["qwen2"], fam.families["mistral"]
    assert qwen2["pipeline"].status == "supported" and mistral["pipeline"].status == "unsupported"
    assert qwen2["segment_parallel"].status == "unsupported" != fam.families["llama"]["segment_parallel"].status
    assert qwen2["no_recompute_layers"].pipeline.granularities == ("full_attn", "core_attn")
    assert [k for k, c in mistral.items() if c.serves] == ["tensor_parallel", "flash_attention", "recompute_full"]


@pytest.mark.parametrize(
    "model,strategy,gpus,fragment",
    [
        ("qwen2-0.5b", "tp4", "4", "Qwen/Qwen2-0.5B has 14 attention heads, not divisible by tp4"),
        ("mistral-7b", "pp2", "2", "does not support pipeline parallel (pp2) (capability matrix, row Mistral-7B: ❌"),
        ("mistral-7b", "tp2_sp", "2", "does not support sequence parallel"),
        ("qwen2-7b", "sep2", "2", "PaddleNLP 3.0.0b4's qwen2 modeling has no segment parallel (sep) path"),
        ("llama3.1-70b", "tp16", "16", "8 key/value heads, not divisible by tp16"),
        ("llama3.1-405b", "tp8pp4", "32", "126 layers, not divisible by pp4 = 4 stages"),
    ],
)
def test_what_a_new_model_cannot_run_is_refused(cli, model, strategy, gpus, fragment):
    r = cli("plan", model, "--strategy", strategy, "--gpus", gpus)
    assert r.exit_code == 2 and fragment in r.stderr, r.stderr


def test_what_they_can_run_plans(cli):
    for model, strategy, gpus in (("qwen2-72b", "tp8_sp", "8"), ("llama3.1-405b", "tp8pp2", "16"),
                                  ("mistral-7b", "tp2sd4_stage2", "8")):  # fmt: skip
        r = cli("plan", model, "--strategy", strategy, "--gpus", gpus, "--json")
        assert r.exit_code == 0, r.stderr


# ---- Hugging Face weights: Qwen2ForCausalLM and MistralForCausalLM both ways (numerically: test_interop_reference) --


@pytest.mark.parametrize("model", ["qwen2-tiny", "mistral-tiny"])
def test_a_hugging_face_qwen2_or_mistral_directory_is_found_and_converted_back(tmp_path, model):
    from llmpt.interop import convert
    from llmpt.interop.source import find_init
    from tests.unit.test_interop import write_hf

    spec = resolve_model(model)
    state = write_hf(tmp_path / "hf", model)
    found = find_init(str(tmp_path / "hf"), spec)
    assert found.layout == "hf" and found.paddle_config["model_type"] == spec.family
    hf = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf["architectures"] == [{"qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}[spec.family]]
    assert ("sliding_window" in hf) == (spec.family == "mistral") and hf.get("sliding_window") is None
    (tmp_path / "back").mkdir()
    convert.convert_hf_dir(tmp_path / "hf", spec.family, found.paddle_config, tmp_path / "back")
    from llmpt.interop import safetensors

    back = {n: safetensors.load(i) for n, i in safetensors.read_headers(tmp_path / "back").items()}
    assert set(back) == set(state) and all((back[n] == state[n]).all() for n in state)


@pytest.mark.parametrize(
    "model,change,fragment",
    [
        ("qwen2-tiny", {"use_sliding_window": True}, "use_sliding_window True: only False converts"),
        ("qwen2-tiny", {"rope_scaling": {"type": "yarn", "factor": 4.0}}, "PaddleNLP 3.0.0b4's qwen2 builds a plain"),
        ("mistral-tiny", {"hidden_act": "gelu"}, "hidden_act 'gelu': only 'silu' converts"),
    ],
)
def test_a_variant_their_modeling_lacks_is_refused(tmp_path, model, change, fragment):
    from llmpt.interop.source import InitError, find_init
    from tests.unit.test_interop import write_hf

    write_hf(tmp_path / "hf", model)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(InitError) as e:
        find_init(str(tmp_path / "hf"), resolve_model(model))
    assert fragment in e.value.message, e.value.message


def test_released_mistral_keeps_its_window_in_the_config(tmp_path):
    from llmpt.interop import families

    hf = families.conversion("mistral").to_hf(paddlenlp_config(resolve_model("mistral-7b"), 4096), False)
    pcfg = families.conversion("mistral").from_hf({**hf, "sliding_window": 4096})
    assert pcfg["sliding_window"] == 4096 and pcfg["max_position_embeddings"] == 32768
