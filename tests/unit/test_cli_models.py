"""`llmpt plan` with the registry and matrix, `llmpt matrix`, `llmpt models`: the issue's done-when cases."""

from __future__ import annotations

import json

import pytest

from llmpt.models.matrix import runnable_presets
from llmpt.models.registry import resolve_model
from llmpt.strategies.presets import resolve_strategy

from .test_models import SEED_ID_LIST


def _err(result) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    return line.split("; hint: ")[0]


@pytest.mark.parametrize("model_id", SEED_ID_LIST)
def test_plan_every_seed_id_with_a_supported_strategy(cli, model_id):
    spec = resolve_model(model_id)
    eight = [n for n in runnable_presets(spec) if resolve_strategy(n).parallel.dims.model_degree in (2, 4, 8)]
    name = "tp2sd4_stage2" if "tp2sd4_stage2" in eight else eight[-1]
    s = resolve_strategy(name)
    gpus = s.parallel.dims.min_ranks
    r = cli("plan", model_id, "--strategy", name, "--gpus", str(gpus), "--json")
    assert r.exit_code == 0, r.stderr
    m = json.loads(r.stdout)["model"]
    assert m["id"] == model_id and m["family"] == spec.family
    cfg = m["config"]
    layers = cfg.get("num_hidden_layers", cfg.get("n_layer", cfg.get("num_layers")))
    heads = cfg.get("num_attention_heads", cfg.get("n_head"))
    assert (cfg["hidden_size"], layers, heads) == (spec.hidden_size, spec.num_hidden_layers, spec.num_attention_heads)
    assert cfg["vocab_size"] >= spec.vocab_size


def test_plan_qwen_7b_seed_row_shows_real_dimensions(cli):
    r = cli("plan", "qwen-7b", "--strategy", "tp2sd4_stage2", "--gpus", "8", "--json")
    out = json.loads(r.stdout)
    assert out["model"]["config"]["hidden_size"] == 4096
    assert out["model"]["config"]["num_hidden_layers"] == 32
    assert out["model"]["config"]["vocab_size"] == 151936
    assert out["model"]["seq_len"] == 4096


def test_opt_66b_tensor_parallel_is_refused_naming_tp(cli):
    line = _err(cli("plan", "opt-66b", "--strategy", "tp2", "--gpus", "2"))
    # opt-66b is data parallel only: every card holds all 66B parameters, so no allowed layout is offered as one
    # that runs (issue 14: the refusal once listed dp1..dp8 as "strategies that run" although none fits)
    assert line == (
        "error: facebook/opt-66b does not support tensor parallel (tp2) (capability matrix, row OPT 66B: ⬜ not "
        "listed as supported). The matrix allows dp1, dp2, dp4, dp8 for facebook/opt-66b, but none of them fits an "
        "A100-80G at 4096 tokens (check other cards and devices with llmpt plan --device-type)"
    )


