"""Long context: the registry's rotary settings in the PaddleNLP config (Llama-3's rope_theta, Llama-3.1's llama3
rope scaling), `model.rope_scaling` set by the user, and continued pretraining refused past the positions the
weights were trained on unless a scaling is set (llmpt/resolve/request.py TRAINED_ROTARY)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmpt.models.registry import paddlenlp_config, resolve_model


def test_llama3_carries_its_rotary_base_and_llama31_its_scaling():
    l3 = paddlenlp_config(resolve_model("llama3-8b"), 4096)
    assert l3["rope_theta"] == 500000.0 and "rope_scaling" not in l3 and l3["max_position_embeddings"] == 8192
    l31 = paddlenlp_config(resolve_model("llama3.1-405b"), 4096)
    assert l31["rope_scaling"] == {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}  # fmt: skip
    assert l31["max_position_embeddings"] == 131072 and l31["num_key_value_heads"] == 8
    # a family whose PaddleNLP default is the model's writes nothing: Llama-2's config is as before
    assert "rope_theta" not in paddlenlp_config(resolve_model("llama2-7b"), 4096)
    q = paddlenlp_config(resolve_model("qwen2.5-7b"), 4096)
    assert (q["model_type"], q["rope_theta"], q["vocab_size"], q["tie_word_embeddings"]) == (
        "qwen2", 1000000.0, 152064, False)  # fmt: skip
    assert paddlenlp_config(resolve_model("qwen2.5-0.5b"), 4096)["tie_word_embeddings"] is True


def dry_run(cli, prefix, model: str, *args: str):
    return cli("train", model, "--strategy", "dp1", "--device", "cpu", "--data", prefix, "--dry-run", "--json", *args)


def error(r) -> dict:
    """The one llmpt.error/1 object of a refused --json command."""
    (line,) = r.stderr.splitlines()
    return json.loads(line)


def config_of(r) -> dict:
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)["run_config"]["model"]["config"]


def checkpoint(tmp_path: Path, model: str, positions: int) -> str:
    """A PaddleNLP save_pretrained() directory as a dry run sees it (config.json, a weights file)."""
    d = tmp_path / f"ckpt-{model}"
    d.mkdir()
    cfg = {**paddlenlp_config(resolve_model(model), 128, from_scratch=False), "max_position_embeddings": positions}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model_state.pdparams").write_bytes(b"")
    return str(d)


SCALED = {
    "linear": (("--set", "model.rope_scaling.type=linear", "--set", "model.rope_scaling.factor=4"), 64),
    "ntk": (("--set", "model.rope_scaling.type=ntk", "--set", "model.rope_scaling.factor=2"), 128),
    "dynamic_ntk": (("--set", "model.rope_scaling.type=dynamic_ntk", "--set", "model.rope_scaling.factor=2"), 64),
}


@pytest.mark.parametrize("kind", list(SCALED))
def test_a_scaling_goes_into_the_config_with_a_table_long_enough(cli, prefix, tmp_path, kind):
    """PaddleNLP's linear and ntk tables hold max_position_embeddings x factor rows; dynamic_ntk rescales itself."""
    args, positions = SCALED[kind]
    init = checkpoint(tmp_path, "llama-tiny", 64)
    cfg = config_of(dry_run(cli, prefix, "llama-tiny", "--init-from", init, "--seq-len", "256", *args))
    assert cfg["rope_scaling_type"] == kind and cfg["max_position_embeddings"] == positions
    assert cfg["rope_scaling_factor"] == float(args[-1].split("=")[1])


