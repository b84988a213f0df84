"""`llmpt train` up to the launch, without paddle: --dry-run, run.yaml, refusals."""

from __future__ import annotations

import json

import pytest


def test_dry_run_prints_the_launch_and_run_yaml(cli, prefix, tmp_path):
    r = cli(
        "train",
        "llama-tiny",
        "--strategy",
        "dp2",
        "--device",
        "cpu",
        "--data",
        prefix,
        "-o",
        str(tmp_path / "run"),
        "--dry-run",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    cmd = out["command"]
    assert cmd[1:3] == ["-m", "paddle.distributed.launch"]
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2"
    assert cmd[-2].endswith("llmpt/train/entry.py") and cmd[-1] == str(tmp_path / "run" / "run.yaml")
    assert out["schema"] == "llmpt.dry-run/1" and out["run_yaml_path"] == cmd[-1]
    ry = out["run_config"]
    assert ry["device"] == "cpu" and ry["world_size"] == 2
    assert ry["training_args"]["bf16"] is False and ry["training_args"]["use_flash_attention"] is False
    assert ry["data"]["prefixes"] == [prefix]
    assert not (tmp_path / "run").exists()  # a dry run starts and writes nothing


def test_dry_run_text_form(cli, prefix, tmp_path):
    r = cli("train", "llama-tiny", "--strategy", "dp1", "--device", "cpu", "--data", prefix, "--dry-run")
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0].endswith("run.yaml") and "paddle.distributed.launch" in r.stdout
    assert "training_args:" in r.stdout


def test_overrides_layer_in_order(cli, prefix, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {learning_rate: 0.01, max_steps: 7}\nstrategy: {batch: {micro_batch_size: 3}}\n")
    r = cli(
        "train",
        "llama-tiny",
        "--strategy",
        "dp1",
        "--device",
        "cpu",
        "--data",
        prefix,
        "--config",
        str(cfg),
        "--max-steps",
        "9",
        "--set",
        "train.learning_rate=0.02",
        "--dry-run",
        "--json",
    )
    ry = json.loads(r.stdout)["run_config"]
    assert ry["train"]["max_steps"] == 9  # flag beats --config
    assert ry["train"]["learning_rate"] == 0.02  # --set beats --config
    assert ry["training_args"]["per_device_train_batch_size"] == 3


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("--strategy", "sd2_stage2_offload", "--device", "cpu"), "needs sharding offload"),
        (
            ("--strategy", "tp2sd2_stage3", "--device", "cpu"),
            "tensor parallel (tp2) works only with sharding stage 1 or 2",
        ),
        (("--strategy", "sep2", "--device", "cpu"), "needs segment parallel (sep2), which llmpt does not run on CPU"),
        (("--strategy", "dp2", "--device", "cpu", "--gpus", "4"), "needs 2 ranks (dp2) but --gpus 4 gives 4"),
        (
            ("--strategy", "dp1", "--set", "train.learning_rate=-1"),
            "--set train.learning_rate=-1: must be a number > 0",
        ),
        (("--strategy", "dp1", "--set", "train.lr=1"), "unknown key 'train.lr'"),
        (
            ("--strategy", "dp1", "--set", "strategy.batch.micro_batch_size=0"),
            "--set strategy.batch.micro_batch_size=0: must be an integer >= 1",
        ),
        (("--strategy", "dp1", "--set", "novalue"), "expected KEY.PATH=VALUE"),
        (
            ("--strategy", "dp1", "--data", "/nonexistent/prefix"),
            "--data /nonexistent/prefix: /nonexistent/prefix.idx is missing",
        ),
        ((), "--strategy is required"),
    ],
)
def test_refusals_before_launch(cli, prefix, args, fragment):
    # --dry-run: a refusal that stopped refusing must not start a real run from a unit test
    r = (
        cli("train", "llama-tiny", "--data", prefix, "--device", "cpu", "--dry-run", *args)
        if "--data" not in args
        else cli("train", "llama-tiny", "--dry-run", *args)
    )
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert fragment in r.stderr.splitlines()[0], r.stderr


def test_previous_run_needs_resume_or_overwrite(cli, prefix, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.yaml").write_text("x: 1\n")
    r = cli("train", "llama-tiny", "--strategy", "dp1", "--device", "cpu", "--data", prefix, "-o", str(run))
    assert r.exit_code == 2 and "holds a previous run" in r.stderr
    r = cli("train", "llama-tiny", "--strategy", "dp1", "--device", "cpu", "--data", prefix, "-o", str(run), "--resume")
    assert r.exit_code == 2 and "--resume: no complete checkpoint in" in r.stderr