def test_a_refusal_names_as_running_only_layouts_that_fit(cli):
    import re

    line = _err(cli("plan", "qwen-7b", "--strategy", "tp2_sp", "--gpus", "2"))
    named = re.search(r"fit an A100-80G at 4096 tokens: ([^(;]+)", line).group(1).split(", ")
    for name in named:
        r = cli("plan", "qwen-7b", "--strategy", name.strip(), "--device-type", "A100-80G", "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["estimate"]["fits"] is True, name


def test_opt_66b_dp8_runs_with_flash_attention_off_and_a_note(cli):
    r = cli("plan", "opt-66b", "--strategy", "dp8", "--gpus", "8", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["training_args"]["use_flash_attention"] is False
    assert out["training_args"]["use_fused_rms_norm"] is False
    assert any("flash attention off" in n and "❌" in n for n in out["notes"])


def test_explicit_flash_attention_request_is_refused(cli, tmp_path):
    f = tmp_path / "fa.yaml"
    f.write_text("name: dp8\nprecision: {dtype: bf16}\nkernels: {flash_attention: true}\n")
    line = _err(cli("plan", "opt-66b", "--strategy", str(f), "--gpus", "8"))
    assert "facebook/opt-66b does not support flash attention (capability matrix, row OPT 66B: ❌" in line


def test_partial_cell_needs_allow_partial(cli, tmp_path):
    # chatglm2's modeling has a core_attn path (SelfAttention.forward); the ChatGLM-6B row says SR 🚧
    f = tmp_path / "sr.yaml"
    f.write_text("name: tp2_rccore\n")
    line = _err(cli("plan", "chatglm2-6b", "--strategy", str(f), "--gpus", "2"))
    assert "selective recompute is only partially supported" in line and "🚧" in line
    r = cli("plan", "chatglm2-6b", "--strategy", str(f), "--gpus", "2", "--allow-partial", "--json")
    assert r.exit_code == 0, r.stderr
    assert "warning: THUDM/chatglm2-6b: selective recompute is only partially supported" in r.stderr


def test_allow_partial_cannot_run_a_path_the_modeling_lacks(cli):
    # bloom's SR cell is 🚧 too, but its modeling recomputes whole blocks whatever the granularity
    line = _err(cli("plan", "bloom-7b1", "--strategy", "tp2_rccore", "--gpus", "2", "--allow-partial"))
    assert "PaddleNLP 3.0.0b4's bloom modeling has no core-attention recompute" in line


@pytest.mark.parametrize(
    "model,strategy,gpus,fragment",
    [
        ("chatglm2-6b", "tp4", "4", "has 2 key/value heads, not divisible by tp4"),
        ("llama-13b", "tp8pp8_vpp2_rc", "64", "has 40 layers, not divisible by pp8 x vpp2 = 16 stages"),
        ("qwen-7b", "tp8_sp", "8", "does not support sequence parallel"),
        ("qwen-7b", "sd8_stage1_rc", "8", "does not support sharding stage 1 with recompute (sd8)"),
        ("bloom-7b1", "pp2", "2", "does not support pipeline parallel (pp2)"),
        ("qwen-7bb", "dp8", "8", "unknown model 'qwen-7bb'. Did you mean 'qwen/qwen-7b'"),
    ],
)
def test_model_strategy_refusals(cli, model, strategy, gpus, fragment):
    assert fragment in _err(cli("plan", model, "--strategy", strategy, "--gpus", gpus))


def test_matrix_model_and_strategy_views(cli):
    r = cli("matrix", "--model", "opt-66b", "--json")
    out = json.loads(r.stdout)
    assert out["model"] == "facebook/opt-66b" and out["row"]["cells"]["tp"]["status"] == "unlisted"
    assert out["runnable_presets"] == ["dp1", "dp2", "dp4", "dp8"]
    r = cli("matrix", "--strategy", "tp2sd4_stage2", "--json")
    out = json.loads(r.stdout)
    assert [n["column"] for n in out["needs"]] == ["tp", "s2_dp", "fa"]
    can = {row["name"]: row["can_run"] for row in out["rows"]}
    assert can["Qwen-7B"] and can["LLaMA2-70B"] and not can["Bloom-176B"] and not can["OPT 66B"]
    assert cli("matrix").exit_code == 0
    assert "selective recompute" in cli("matrix", "--model", "bloom-7b1").stdout


def test_models_list_and_show(cli):
    rows = json.loads(cli("models", "list", "--json").stdout)["models"]
    assert len([m for m in rows if m["seed_weight"]]) == 29
    shown = json.loads(cli("models", "show", "llama-tiny", "--json").stdout)
    assert shown["paddlenlp_config"]["model_type"] == "llama"


def test_models_show_and_list_give_moe_totals_active_and_experts(cli):
    r = cli("models", "show", "mixtral-8x7b", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    # Mixtral-8x7B-v0.1's checkpoint: 46,702,792,704 parameters; 2 of 8 experts active: 12.9B, as Mistral states
    assert (d["total_parameters"], d["active_parameters"]) == (46_702_792_704, 12_879_925_248)
    assert (d["moe_layers"], d["parameters_per_expert"]) == (32, 3 * 4096 * 14336)
    assert (d["num_experts"], d["num_experts_per_tok"]) == (8, 2)
    assert d["paddlenlp_config"]["num_local_experts"] == 8
    models = {m["id"]: m for m in json.loads(cli("models", "list", "--json").stdout)["models"]}
    assert models["deepseek-ai/DeepSeek-V2"]["total_parameters"] == 235_741_434_880
    assert "total_parameters" not in models["meta-llama/Llama-2-7b"]  # dense: no expert facts
    table = cli("models", "list").stdout
    assert "160 + 2 shared, top-6" in table and "235.7B (21.4B active)" in table
