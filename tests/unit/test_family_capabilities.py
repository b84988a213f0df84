"""Capabilities gated per family (llmpt/models/families.yaml): a strategy that needs a path the family's PaddleNLP
modeling does not have is refused in one line naming what was given, the missing path with its evidence and what
to use instead; optional kernels it lacks are switched off with a note. The claims themselves are checked against
PaddleNLP's source by tests/integration/test_family_capabilities.py."""

from __future__ import annotations

import json
import shlex
from typing import get_args

import pytest

from llmpt.errors import ModelError
from llmpt.models.matrix import (
    CAPABILITY_KEYS,
    check_capabilities,
    load_families,
    load_matrix,
    modeling_supports,
    needed_capabilities,
    needed_cells,
    runnable_presets,
)
from llmpt.models.registry import Family, all_models, resolve_model
from llmpt.strategies.presets import resolve_strategy


def _err(result) -> tuple[str, str]:
    """(message, hint) of a one-line refusal with exit code 2."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    message, _, hint = line.partition("; hint: ")
    return message, hint


def _check(model: str, strategy: str, world: int, **kw):
    spec, s = resolve_model(model), resolve_strategy(strategy)
    return check_capabilities(spec, s, s.parallel.dims.for_world(world, s.name), **kw)


# --- the data ---------------------------------------------------------------------------------------------------


def test_every_family_has_a_claim_with_evidence_for_every_capability():
    fam = load_families()
    assert set(fam.families) == set(get_args(Family))
    for family, claims in fam.families.items():
        assert tuple(claims) == CAPABILITY_KEYS
        dirs = {m.split(".")[0] for m in fam.modules[family]}
        for key, claim in claims.items():
            # evidence names a file of the family's own modeling ("llama/modeling.py: …")
            assert any(claim.evidence.startswith(f"{d}/") for d in dirs) or "PaddleNLP has no" in claim.evidence, (
                family,
                key,
            )
            assert claim.probe, (family, key)


def test_variants_select_by_the_models_position_encoding():
    fam = load_families()
    assert fam.variant_of(resolve_model("baichuan2-13b")) == "alibi"
    assert fam.variant_of(resolve_model("baichuan2-7b")) is None
    assert fam.claim(resolve_model("baichuan2-13b"), "context_parallel").status == "unsupported"
    assert fam.claim(resolve_model("baichuan2-7b"), "context_parallel").status == "supported"


def test_pipeline_claims_apply_with_pp():
    fam, gpt = load_families(), resolve_model("gpt3-13b")
    assert fam.claim(gpt, "recompute_full", pp=1).status == "unsupported"
    assert fam.claim(gpt, "recompute_full", pp=2).status == "supported"
    chatglm2 = resolve_model("chatglm2-6b")
    assert fam.claim(chatglm2, "recompute_full", pp=1).status == "supported"
    assert fam.claim(chatglm2, "recompute_full", pp=2).status == "unsupported"


def test_the_seeds_cells_stay_as_published():
    # the modeling of qwen has a sequence-parallel path, the seed lists SP ⬜ for Qwen: the published cell stands
    assert load_families().families["qwen"]["sequence_parallel"].status == "supported"
    assert load_matrix().row("Qwen-7B").cells["sp"].status == "unlisted"


# --- refusals through the CLI -----------------------------------------------------------------------------------


def test_qwen_sequence_parallel_is_refused_by_the_seeds_cell(cli):
    message, hint = _err(cli("plan", "qwen-7b", "--strategy", "tp2_sp", "--gpus", "2"))
    assert message.startswith(
        "error: qwen/qwen-7b does not support sequence parallel (capability matrix, row Qwen-7B: ⬜"
    )
    assert hint == "see: llmpt matrix --model qwen/qwen-7b"


def test_gpt_context_parallel_is_refused_naming_the_modeling(cli):
    message, hint = _err(cli("plan", "gpt3-1.3b", "--strategy", "cp2", "--gpus", "2"))
    assert message == (
        "error: gpt3-1.3B-en: strategy cp2 asks for context parallel (cp2), but PaddleNLP 3.0.0b4's gpt modeling has "
        "no context parallel (cp) path (gpt/modeling.py and modeling_pp.py never read context_parallel_degree (no ring "
        "attention): the Trainer would split each sequence across the cp ranks and each rank attend only within its "
        "own chunks)"
    )
    assert hint == "use --strategy dp2"


def test_llama_sequence_and_context_parallel_plan(cli):
    for strategy, gpus in (("tp2_sp", "2"), ("cp2", "2"), ("sep2", "2"), ("tp2cp2", "4")):
        r = cli("plan", "llama-7b", "--strategy", strategy, "--gpus", gpus, "--json")
        assert r.exit_code == 0, (strategy, r.stderr)
        args = json.loads(r.stdout)["training_args"]
        assert args["use_flash_attention"] is True


@pytest.mark.parametrize(
    "model,strategy,gpus,fragments,hint",
    [
        ("qwen-7b", "sep2", "2", ["strategy sep2 asks for segment parallel (sep2)", "qwen modeling has no segment parallel (sep) path", "sep_parallel_degree"], "use --strategy dp2"),
        ("bloom-7b1", "tp2cp2", "4", ["bloom modeling has no context parallel (cp) path"], "use --strategy tp2"),
        ("baichuan2-13b", "cp2", "2", ["llama modeling (for alibi models) has no context parallel (cp) path", "NotImplementedError"], "use --strategy dp2"),
        ("baichuan2-13b", "sep2", "4", ["llama modeling (for alibi models) has no segment parallel (sep) path"], "use --strategy dp4"),
        ("qwen-7b", "tp2sd4_stage2_rcattn", "8", ["asks for recompute granularity full_attn", "qwen modeling has no attention-block recompute"], "use --strategy tp2sd4_stage2_rc or --strategy tp2sd4_stage2_rccore"),
        ("gpt3-1.3b", "tp2sd4_stage2_rc", "8", ["asks for recompute granularity full", "gpt modeling has no full recompute", "with pp = 1 nothing would be recomputed"], "use --strategy tp2sd4_stage2_rcattn --set strategy.recompute.use_reentrant=true or --strategy tp2sd4_stage2_rccore"),
        ("opt-66b", "dp2_rc", "2", ["opt modeling has no full recompute", "enable_recompute"], "use --strategy dp2"),
        ("glm-130b", "tp2_rcattn", "2", ["glm modeling has no attention-block recompute"], "use --strategy tp2_rc"),
    ],
)  # fmt: skip
def test_a_path_the_modeling_lacks_is_refused_with_what_to_use_instead(cli, model, strategy, gpus, fragments, hint):
    message, got_hint = _err(cli("plan", model, "--strategy", strategy, "--gpus", gpus))
    for f in fragments:
        assert f in message, message
    assert got_hint == hint
    # every alternative the hint offers replays
    for alt in hint.removeprefix("use ").split(" or "):
        r = cli("plan", model, *shlex.split(alt), "--gpus", gpus, "--json")
        assert r.exit_code == 0, (alt, r.stderr)


def test_allow_partial_does_not_open_a_path_the_modeling_lacks(cli):
    # the Bloom row says SR 🚧; bloom's modeling recomputes whole blocks whatever the granularity
    message, hint = _err(cli("plan", "bloom-7b1", "--strategy", "tp2_rccore", "--gpus", "2", "--allow-partial"))
    assert "bloom modeling has no core-attention recompute (granularity core_attn) path" in message
    assert hint == "use --strategy tp2_rc"


def test_gpt_full_recompute_runs_with_pipeline(cli):
    r = cli("plan", "gpt3-1.3b", "--strategy", "tp4pp2_rc", "--gpus", "8", "--json")
    assert r.exit_code == 0, r.stderr


def test_no_recompute_layers_where_the_modeling_ignores_them(cli):
    message, hint = _err(
        cli(
            "plan",
            "qwen-7b",
            "--strategy",
            "tp2_rc",
            "--gpus",
            "2",
            "--set",
            "strategy.recompute.no_recompute_layers=[0]",
        )
    )
    assert (
        "asks for recompute.no_recompute_layers [0]" in message
        and "qwen modeling has no per-layer recompute" in message
    )
    assert hint == "leave recompute.no_recompute_layers empty (every layer recomputed)"
    # chatglm2 honours them under granularity full only
    with pytest.raises(ModelError, match="chatglm2 modeling has no per-layer recompute"):
        spec, s = resolve_model("chatglm2-6b"), resolve_strategy("tp2_rccore")
        s = s.model_copy(update={"recompute": s.recompute.model_copy(update={"no_recompute_layers": (0,)})})
        check_capabilities(spec, s, s.parallel.dims.for_world(2, s.name), allow_partial=True)


def test_context_parallel_needs_flash_attention_so_not_on_cpu(cli, tmp_path):
    message, hint = _err(
        cli("train", "llama-tiny", "--strategy", "cp2", "--device", "cpu", "--gpus", "2", "-o", str(tmp_path / "r"))
    )
    assert "runs only with kernels.flash_attention on" in message and "Context parallel requires" in message
    assert "--device gpu" in hint
    assert not (tmp_path / "r").exists()


# --- optional kernels ---------------------------------------------------------------------------------------------


def test_kernels_a_preset_turns_on_are_switched_off_with_a_note_where_the_modeling_has_none():
    out = _check("chatglm2-6b", "tp2", 2)
    assert out.kernels_off == {"flash_attention": False, "fused_rms_norm": False, "fused_rope": False}
    assert any("fused RMSNorm off" in n and "RMSNorm.forward" in n for n in out.notes)
    assert _check("llama-7b", "tp2", 2).kernels_off == {}
    # Baichuan-13B has no rotary embedding to fuse
    assert _check("baichuan2-13b", "tp2", 2).kernels_off == {"fused_rope": False}


def test_kernels_asked_for_explicitly_are_refused_where_the_modeling_has_none():
    with pytest.raises(
        ModelError, match=r"asks for fused RMSNorm \(kernels.fused_rms_norm\), but PaddleNLP 3.0.0b4's chatglm2"
    ):
        _check("chatglm2-6b", "dp2", 2, allow_partial=True, explicit_kernels={"fused_rms_norm"})
    # the older flag still means "flash attention was asked for", as before
    with pytest.raises(ModelError, match="does not support flash attention"):
        _check("opt-66b", "dp8", 8, optional_kernels=False)
    assert "fused_rms_norm" in _check("opt-66b", "dp8", 8, explicit_kernels=set()).kernels_off


def test_a_switch_the_modeling_always_applies_gets_a_note(cli, tmp_path):
    f = tmp_path / "fq.yaml"
    f.write_text("name: tp2\nkernels: {fuse_attention_qkv: true}\n")
    r = cli("plan", "qwen-7b", "--strategy", str(f), "--gpus", "2", "--json")
    assert r.exit_code == 0, r.stderr
    assert any("kernels.fuse_attention_qkv has no effect" in n and "always" in n for n in json.loads(r.stdout)["notes"])


# --- presets, planner inputs and the matrix view ------------------------------------------------------------------


def test_runnable_presets_follow_the_modeling():
    gpt = runnable_presets(resolve_model("gpt3-13b"))
    assert "tp2sd4_stage2_rc" not in gpt and "tp4pp2_rc" in gpt  # "full" runs only through GPTForCausalLMPipe
    assert "tp2_sp" in gpt


def test_every_model_and_probe_strategy_plans_exactly_when_matrix_and_modeling_agree():
    # the general rule, one model per family (and variant): refused iff the row's cells or the modeling say no
    probes = ["tp2_sp", "sep2", "cp2", "dp2_rc", "tp2_rcattn", "tp2_rccore", "tp2pp2_rc"]
    seen = set()
    for spec in all_models():
        key = (spec.family, load_families().variant_of(spec), spec.matrix_row)
        if key in seen:
            continue
        seen.add(key)
        row = load_matrix().row(spec.matrix_row)
        for name in probes:
            s = resolve_strategy(name)
            d = s.parallel.dims.smallest(name)
            cells_ok = all(
                row.cells[n.column].status in ("supported", "partial") for n in needed_cells(s, d) if not n.optional
            )
            ok = cells_ok and modeling_supports(spec, s, d)
            try:
                check_capabilities(spec, s, d, allow_partial=True)
                refused = False
            except ModelError:
                refused = True
            assert refused != ok, (spec.id, name)


def test_needed_capabilities_name_what_the_strategy_asks_for():
    s = resolve_strategy("tp2pp2_rc")
    needs = [n.capability for n in needed_capabilities(s, s.parallel.dims.smallest(s.name))]
    assert needs[:3] == ["tensor_parallel", "pipeline", "recompute_full"]
    assert {"flash_attention", "fused_rms_norm", "fused_rope"} <= set(needs)  # from the GPU base profile


def test_matrix_json_shows_what_the_modeling_cannot_serve(cli):
    out = json.loads(cli("matrix", "--json").stdout)
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["Bloom-176B"]["cells"]["sr"]["modeling"] == {
        "status": "unsupported",
        "families": {"bloom": "unsupported"},
    }
    assert rows["GPT3"]["cells"]["sr"]["modeling"]["status"] == "partial"  # no no_recompute_layers
    assert rows["ChatGLM-6B"]["cells"]["sr"]["modeling"]["families"] == {
        "chatglm": "unsupported",
        "chatglm2": "partial",
    }
    assert "modeling" not in rows["GPT3"]["cells"]["dp"]
    assert out["modeling"]["families"]["qwen"]["context_parallel"]["status"] == "unsupported"
    assert out["modeling"]["families"]["llama"]["variants"]["alibi"]["when"] == {"position": "alibi"}
    view = json.loads(cli("matrix", "--model", "gpt3-13b", "--json").stdout)
    assert view["family"] == "gpt" and view["modeling"]["recompute_full"]["pipeline"]["status"] == "supported"
    can = json.loads(cli("matrix", "--strategy", "cp2", "--json").stdout)
    runs = {r["name"]: r["models_that_run"] for r in can["rows"]}
    assert runs["GPT3"] == [] and "baichuan-inc/Baichuan2-7B-Base" in runs["BaiChuan-13B"]
    assert "baichuan-inc/Baichuan2-13B-Base" not in runs["BaiChuan-13B"]


def test_matrix_text_marks_cells_the_modeling_cannot_serve(cli):
    text = cli("matrix").stdout
    assert "🚧M" in text and "M PaddleNLP 3.0.0b4's modeling has no path (refused)" in text
    text = cli("matrix", "--model", "gpt3-13b").stdout
    words = " ".join(w for w in text.replace("│", " ").split())
    assert "llmpt runs it, except" in words and "granularity full: no path in the gpt modeling" in words
    assert "no (pp>1: yes)" in words and "(GPTDecoderLayerPipe)" in words