def test_the_users_scaling_goes_over_the_models_own_key_by_key(cli, prefix):
    cfg = config_of(dry_run(cli, prefix, "llama3-tiny", "--seq-len", "256", "--set", "model.rope_scaling.factor=16"))
    assert cfg["rope_scaling"] == {
        "rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}  # fmt: skip
    assert cfg["rope_theta"] == 500000.0 and cfg["max_position_embeddings"] == 512
    # another type replaces it
    cfg = config_of(dry_run(cli, prefix, "llama3-tiny", "--set", "model.rope_scaling.type=linear",
                            "--set", "model.rope_scaling.factor=2"))  # fmt: skip
    assert "rope_scaling" not in cfg and cfg["rope_scaling_type"] == "linear"


def test_a_config_file_sets_it_too(cli, prefix, tmp_path):
    f = tmp_path / "long.yaml"
    f.write_text("model:\n  rope_scaling:\n    type: llama3\n    factor: 4\n    original_max_position_embeddings: 32\n")
    cfg = config_of(dry_run(cli, prefix, "llama-tiny", "--config", str(f)))
    assert cfg["rope_scaling"]["original_max_position_embeddings"] == 32 and cfg["rope_scaling"]["factor"] == 4.0


@pytest.mark.parametrize(
    "args,message",
    [
        (("--set", "model.rope_scaling.type=linear", "--set", "model.rope_scaling.factor=2"),
         "--set model.rope_scaling.type=linear: PaddleNLP's qwen2 modeling has no rope scaling"),
        (("--set", "model.rope_scaling.factor=2"),
         "--set model.rope_scaling.factor=2: PaddleNLP's qwen2 modeling has no rope scaling"),
    ],
)  # fmt: skip
def test_a_scaling_the_modeling_lacks_is_refused(cli, prefix, tmp_path, args, message):
    for model in ("qwen2-tiny", "mistral-tiny"):
        r = dry_run(cli, prefix, model, "-o", str(tmp_path / "run"), *args)
        assert r.exit_code == 2 and not (tmp_path / "run").exists()
        assert error(r)["error"].startswith(message.replace("qwen2", model.split("-")[0]))


@pytest.mark.parametrize(
    "args,message",
    [
        (("--set", "model.rope_scaling.factor=2"), "--set model.rope_scaling.factor=2: needs model.rope_scaling.type"),
        (("--set", "model.rope_scaling.type=yarn"),
         "--set model.rope_scaling.type=yarn: must be one of llama3, linear, ntk, dynamic_ntk"),
        (("--set", "model.rope_scaling.type=llama3"), "--set model.rope_scaling.type=llama3: needs "
         "model.rope_scaling.factor"),
        (("--set", "model.rope_scaling.type=linear", "--set", "model.rope_scaling.factor=0"),
         "--set model.rope_scaling.factor=0: must be a number > 0"),
        (("--set", "model.rope_scaling.type=llama3", "--set", "model.rope_scaling.factor=8",
          "--set", "model.rope_scaling.low_freq_factor=4"),
         "--set model.rope_scaling.low_freq_factor=4: type llama3 needs low_freq_factor < high_freq_factor"),
        (("--set", "model.rope_scalng.type=linear"), "--set: unknown key 'model.rope_scalng' (did you mean "
         "'model.rope_scaling'?)"),
    ],
)  # fmt: skip
def test_bad_scaling_settings_are_refused_as_given(cli, prefix, args, message):
    r = dry_run(cli, prefix, "llama-tiny", *args)
    assert r.exit_code == 2, r.stdout
    assert error(r)["error"].startswith(message), r.stderr


def test_continued_pretraining_of_a_family_without_scaling_must_fit_its_positions(cli, prefix, tmp_path):
    init = checkpoint(tmp_path, "qwen2-tiny", 64)
    r = dry_run(cli, prefix, "qwen2-tiny", "--init-from", init, "--seq-len", "128", "-o", str(tmp_path / "run"))
    assert r.exit_code == 2 and not (tmp_path / "run").exists()
    err = error(r)
    assert err["error"].startswith("--seq-len 128: longer than the 64 positions the --init-from checkpoint was trained")
    assert err["hint"] == "PaddleNLP's qwen2 modeling implements no rope scaling: use --seq-len 64 or less"
    ry = json.loads(dry_run(cli, prefix, "qwen2-tiny", "--init-from", init).stdout)["run_config"]
    assert ry["data"]["seq_len"] == 64 and any("64 trained rotary positions" in n for n in ry["notes"])


def test_alibi_llama_is_not_bounded_by_rotary_positions(cli, prefix, tmp_path):
    init = checkpoint(tmp_path, "baichuan-tiny", 64)
    cfg = config_of(dry_run(cli, prefix, "baichuan-tiny", "--init-from", init, "--seq-len", "128"))
    assert cfg["alibi"] is True and cfg["max_position_embeddings"] == 128  # raised, as before (no weight on it)


def test_llama31_weights_convert_with_their_scaling_both_ways():
    from llmpt.interop import families

    conv = families.conversion("llama")
    hf = {**conv.to_hf(paddlenlp_config(resolve_model("llama3.1-8b"), 4096, from_scratch=False), False)}
    assert hf["rope_scaling"] == {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}  # fmt: skip
    assert hf["rope_theta"] == 500000.0
    back = conv.from_hf(hf)
    assert back["rope_scaling"] == hf["rope_scaling"] and back["max_position_embeddings"] == 131072
    assert "rope_scaling" not in conv.from_hf({**hf, "rope_scaling": None})
    with pytest.raises(families.ConversionRefused, match="only None or Llama-3.1's llama3 scaling"):
        conv.from_hf({**hf, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})


def test_a_mistral_window_shorter_than_the_sequence_gets_a_note(cli, prefix, tmp_path):
    """PaddleNLP's mistral never applies sliding_window: continuing a windowed checkpoint past it is said."""
    init = checkpoint(tmp_path, "mistral-tiny", 512)
    cfg = json.loads(Path(init, "config.json").read_text())
    Path(init, "config.json").write_text(json.dumps({**cfg, "sliding_window": 64}))
    notes = json.loads(dry_run(cli, prefix, "mistral-tiny", "--init-from", init, "--seq-len", "128").stdout)[
        "run_config"
    ]["notes"]
    assert any("sliding_window 64 is not applied" in n and "each of the 128 tokens" in n for n in notes), notes
    notes = json.loads(dry_run(cli, prefix, "mistral-tiny", "--init-from", init, "--seq-len", "64").stdout)
    assert not any("sliding_window" in n for n in notes["run_config"]["notes"])
