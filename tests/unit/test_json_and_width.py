"""Machine-readable and pipe-safe everywhere: every command's --json output is one object named by a schema of
llmpt/schemas.py; with --json an error is one JSON object on stderr (same exit code); at 80 columns no table cuts
an id; every command that prints ends quietly (141) when its reader has gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmpt import schemas
from llmpt.errors import ExitCode
from llmpt.models.registry import all_models
from llmpt.strategies.presets import list_presets


def _doc(r) -> dict:
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert isinstance(doc, dict) and doc["schema"] in schemas.ALL, doc
    assert next(iter(doc)) == "schema"  # first, so that `head -3` shows what the document is
    return doc


TRAIN = ("llama-tiny", "--strategy", "dp2", "--device", "cpu")


def test_every_command_prints_a_named_json_object(cli, prefix, tmp_path, monkeypatch):
    f = tmp_path / "tp2.yaml"
    f.write_text("batch:\n  micro_batch_size: 2\n")
    expected = {
        ("presets", "list"): schemas.PRESETS,
        ("presets", "show", "tp2sd4_stage2"): schemas.STRATEGY,
        ("presets", "validate", str(f)): schemas.STRATEGY_CHECK,
        ("models", "list"): schemas.MODELS,
        ("models", "show", "llama-tiny"): schemas.MODEL,
        ("matrix",): schemas.MATRIX,
        ("matrix", "--model", "qwen-7b"): schemas.MATRIX,
        ("matrix", "--strategy", "tp2sd4_stage2"): schemas.MATRIX,
        ("plan", "qwen-7b", "--strategy", "tp2sd4_stage2", "--gpus", "8"): schemas.PLAN,
        ("train", *TRAIN, "--data", prefix, "-o", str(tmp_path / "run"), "--dry-run"): schemas.DRY_RUN,
        ("launch-script", *TRAIN, "--gpus", "1", "--nnodes", "2", "--slurm", "--data", prefix,
         "-o", str(tmp_path / "cluster")): schemas.LAUNCH_SCRIPT,
    }  # fmt: skip
    for argv, schema in expected.items():
        assert _doc(cli(*argv, "--json"))["schema"] == schema, argv
    assert [p["name"] for p in _doc(cli("presets", "list", "--json"))["presets"]] == list_presets()
    assert [m["id"] for m in _doc(cli("models", "list", "--json"))["models"]] == [m.id for m in all_models()]


def test_doctor_and_rehearse_print_named_json(cli, monkeypatch):
    """The commands that start processes, with those processes replaced by what they report."""
    import llmpt.doctor
    import llmpt.rehearse
    from llmpt.rehearse import Rehearsal, Stage

    facts = json.loads((Path(__file__).parent / "doctor_facts" / "a100_paddle3.json").read_text())
    monkeypatch.setattr(llmpt.doctor, "collect", lambda out_dir: (facts, None))
    r = cli("doctor", "--json")
    assert json.loads(r.stdout)["schema"] == schemas.DOCTOR and r.exit_code in (0, 1)
    done = Rehearsal("qwen/qwen-7b", "tp2", 2, [Stage("plan", True, "2 ranks")])
    monkeypatch.setattr(llmpt.rehearse, "rehearse", lambda *a, **k: done)
    assert _doc(cli("rehearse", "qwen-7b", "--strategy", "tp2", "--json"))["schema"] == schemas.REHEARSAL


def test_plan_dry_run_and_launch_script_say_one_name_per_concept(cli, prefix, tmp_path):
    plan = _doc(cli("plan", "llama-tiny", "--strategy", "dp2", "--device", "cpu", "--json"))
    dry = _doc(cli("train", *TRAIN, "--data", prefix, "-o", str(tmp_path / "run"), "--dry-run", "--json"))
    out = tmp_path / "cluster"
    ls = _doc(cli("launch-script", *TRAIN, "--gpus", "1", "--nnodes", "2", "--k8s", "--data", prefix, "-o", str(out),
                  "--json"))  # fmt: skip
    assert "launch_command" not in plan and "run_yaml" not in dry and "run_yaml" not in ls and "script" not in ls
    assert plan["command"][1:3] == dry["command"][1:3] == ["-m", "paddle.distributed.launch"]
    assert dry["command"][-1] == dry["run_yaml_path"] == str(tmp_path / "run" / "run.yaml")
    assert ls["run_yaml_path"] == str(out / "run.yaml") and Path(ls["script_path"]).is_file()
    assert (plan["world_size"], dry["run_config"]["world_size"]) == (2, 2)
    assert (ls["world_size"], ls["nnodes"], ls["nproc_per_node"], ls["output_dir"]) == (2, 2, 1, str(out))


REFUSALS = [
    ("presets", "show", "tp2sd4_stag2"),
    ("presets", "list", "extra"),
    ("models", "show", "llama-8b"),
    ("matrix", "--cells", "dp"),
    ("plan", "qwen-7b", "--strategy", "tp2sd4_stage2", "--gpus", "4"),
    ("plan", "qwen-7b", "--bogus"),
    ("train", "llama-tiny", "--strategy", "dp1", "--device", "cpu", "--max-steps", "0"),
    ("prepare-data", "/nonexistent/corpus.jsonl", "-o", "/nonexistent/out"),
    ("rehearse", "mixtral-8x7b", "--strategy", "pp2"),  # mixtral has no pipeline class
    ("doctor", "-o", "/proc/llmpt-test"),
    ("launch-script", "llama-tiny", "--strategy", "dp2", "--nnodes", "2"),
    ("run-node", "/nonexistent/run.yaml"),
]


@pytest.mark.parametrize("argv", REFUSALS, ids=[" ".join(a[:2]) for a in REFUSALS])
def test_with_json_an_error_is_one_json_object_on_stderr(cli, argv):
    plain, as_json = cli(*argv), cli(*argv, "--json")
    assert plain.exit_code == as_json.exit_code == ExitCode.BAD_INPUT
    assert as_json.stdout == "" and as_json.stderr.count("\n") == 1
    err = json.loads(as_json.stderr)
    assert err["schema"] == schemas.ERROR and err["exit_code"] == ExitCode.BAD_INPUT
    assert set(err) == {"schema", "kind", "error", "hint", "exit_code", "warnings"}
    # the same words as the plain line: `error: <error>; hint: <hint>`
    said = "error: " + err["error"] + (f"; hint: {err['hint']}" if err["hint"] else "")
    assert plain.stderr.strip() == said


def test_json_errors_keep_the_exit_code_of_their_kind():
    from llmpt.cli._common import json_ending
    from llmpt.errors import TrainingFailed, ending

    end = ending(TrainingFailed("training failed: rank 1 was killed by SIGKILL\n    last line", "--resume"))
    assert json_ending(end, ["w"]) == {
        "schema": schemas.ERROR, "kind": "run failed", "error": "training failed: rank 1 was killed by SIGKILL\n    "
        "last line", "hint": "--resume", "exit_code": 1, "warnings": ["w"],
    }  # fmt: skip
    assert json_ending(ending(KeyboardInterrupt()), []) is None  # Ctrl-C and a closed pipe print nothing


def test_json_is_asked_for_anywhere_before_a_double_dash():
    from llmpt.cli._common import wants_json

    assert wants_json(["plan", "--json", "x"]) and wants_json(["--json"])
    assert not wants_json(["plan", "x"]) and not wants_json(["run-node", "--", "--json"])


# ---- 80 columns --------------------------------------------------------------------------------------------------


def _at_80(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "80", "LLMPT_NO_DETECT": "1"}
    r = subprocess.run([sys.executable, "-m", "llmpt.cli", *args], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout, r.stdout  # nothing cut short
    assert _table_width(r.stdout) <= 80
    return r.stdout


def _table_width(text: str) -> int:
    """The widest line drawn as a table or panel (prose lines are soft-wrapped by the terminal itself)."""
    return max((len(line) for line in text.splitlines() if set(line) & set("│┃━─╭╰┏┗┡└")), default=0)


def _words(text: str) -> set[str]:
    return {w.strip("│┃|,") for line in text.splitlines() for w in line.split()}


def test_models_list_at_80_columns_shows_every_id_whole():
    words = _words(_at_80("models", "list"))
    assert not [m.id for m in all_models() if m.id not in words]


def test_presets_list_at_80_columns_shows_every_name_whole():
    words = _words(_at_80("presets", "list"))
    assert not [n for n in list_presets() if n not in words]


def test_matrix_at_80_columns_shows_every_row_whole():
    from llmpt.models.matrix import load_matrix

    out = _at_80("matrix")
    assert not [r.name for r in load_matrix().rows if r.name not in out]
    _at_80("matrix", "--model", "meta-llama/Llama-2-13b-chat")
    out = _at_80("matrix", "--strategy", "tp2sd4_stage2")
    assert not [r.name for r in load_matrix().rows if r.name not in out]


def test_plan_at_80_columns_shows_the_model_and_every_setting_whole():
    out = _at_80("plan", "meta-llama/Llama-2-13b-chat", "--strategy", "tp2sd4_stage2", "--gpus", "8")
    words = _words(out)
    assert "meta-llama/Llama-2-13b-chat" in words and "tp2sd4_stage2" in words
    for setting in ("precision.amp_level", "batch.micro_batch_size", "recompute.granularity"):
        assert setting in words


def test_a_table_too_wide_is_stacked_not_cut():
    import io

    from rich.console import Console
    from rich.table import Table

    from llmpt.cli._common import print_table, table_fits

    table = Table(title="runs")
    for col in ("model", "seq len", "strategy", "tokens/card/s", "MFU", "memory (MB)", "final loss"):
        table.add_column(col, no_wrap=True)
    table.add_row("meta-llama/Llama-2-13b-chat", "4096", "tp2sd4_stage2_rc", "1234.56", "41.0%", "61234", "2.3456")
    assert table_fits(table, 200) and not table_fits(table, 80)
    out = Console(width=80, file=io.StringIO(), color_system=None)
    print_table(table, out)
    text = out.file.getvalue()
    assert "…" not in text and max(map(len, text.splitlines())) <= 80  # stacked: every line wrapped by rich
    assert text.splitlines()[1] == "meta-llama/Llama-2-13b-chat"
    assert "strategy: tp2sd4_stage2_rc" in text and "final loss: 2.3456" in text


def test_the_train_summary_at_80_columns(monkeypatch):
    import io

    from rich.console import Console

    import llmpt.cli._common as common
    import llmpt.cli.train as train

    out = Console(width=80, file=io.StringIO(), color_system=None)
    monkeypatch.setattr(common, "console", out)
    monkeypatch.setattr(train, "console", out)
    summary = {
        "model": "meta-llama/Llama-2-13b-chat", "seq_len": 4096, "strategy": "tp2sd4_stage2_rc",
        "tokens_per_card_per_sec": 1234.5, "mfu": 0.41, "peak_memory_mb": 61234.0, "final_loss": 2.3456,
        "losses": [{"step": 1, "loss": 7.6}, {"step": 2, "loss": 4.6}], "peak_memory_kind": "peak allocated",
        "throughput_window": [2, 2],
    }  # fmt: skip
    train._print_summary(summary, "runs/x")
    text = out.file.getvalue()
    assert "meta-llama/Llama-2-13b-chat" in _words(text) and "tp2sd4_stage2_rc" in _words(text)
    assert "…" not in text and _table_width(text) <= 80
    assert "final loss: 2.3456" in text


# ---- a closed pipe, every command that prints --------------------------------------------------------------------

PRINTING = [
    ("presets", "list"),
    ("presets", "list", "--json"),
    ("models", "list"),
    ("models", "show", "qwen-7b", "--json"),
    ("matrix",),
    ("matrix", "--json"),
    ("plan", "qwen-7b", "--strategy", "tp2sd4_stage2", "--gpus", "8"),  # rich
    ("plan", "qwen-7b", "--strategy", "tp2sd4_stage2", "--gpus", "8", "--json"),  # print_json
    ("presets", "show", "tp2"),  # typer.echo
    ("--version",),
    ("--help",),  # printed while the command line is parsed
    ("plan", "--help"),
]


@pytest.mark.parametrize("args", PRINTING, ids=[" ".join(a) for a in PRINTING])
def test_every_printing_command_exits_141_quietly_on_a_closed_pipe(args):
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "llmpt.cli", *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write_end)
    assert (r.returncode, r.stderr) == (ExitCode.OUTPUT_CLOSED, "")
