"""One schema for --config and --set (llmpt/resolve/request.py SCHEMA): every key checked against its section's
pydantic schema, every value typed by its field (YAML 1.1's off/on/yes/no stay strings where a string is wanted),
every refusal naming the flag, --set or file the user typed; the train settings checked against each other; the
`training_args.*` passthrough; the seed's schedule with --init-from; sequence length vs a checkpoint's positions."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest

from llmpt.errors import LlmptError
from llmpt.models.registry import paddlenlp_config, resolve_model
from llmpt.overrides import Leaf, Section
from llmpt.resolve.request import (
    SCHEMA,
    SEED_CONTINUED_TRAIN,
    RunRequest,
    check_split_documents,
    read_layers,
)
from llmpt.run_config import TrainSettings, split_documents
from llmpt.strategies.expand import MANAGED_TRAINING_ARGS, OWNED_TRAINING_ARGS, expand, run_training_args
from llmpt.strategies.paddlenlp_fields import TRAINING_ARGUMENTS
from llmpt.strategies.presets import resolve_strategy


def leaves(node: Section = SCHEMA, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Leaf]]:
    out = []
    for key, child in node.children.items():
        out += [((*path, key), child)] if isinstance(child, Leaf) else leaves(child, (*path, key))
    return out


def members(ann: Any) -> list[Any]:
    if get_origin(ann) is Annotated:
        return members(get_args(ann)[0])
    if get_origin(ann) is Union or type(ann).__name__ == "UnionType":
        return [m for a in get_args(ann) for m in members(a)]
    return [ann]


LEAVES = leaves()
STRING_CHOICES = [
    (p, v) for p, leaf in LEAVES for m in members(leaf.annotation) if get_origin(m) is Literal
    for v in get_args(m) if isinstance(v, str)
]  # fmt: skip
FREE_STRINGS = [p for p, leaf in LEAVES if str in members(leaf.annotation) and p != ("data", "split")]
BOOLS = [p for p, leaf in LEAVES if bool in members(leaf.annotation)]
YAML_11_WORDS = ("off", "on", "yes", "no", "y", "n", "true", "null", "1.5", "123", "0x1f")


def layers(*sets: str, **req: Any):
    return read_layers(RunRequest(model="llama-tiny", strategy="dp1", device="cpu", set_items=sets, **req))


def refusal(*sets: str, **req: Any) -> str:
    with pytest.raises(LlmptError) as e:
        layers(*sets, **req)
    assert "\n" not in e.value.message
    return e.value.message


def config(tmp_path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def nested_yaml(path: tuple[str, ...], value: str) -> str:
    return (
        "".join(f"{'  ' * i}{k}:\n" for i, k in enumerate(path[:-1])) + f"{'  ' * (len(path) - 1)}{path[-1]}: {value}\n"
    )


# ---- typing by the field ---------------------------------------------------------------------------------------


def test_the_schema_covers_every_section():
    assert set(SCHEMA.children) == {"train", "strategy", "data", "model", "seq_len", "training_args"}
    assert len(STRING_CHOICES) > 15 and len(FREE_STRINGS) > 5 and len(BOOLS) > 20


@pytest.mark.parametrize("path,value", STRING_CHOICES, ids=lambda x: ".".join(x) if isinstance(x, tuple) else x)
def test_every_string_choice_stays_a_string_by_set_and_by_config(path, value, tmp_path):
    # `off`, `no`, `O1`… are YAML 1.1 booleans/ints/strings as it pleases; a field that wants the string gets it
    assert layers(f"{'.'.join(path)}={value}").setting(*path).value == value
    assert layers(config_file=config(tmp_path, nested_yaml(path, value))).setting(*path).value == value


@pytest.mark.parametrize("path", FREE_STRINGS, ids=".".join)
def test_a_string_field_keeps_what_was_typed(path, tmp_path):
    optional = type(None) in members(dict(LEAVES)[path].annotation)
    for word in YAML_11_WORDS if not optional else [w for w in YAML_11_WORDS if w != "null"]:
        assert layers(f"{'.'.join(path)}={word}").setting(*path).value == word
        assert layers(config_file=config(tmp_path, nested_yaml(path, word))).setting(*path).value == word


@pytest.mark.parametrize("path", BOOLS, ids=".".join)
def test_a_boolean_field_takes_yaml_and_word_booleans(path):
    for word, want in (("on", True), ("off", False), ("yes", True), ("no", False), ("true", True), ("False", False)):
        assert layers(f"{'.'.join(path)}={word}").setting(*path).value is want


def test_recompute_granularity_off_from_the_issue(tmp_path):
    assert layers("strategy.recompute.granularity=off").section("strategy") == {"recompute": {"granularity": "off"}}
    cfg = config(tmp_path, "strategy:\n  recompute:\n    granularity: off\n")
    assert layers(config_file=cfg).section("strategy")["recompute"]["granularity"] == "off"


def test_a_yaml_boolean_is_never_a_number():
    assert "--set train.save_steps=no: must be an integer >= 0" in refusal("train.save_steps=no")
    assert "--set strategy.batch.grad_accum=on: must be an integer >= 1" in refusal("strategy.batch.grad_accum=on")


# ---- unknown keys and wrong types ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=".".join)
def test_a_misspelt_key_is_refused_with_the_key_it_resembles(path):
    typo = (*path[:-1], path[-1] + "zz")
    msg = refusal(f"{'.'.join(typo)}=1")
    assert msg.startswith(f"--set: unknown key '{'.'.join(typo)}'") and "allowed" in msg, msg
    assert f"did you mean '{'.'.join(path)}'?" in msg, msg


@pytest.mark.parametrize(
    "item,fragments",
    [
        ("trian.max_steps=5", ["unknown key 'trian'", "did you mean 'train'?", "allowed: train, strategy, data"]),
        ("strategy.kernel.flash_attention=false", ["unknown key 'strategy.kernel'", "'strategy.kernels'"]),
        ("train.lr=0.1", ["unknown key 'train.lr'", "allowed under train: max_steps", "learning_rate"]),
        ("strategy.parallel.tp=2", ["--set strategy.parallel: the strategy name says the degrees"]),
        ("strategy.name=tp2", ["--set strategy.name: the strategy is --strategy"]),
        ("data.seq_len=256", ["--set data.seq_len:", "top-level seq_len (or --seq-len)"]),
        ("data.tokenizer_dir=/x", ["--set data.tokenizer_dir:", "manifest"]),
        ("model.hidden_size=64", ["--set model.hidden_size: the architecture is the MODEL argument's"]),
        ("model.hiden=64", ["unknown key 'model.hiden'", "allowed under model: rope_scaling (the architecture is"]),
        ("model.id=llama-7b", ["--set model.id: the model is the MODEL argument"]),
        ("model=llama-7b", ["--set: model: expected a mapping of keys to values (got llama-7b)", "rope_scaling"]),
        ("train=5", ["--set: train: expected a mapping of keys to values (got 5)", "max_steps"]),
    ],
)
def test_keys_that_are_not_settable_are_refused_saying_why(item, fragments):
    msg = refusal(item)
    for f in fragments:
        assert f in msg, msg


def _wrong_value(leaf: Leaf) -> str | None:
    ms = members(leaf.annotation)
    if str in ms or any(get_origin(m) is dict for m in ms):
        return None  # anything can be a string
    if any(get_origin(m) in (list, tuple) for m in ms):
        return "{a: 1}"
    return "[1, 2]" if any(get_origin(m) is Literal for m in ms) else "abc"


WRONG = [(p, w) for p, leaf in LEAVES if (w := _wrong_value(leaf)) is not None]


@pytest.mark.parametrize("path,wrong", WRONG, ids=lambda x: ".".join(x) if isinstance(x, tuple) else x)
def test_a_wrong_type_names_the_key_and_the_type(path, wrong, tmp_path):
    key = ".".join(path)
    msg = refusal(f"{key}={wrong}")
    assert msg.startswith(f"--set {key}=") and ": must be " in msg, msg
    msg = refusal(config_file=config(tmp_path, nested_yaml(path, wrong)))
    assert msg.startswith(f"{tmp_path / 'c.yaml'}: {key}: must be ") and "(got " in msg, msg


@pytest.mark.parametrize(
    "item,expected",
    [
        ("train.learning_rate=fast", "must be a number > 0"),
        ("train.adam_beta1=1", "must be a number > 0 and < 1"),
        ("train.stop_at_step=0", "must be an integer >= 1 or null"),
        ("train.lr_scheduler=cosin", "must be one of cosine, linear; did you mean 'cosine'?"),
        ("strategy.precision.dtype=bf8", "must be one of bf16, fp16, fp32"),
        ("strategy.overlap.sharding=split_param", "must be a list of strings"),
        ("training_args.logging_first_step=maybe", "must be true or false"),
        ("train.optimizer=sgdm", "must be one of adamw, adamw_mini, sgd"),
        ("train.optimizer=adafactor", "must be one of adamw, adamw_mini, sgd"),  # PaddleNLP's Trainer cannot build it
        ("seq_len=4", "must be an integer >= 8"),
    ],
)
def test_what_a_field_allows_is_said_in_words(item, expected):
    assert expected in refusal(item)


# ---- numbers by the flag the user typed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "req,fragment",
    [
        ({"max_steps": 0}, "--max-steps 0: must be an integer >= 1"),
        ({"seq_len": 0}, "--seq-len 0: must be an integer >= 8"),
        ({"save_steps": -1}, "--save-steps -1: must be an integer >= 0"),
        ({"set_items": ("train.max_steps=0",)}, "--set train.max_steps=0: must be an integer >= 1"),
        ({"set_items": ("seq_len=7",)}, "--set seq_len=7: must be an integer >= 8"),
    ],
)
def test_a_number_is_refused_under_the_name_it_was_given(req, fragment):
    with pytest.raises(LlmptError) as e:
        read_layers(RunRequest(model="llama-tiny", strategy="dp1", **req))
    assert e.value.message == fragment


def test_a_config_file_number_names_the_file_and_key(tmp_path):
    cfg = config(tmp_path, "train:\n  warmup_steps: -3\n")
    assert refusal(config_file=cfg) == f"{cfg}: train.warmup_steps: must be an integer >= 0 (got -3)"


@pytest.mark.parametrize(
    "req,fragments",
    [
        (
            {"max_steps": 40, "set_items": ("train.warmup_steps=50",)},
            ["--set train.warmup_steps=50: the warm-up must end before the run does", "--max-steps 40", "0..39"],
        ),
        ({"max_steps": 40, "set_items": ("train.warmup_steps=40",)}, ["warmup_steps=40", "0..39"]),
        (
            {"set_items": ("train.warmup_steps=2000",)},
            ["warmup_steps=2000", "train.max_steps 1000 by default", "0..999"],
        ),
        (
            {"set_items": ("train.learning_rate=1e-4", "train.min_learning_rate=1e-3")},
            ["--set train.min_learning_rate=1e-3: the decay's floor is above the peak", "train.learning_rate=1e-4"],
        ),
        ({"max_steps": 40, "set_items": ("train.stop_at_step=41",)}, ["--set train.stop_at_step=41", "1..40"]),
        ({"max_steps": 40, "save_steps": 50}, ["--save-steps 50: no checkpoint", "--max-steps 40", "0..40"]),
        ({"max_steps": 40, "set_items": ("train.eval_steps=41",)}, ["--set train.eval_steps=41: no evaluation"]),
        ({"max_steps": 4, "set_items": ("train.logging_steps=5",)}, ["--set train.logging_steps=5", "1..4"]),
    ],
)
def test_settings_that_contradict_each_other_are_refused_naming_both(req, fragments):
    with pytest.raises(LlmptError) as e:
        read_layers(RunRequest(model="llama-tiny", strategy="dp1", **req))
    for f in fragments:
        assert f in e.value.message, e.value.message


def test_a_default_yields_to_what_the_user_set_with_a_note():
    short = layers(max_steps=5)
    assert (
        short.train.warmup_steps == 0 and "train.warmup_steps 10 by default contradicts --max-steps 5" in short.notes[0]
    )
    low = layers("train.learning_rate=1e-5")
    assert low.train.min_learning_rate == pytest.approx(1e-6) and "min_learning_rate" in low.notes[0]
    demo = read_layers(RunRequest(max_steps=10))  # the demo's warm-up of 20 steps
    assert demo.train.warmup_steps == 1 and "the demo's default" in demo.notes[0]
    assert layers().notes == [] and layers().train == TrainSettings()


def test_cli_flags_beat_config_and_set_beats_flags(tmp_path):
    cfg = config(tmp_path, "train: {max_steps: 7, seed: 3}\nseq_len: 64\n")
    got = layers("train.max_steps=11", config_file=cfg, max_steps=9, seq_len=96)
    assert (got.train.max_steps, got.train.seed, got.setting("seq_len").value) == (11, 3, 96)
    assert got.origin("train", "max_steps") == "--set train.max_steps"
    assert got.origin("train", "seed") == f"{cfg}: train.seed"
    assert got.origin("seq_len") == "--seq-len"
    assert got.origin("train", "dropout") is None
    assert read_layers(RunRequest()).origin("strategy", "batch", "micro_batch_size") == "the demo's default"


# ---- data.split ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given,kept", [("98,1,1", "98,1,1"), ("[98, 1, 1]", "98,1,1"), ("98/1/1", "98,1,1"),
                                        ("1,0,0", "1,0,0"), ("0.9,0.05,0.05", "0.9,0.05,0.05")])  # fmt: skip
def test_the_split_is_settable(given, kept, tmp_path):
    assert layers(f"data.split={given}").split == kept
    assert layers(config_file=config(tmp_path, f"data:\n  split: {given}\n")).split == kept


@pytest.mark.parametrize(
    "given,fragment",
    [
        ("98,2", "three non-negative weights"),
        ("a,b,c", "three non-negative weights"),
        ("98,-1,3", "three non-negative weights"),
        ("0,5,5", "the train weight (the first) must be > 0"),
        ("0,0,0", "the train weight"),
        ("100", "three non-negative weights"),
    ],
)
def test_a_bad_split_is_refused(given, fragment):
    msg = refusal(f"data.split={given}")
    assert msg.startswith(f"--set data.split={given}: ") and fragment in msg, msg


def test_evaluation_needs_a_validation_part():
    msg = refusal("data.split=98,0,2", "train.eval_steps=10")
    assert (
        msg.startswith("--set data.split=98,0,2: gives the validation part weight 0") and "train.eval_steps=10" in msg
    )
    assert layers("data.split=98,0,2").split == "98,0,2"  # no evaluation, no validation part needed


def test_every_part_the_run_reads_keeps_documents():
    assert split_documents("949,50,1", 1189) == [(0, 1129), (1129, 1188), (1188, 1189)]
    ten = {"p": {"documents": 10}}
    check_split_documents(layers(), ten)  # no evaluation: 9 train documents suffice
    with pytest.raises(LlmptError, match=r"data.split 949,50,1 \(the default\): leaves no validation documents"):
        check_split_documents(layers("train.eval_steps=5"), ten)
    check_split_documents(layers("train.eval_steps=5", "data.split=8,2,0"), ten)
    with pytest.raises(LlmptError, match="--set data.split=1,1000,0: leaves no train documents in --data p"):
        check_split_documents(layers("data.split=1,1000,0"), ten)


# ---- the training_args passthrough -----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy,world", [("dp1", 1), ("tp2sd4_stage2", 8), ("tp2pp2", 4), ("sd8_stage3_rc", 8)])
def test_the_owned_names_are_exactly_what_llmpt_writes(strategy, world):
    s = resolve_strategy(strategy)
    written = run_training_args(expand(s, world), s, TrainSettings(eval_steps=5), "runs/x", "gpu")
    assert set(written) == set(OWNED_TRAINING_ARGS)


def test_every_refused_name_is_a_paddlenlp_field():
    assert set(OWNED_TRAINING_ARGS) | set(MANAGED_TRAINING_ARGS) <= set(TRAINING_ARGUMENTS)
    assert not set(OWNED_TRAINING_ARGS) & set(MANAGED_TRAINING_ARGS)


@pytest.mark.parametrize("name", sorted(OWNED_TRAINING_ARGS))
def test_a_name_llmpt_sets_is_refused_naming_its_owner(name):
    msg = refusal(f"training_args.{name}=1")
    assert msg == f"--set training_args.{name}: llmpt sets it from {OWNED_TRAINING_ARGS[name]}; set that instead"


@pytest.mark.parametrize("name", sorted(MANAGED_TRAINING_ARGS))
def test_a_name_llmpt_decides_or_ignores_is_refused_saying_so(name):
    msg = refusal(f"training_args.{name}=1")
    assert msg.startswith(f"--set training_args.{name}: ")
    assert "llmpt decides it from" in msg or "has no effect in llmpt" in msg


def test_the_passthrough_is_checked_by_name_and_type(tmp_path):
    assert "did you mean 'training_args.adam_epsilon'?" in refusal("training_args.adam_epsilom=1e-6")
    assert "PaddleNLP 3.0.0b4's TrainingArguments" in refusal("training_args.adam_epsilom=1e-6")
    assert refusal("training_args.adam_epsilon=tiny") == "--set training_args.adam_epsilon=tiny: must be a number"
    got = layers("training_args.adam_epsilon=1e-6", "training_args.run_name=on", "training_args.decay_steps=null")
    assert got.training_args == {"adam_epsilon": 1e-6, "run_name": "on", "decay_steps": None}
    cfg = config(tmp_path, "training_args:\n  logging_first_step: yes\n  amp_custom_black_list: [reduce_sum]\n")
    assert layers(config_file=cfg).training_args == {
        "logging_first_step": True,
        "amp_custom_black_list": ["reduce_sum"],
    }


def test_a_passthrough_value_reaches_run_yaml_in_a_dry_run(cli, prefix, tmp_path):
    cfg = config(tmp_path, "training_args:\n  adam_epsilon: 1.0e-6\n")
    r = cli("train", "llama-tiny", "--strategy", "dp1", "--device", "cpu", "--data", prefix, "--dry-run", "--json",
            "--config", cfg, "--set", "training_args.logging_first_step=on", "--set", "train.optimizer=adamw_mini")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    ta = json.loads(r.stdout)["run_config"]["training_args"]
    assert (ta["adam_epsilon"], ta["logging_first_step"], ta["optim"]) == (1e-6, True, "adamw_mini")  # optim: one owner
    assert ta["per_device_train_batch_size"] >= 1  # llmpt's own names untouched


def test_a_refused_passthrough_exits_2_in_one_line(cli, prefix):
    r = cli("train", "llama-tiny", "--strategy", "dp1", "--device", "cpu", "--data", prefix, "--dry-run",
            "--set", "training_args.per_device_train_batch_size=4")  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == (
        "error: --set training_args.per_device_train_batch_size: llmpt sets it from "
        "strategy.batch.micro_batch_size; set that instead"
    )


# ---- --init-from: the seed's schedule and the checkpoint's positions -------------------------------------------


def checkpoint(tmp_path, model: str, **config: Any) -> str:
    d = tmp_path / f"ckpt-{model}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**paddlenlp_config(resolve_model(model), 128), **config}))
    (d / "model_state.pdparams").write_bytes(b"")  # a weights file to find (a dry run does not open it)
    return str(d)


def dry_run(cli, prefix, model: str, *args: str) -> dict:
    r = cli("train", model, "--strategy", "dp1", "--device", "cpu", "--data", prefix, "--dry-run", "--json", *args)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)["run_config"]


def test_continued_pretraining_takes_the_seed_schedule_unless_set(cli, prefix, tmp_path):
    init = checkpoint(tmp_path, "llama-tiny")
    ry = dry_run(cli, prefix, "llama-tiny", "--init-from", init)
    assert {k: ry["train"][k] for k in SEED_CONTINUED_TRAIN} == {
        "learning_rate": 3e-5, "min_learning_rate": 3e-6, "warmup_steps": 30}  # fmt: skip
    assert ry["training_args"]["learning_rate"] == 3e-5 and ry["training_args"]["warmup_steps"] == 30
    assert any("seed configurations' schedule" in n for n in ry["notes"])
    mine = dry_run(cli, prefix, "llama-tiny", "--init-from", init, "--set", "train.learning_rate=1e-4")
    assert (mine["train"]["learning_rate"], mine["train"]["min_learning_rate"]) == (1e-4, 3e-6)
    short = dry_run(cli, prefix, "llama-tiny", "--init-from", init, "--max-steps", "20")
    assert short["train"]["warmup_steps"] == 2  # the seed's 30 yields to a 20-step run, with a note
    scratch = dry_run(cli, prefix, "llama-tiny")
    assert {k: scratch["train"][k] for k in SEED_CONTINUED_TRAIN} == {
        "learning_rate": 3e-4, "min_learning_rate": 3e-5, "warmup_steps": 10}  # fmt: skip
    assert not any("seed" in n for n in scratch["notes"])


def test_learned_positions_bound_the_sequence_length_of_continued_pretraining(cli, prefix, tmp_path):
    init = checkpoint(tmp_path, "gpt-tiny", max_position_embeddings=64)
    r = cli("train", "gpt-tiny", "--strategy", "dp1", "--device", "cpu", "--data", prefix, "--dry-run",
            "--init-from", init, "--seq-len", "128")  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0].startswith("error: --seq-len 128: longer than the 64 positions of the --init-from")
    assert "allowed: 8..64" in r.stderr
    ry = dry_run(cli, prefix, "gpt-tiny", "--init-from", init)  # the default 128 yields to the checkpoint's 64
    assert ry["data"]["seq_len"] == 64 and any("64 learned positions" in n for n in ry["notes"])
    assert dry_run(cli, prefix, "gpt-tiny", "--seq-len", "256")["model"]["config"]["max_position_embeddings"] >= 256


def test_trained_rotary_positions_bound_continued_pretraining_unless_a_rope_scaling_is_set(cli, prefix, tmp_path):
    init = checkpoint(tmp_path, "llama-tiny", max_position_embeddings=64)
    r = cli("train", "llama-tiny", "--strategy", "dp1", "--device", "cpu", "--data", prefix, "--dry-run",
            "--init-from", init, "--seq-len", "128", "-o", tmp_path / "run")  # fmt: skip
    assert r.exit_code == 2 and not (tmp_path / "run").exists()
    (line,) = r.stderr.splitlines()
    assert line.startswith(
        "error: --seq-len 128: longer than the 64 positions the --init-from checkpoint was trained on; allowed: "
        "8..64, or a longer context with a rope scaling (llama's rotary positions past 64 were never trained); hint: "
    )
    assert "--set model.rope_scaling.type=linear --set model.rope_scaling.factor=2" in line
    ry = dry_run(cli, prefix, "llama-tiny", "--init-from", init)  # the default 128 yields to the checkpoint's 64
    assert ry["data"]["seq_len"] == 64 and any("64 trained rotary positions" in n for n in ry["notes"])
    scaled = ("--set", "model.rope_scaling.type=llama3", "--set", "model.rope_scaling.factor=2")
    ry = dry_run(cli, prefix, "llama-tiny", "--init-from", init, "--seq-len", "128", *scaled)
    assert ry["model"]["config"]["max_position_embeddings"] == 128  # the llama3 table covers the sequence
    assert ry["model"]["config"]["rope_scaling"] == {
        "rope_type": "llama3", "factor": 2.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}  # fmt: skip
    # from scratch the positions are the run's own: no bound, the table grows to the sequence
    assert dry_run(cli, prefix, "llama-tiny", "--seq-len", "1024")["model"]["config"]["max_position_embeddings"] == 1024


def test_a_seed_numpy_cannot_take_is_refused_as_given():
    assert refusal(seed=-1) == "--seed -1: must be an integer >= 0 and <= 2147483647"
    assert refusal("train.seed=4294967296").startswith("--set train.seed=4294967296: must be an integer >= 0")


def test_a_dropout_the_modeling_lacks_is_refused_as_given(cli, prefix, tmp_path):
    cfg = config(tmp_path, "train:\n  dropout: 0.1\n")
    r = cli("train", "llama-tiny", "--strategy", "dp1", "--device", "cpu", "--data", prefix, "--dry-run",
            "--config", cfg)  # fmt: skip
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0].startswith(f"error: {cfg}: train.dropout: 0.1: PaddleNLP's llama modeling has no")


def test_data_prefixes_take_one_prefix_or_a_list(tmp_path):
    assert layers("data.prefixes=/data/a").section("data") == {"prefixes": ["/data/a"]}
    cfg = config(tmp_path, "data:\n  prefixes: [/data/a, /data/b]\n")
    assert layers(config_file=cfg).section("data") == {"prefixes": ["/data/a", "/data/b"]}
    assert layers(config_file=cfg, data=("/data/c",)).origin("data", "prefixes") == "--data"
