"""`llmpt presets …` and `llmpt plan …` through the real Typer app: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest

from llmpt.strategies.presets import list_presets


def _one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert len(lines) == 1, result.stderr  # what was given, what is allowed and the fix, on one line
    return lines[0].split("; hint: ")[0]


def test_presets_list_json_covers_1_to_64_devices(cli):
    r = cli("presets", "list", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["schema"] == "llmpt.presets/1"
    rows = out["presets"]
    assert [row["name"] for row in rows] == list_presets()
    assert {row["min_ranks"] for row in rows} >= {1, 2, 4, 8, 16, 32, 64}
    seed = {row["name"]: row for row in rows}["tp2sd4_stage2"]
    assert (seed["tp"], seed["sharding"], seed["stage"], seed["micro_batch_size"], seed["grad_accum"]) == (
        2,
        4,
        2,
        2,
        8,
    )


def test_presets_list_table(cli):
    r = cli("presets", "list")
    assert r.exit_code == 0
    assert "tp2sd4_stage2" in r.stdout and "sd64_stage3_rc" in r.stdout


def test_presets_show_json_is_the_resolved_strategy(cli):
    r = cli("presets", "show", "sd8_stage2", "--json")
    assert r.exit_code == 0
    s = json.loads(r.stdout)
    assert s["parallel"]["sharding"] == 8 and s["parallel"]["stage"] == 2
    assert s["recompute"]["granularity"] == "full"
    assert s["precision"] == {"dtype": "bf16", "amp_level": "O2", "master_grad": False}


def test_presets_show_unknown_suggests(cli):
    r = cli("presets", "show", "tp2sd4_stag2")
    assert r.exit_code == 2
    assert _one_error_line(r) == "error: unknown strategy 'tp2sd4_stag2'. Did you mean 'tp2sd4_stage2'?"


def test_presets_validate_ok_and_json(cli, tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("name: tp4pp2_rc\nbatch: {micro_batch_size: 1, grad_accum: 32}\nprecision: {dtype: bf16}\n")
    r = cli("presets", "validate", str(f), "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["valid"] and out["strategy"]["name"] == "tp4pp2_rc"
    assert out["strategy"]["batch"]["grad_accum"] == 32


@pytest.mark.parametrize(
    "content,expected",
    [
        (
            "name: tp2\nbatch: {micro_batch_size: 0}\n",
            "mine.yaml: batch.micro_batch_size: input should be greater than",
        ),
        ("name: tp2\nbatch: [1, 2\n", "mine.yaml: line 3: not valid YAML"),
        ("- 1\n- 2\n", "mine.yaml: expected a mapping"),
        ("name: tp2\nkernels: {flash: true}\n", "mine.yaml: unknown key 'kernels.flash'"),
        ("name: tp2pp2sd2_stage3\n", "pipeline parallel (pp2) works only with sharding stage 1"),
        ("name: tp2sd4_stag2\n", "mine.yaml: 'tp2sd4_stag2' is not a strategy name"),
        ("name: 7\n", "mine.yaml: name: must be a strategy name string"),
    ],
)
def test_presets_validate_refusals(cli, tmp_path, content, expected):
    f = tmp_path / "mine.yaml"
    f.write_text(content)
    r = cli("presets", "validate", str(f))
    assert r.exit_code == 2
    assert expected in _one_error_line(r)


def test_presets_validate_missing_file(cli, tmp_path):
    r = cli("presets", "validate", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 2
    assert "nope.yaml: no such file" in _one_error_line(r)


def test_plan_json_issue_example(cli):
    r = cli("plan", "qwen-7b", "--strategy", "tp2sd4_stage2", "--gpus", "8", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    hc = out["hybrid_configs"]
    assert (hc["mp_degree"], hc["sharding_degree"], hc["dp_degree"], hc["pp_degree"]) == (2, 4, 1, 1)
    assert out["world_size"] == 8
    assert out["training_args"]["sharding"] == "stage2"
    assert out["training_args"]["tensor_parallel_degree"] == 2
    assert out["schema"] == "llmpt.plan/1" and "launch_command" not in out  # one name: `command`, as in --dry-run
    cmd = out["command"]
    assert cmd[1:3] == ["-m", "paddle.distributed.launch"]
    assert cmd[cmd.index("--devices") + 1] == "0,1,2,3,4,5,6,7"
    assert cmd[-1].endswith("run.yaml")


def test_plan_wrong_world_size_is_refused_with_hint(cli):
    r = cli("plan", "qwen-7b", "--strategy", "tp2sd4_stage2", "--gpus", "4")
    assert r.exit_code == 2
    line = _one_error_line(r)
    assert line == "error: strategy tp2sd4_stage2 needs a multiple of 8 ranks (tp2 x sd4) but --gpus 4 gives 4"
    assert "hint: use tp2sd2_stage2, or pass 8 devices" in r.stderr


def test_plan_device_list_and_multinode(cli):
    r = cli(
        "plan",
        "llama2-70b",
        "--strategy",
        "tp8sd2_stage1",
        "--gpus",
        "0,1,2,3,4,5,6,7",
        "--nnodes",
        "2",
        "--master",
        "10.0.0.1:8090",
        "--node-rank",
        "1",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["world_size"] == 16 and out["degrees"]["sharding"] == 2
    cmd = out["command"]
    assert cmd[cmd.index("--nnodes") + 1] == "2" and cmd[cmd.index("--master") + 1] == "10.0.0.1:8090"
    assert cmd[cmd.index("--rank") + 1] == "1"


@pytest.mark.parametrize(
    "args,expected",
    [
        (("--gpus", "0,1,x"), "--gpus '0,1,x': expected a device count"),
        (("--gpus", "0"), "--gpus 0: need at least one device"),
        (("--gpus", "0,0"), "--gpus 0,0: device ids repeat"),
        (("--gpus", "8", "--nnodes", "2"), "--nnodes 2 needs --master HOST:PORT"),
        (("--gpus", "8", "--nnodes", "2", "--master", "host"), "--master 'host': expected HOST:PORT"),
        (("--gpus", "8", "--nnodes", "2", "--master", "h:1", "--node-rank", "2"), "--node-rank 2: must be in 0..1"),
    ],
)
def test_plan_bad_topology(cli, args, expected):
    r = cli("plan", "llama2-70b", "--strategy", "dp8", *args)
    assert r.exit_code == 2
    assert expected in _one_error_line(r)


def test_plan_refusal_for_cross_axis_rule(cli):
    r = cli("plan", "llama2-70b", "--strategy", "dp8_sp", "--gpus", "8")
    assert r.exit_code == 2
    assert "sequence parallel (_sp) needs tensor parallel tp > 1" in _one_error_line(r)


def test_plan_warns_when_an_option_has_no_effect(cli, tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("name: dp2\noverlap: {sharding: [enable_stage1_overlap]}\n")
    r = cli("plan", "llama2-70b", "--strategy", str(f), "--gpus", "2")
    assert r.exit_code == 0
    assert "warning: strategy dp2: overlap.sharding (enable_stage1_overlap) has no effect" in r.stderr
