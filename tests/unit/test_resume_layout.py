"""--resume on another layout, up to the launch (no paddle): what a checkpoint records of the run that saved it, what a
resume checks against it (model, sequence length, global batch, a unified checkpoint when the layout changes), the
refusals and the --set that keeps the global batch; the summary's checkpoint timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmpt.launch.checkpoints import MARKER, mark_complete
from llmpt.launch.summary import checkpoint_line, checkpoint_loads, checkpoint_saves
from llmpt.resolve.resume import SavedRun, batch_that_keeps, is_unified, saved_run, saved_run_record
from llmpt.run_config import RunConfig, write_run_yaml
from llmpt.strategies.parallel_dims import ParallelDims

BATCH_4x2 = ("--set", "strategy.batch.micro_batch_size=4", "--set", "strategy.batch.grad_accum=2")
BATCH_4x1 = ("--set", "strategy.batch.micro_batch_size=4", "--set", "strategy.batch.grad_accum=1")
UNIFIED_FILES = {"model.safetensors.index.json": 40, "model-00001-of-00002.safetensors": 64,
                 "optimizer.safetensors.index.json": 40, "optimizer-00001-of-00002.safetensors": 128,
                 "trainer_state.json": 8}  # fmt: skip
PER_RANK_FILES = {"model_state.pdparams": 64, "optimizer.shard00.pdopt": 128, "optimizer.shard01.pdopt": 128,
                  "trainer_state.json": 8}  # fmt: skip


@pytest.fixture
def train(cli, prefix, tmp_path):
    """`llmpt train llama-tiny … --dry-run --json` into tmp/run: (exit code, run_config or stderr)."""

    def run(*args: str, model: str = "llama-tiny"):
        r = cli("train", model, "--device", "cpu", "--data", prefix, "-o", str(tmp_path / "run"), "--dry-run",
                "--json", *args)  # fmt: skip
        return r.exit_code, (json.loads(r.stdout)["run_config"] if r.exit_code == 0 else r.stderr)

    return run


def _checkpoint(run: Path, step: int, files: dict[str, int], saved: dict | None) -> Path:
    ckpt = run / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    for name, size in files.items():
        (ckpt / name).write_bytes(b"x" * size)
    mark_complete(ckpt, step, saved)
    return ckpt


def saved_by(train, tmp_path, strategy: str, *args: str, files=UNIFIED_FILES, step: int = 4) -> Path:
    """A complete checkpoint-`step` in tmp/run as a `strategy` run with `args` would have saved it."""
    code, cfg = train("--strategy", strategy, *args)
    assert code == 0, cfg
    return _checkpoint(tmp_path / "run", step, files, saved_run_record(RunConfig.model_validate(cfg)))


def refusal(train, *args: str, model: str = "llama-tiny") -> str:
    code, err = train("--resume", *args, model=model)
    assert code == 2, err
    end = json.loads(err.strip().splitlines()[-1])  # --json: the refusal is one llmpt.error/1 object
    assert end["exit_code"] == 2 and "Traceback" not in err
    return f"{end['error']} hint: {end['hint']}"


# --- what a checkpoint records -------------------------------------------------------------------------------


def test_the_marker_records_the_saving_run(train, tmp_path):
    ckpt = saved_by(train, tmp_path, "tp2", *BATCH_4x2)
    record = json.loads((ckpt / MARKER).read_text())["run"]
    assert (record["model"], record["strategy"], record["stage"], record["global_batch"]) == ("llama-tiny", "tp2", 0, 8)
    assert record["degrees"] == {"dp": 1, "tp": 2, "pp": 1, "sharding": 1, "sep": 1, "cp": 1, "ep": 1}
    assert record["model_dims"]["num_hidden_layers"] == 4 and record["seq_len"] == 128
    assert SavedRun.from_dict(record) == saved_run(ckpt)
    assert is_unified(ckpt)


def test_global_batch_counts_every_rank_that_reads_data():
    d = ParallelDims(dp=2, tp=2, sharding=2)
    run = SavedRun("m", {}, "tp2sd2", d, 1, micro_batch_size=4, grad_accum=3, seq_len=128)
    assert run.global_batch == 4 * 3 * 2 * 2 and run.batch_text.endswith("4 data-parallel ranks (dp2 x sd2)")


@pytest.mark.parametrize(
    "global_batch,degrees,micro,expected",
    [
        (8, ParallelDims(dp=2), 4, (4, 1)),  # more devices: the accumulation halves
        (8, ParallelDims(dp=1, pp=2), 4, (4, 2)),
        (8, ParallelDims(dp=4), 3, (2, 1)),  # the largest micro batch up to the current one that divides the share
        (12, ParallelDims(dp=2), 4, (3, 2)),
        (8, ParallelDims(dp=1, sharding=2), 8, (4, 1)),
        (8, ParallelDims(dp=3), 4, None),  # 3 readers cannot share 8 sequences
    ],
)
def test_batch_that_keeps_the_global_batch(global_batch, degrees, micro, expected):
    kept = batch_that_keeps(global_batch, degrees, micro)
    assert kept == expected
    if kept:
        assert kept[0] * kept[1] * degrees.data_degree == global_batch and kept[0] <= micro


# --- resumes that go ahead -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "saved,resumed",
    [
        (("tp2", *BATCH_4x2), ("dp2", *BATCH_4x1)),  # tp -> dp
        (("pp2", *BATCH_4x2), ("dp1", *BATCH_4x2)),  # pp -> dp, fewer devices
        (("sd2_stage1", *BATCH_4x1), ("tp2", *BATCH_4x2)),  # sharding -> tp
        (("dp1", *BATCH_4x2), ("tp2sd2_stage1", *BATCH_4x1)),  # more devices
    ],
)
def test_another_layout_at_the_same_global_batch_goes_ahead_with_a_note(train, tmp_path, saved, resumed):
    ckpt = saved_by(train, tmp_path, *saved)
    code, cfg = train("--resume", "--strategy", *resumed)
    assert code == 0, cfg
    assert cfg["resume_from"] == str(ckpt)
    note = next(n for n in cfg["notes"] if n.startswith("--resume:"))
    assert f"saved by {saved[0]}" in note and f"continuing on {resumed[0]}" in note
    assert "global batch 8 x 128 tokens kept, data continues at sequence 32" in note


def test_the_same_layout_needs_no_unified_checkpoint_and_adds_no_note(train, tmp_path):
    saved_by(train, tmp_path, "sd2_stage3", *BATCH_4x1, files=PER_RANK_FILES)
    code, cfg = train("--resume", "--strategy", "sd2_stage3", *BATCH_4x1)
    assert code == 0, cfg
    assert not any(n.startswith("--resume:") for n in cfg["notes"])


def test_a_checkpoint_from_before_the_record_is_checked_against_the_run_yaml(train, tmp_path):
    code, cfg = train("--strategy", "tp2", *BATCH_4x2)
    write_run_yaml(RunConfig.model_validate(cfg), tmp_path / "run" / "run.yaml")
    _checkpoint(tmp_path / "run", 4, UNIFIED_FILES, None)
    assert "global batch 16" in refusal(train, "--strategy", "dp2", *BATCH_4x2)
    code, cfg = train("--resume", "--strategy", "dp2", *BATCH_4x1)
    assert code == 0 and any("saved by tp2" in n for n in cfg["notes"]), cfg


def test_a_checkpoint_nothing_describes_resumes_unchecked(train, tmp_path):
    _checkpoint(tmp_path / "run", 4, PER_RANK_FILES, None)  # no record, no run.yaml: as llmpt resumed before
    code, cfg = train("--resume", "--strategy", "dp2", *BATCH_4x1)
    assert code == 0, cfg


# --- refusals ------------------------------------------------------------------------------------------------


def test_a_changed_global_batch_is_refused_with_the_set_that_keeps_it(train, tmp_path):
    saved_by(train, tmp_path, "tp2", *BATCH_4x2)
    err = refusal(train, "--strategy", "dp2", *BATCH_4x2)  # more devices, the same micro batch and accumulation
    assert "--resume --strategy dp2: global batch 16 sequences per step (micro batch 4 x accumulation 2 x 2 " in err
    assert "checkpoint-4 (saved by llama-tiny on tp2) was trained with 8 (micro batch 4 x accumulation 2 x 1 " in err
    assert "hint: keep it with --set strategy.batch.micro_batch_size=4 --set strategy.batch.grad_accum=1" in err
    assert f"--init-from {tmp_path / 'run' / 'checkpoint-4'}" in err


def test_a_changed_global_batch_on_a_per_rank_checkpoint_offers_no_init_from(train, tmp_path):
    saved_by(train, tmp_path, "tp2", *BATCH_4x2, files=PER_RANK_FILES)
    err = refusal(train, "--strategy", "tp2", *BATCH_4x1)
    assert err.endswith("hint: keep it with --set strategy.batch.micro_batch_size=4 --set strategy.batch.grad_accum=2")


def test_a_global_batch_no_split_keeps_is_refused_naming_the_rule(train, tmp_path):
    saved_by(train, tmp_path, "tp2", *BATCH_4x2)
    err = refusal(train, "--strategy", "dp3", *BATCH_4x1)
    assert (
        "global batch 12" in err and "no micro batch x accumulation on dp3 (3 data-parallel ranks (dp3)) makes 8" in err
    )


def test_a_per_rank_checkpoint_does_not_move(train, tmp_path):
    saved_by(train, tmp_path, "sd2_stage3", *BATCH_4x1, files=PER_RANK_FILES)
    err = refusal(train, "--strategy", "tp2", *BATCH_4x2)
    assert "checkpoint-4 (saved by llama-tiny on sd2_stage3) was saved per rank, not as a unified checkpoint" in err
    assert "PaddleNLP writes no unified checkpoint under sharding stage 3" in err
    assert "hint: resume with --strategy sd2_stage3; under sharding stage 3 every checkpoint stays on its layout" in err
    # more devices and another global batch too: the layout is what cannot change, so that is what is said
    assert "saved per rank" in refusal(train, "--strategy", "sd4_stage3", "--gpus", "4", *BATCH_4x1)


def test_an_old_per_rank_checkpoint_does_not_move(train, tmp_path):
    saved_by(train, tmp_path, "tp2", *BATCH_4x2, files=PER_RANK_FILES)
    err = refusal(train, "--strategy", "dp2", *BATCH_4x1)
    assert (
        "predates llmpt's unified checkpoints" in err
        and "hint: resume with --strategy tp2; its next ones can move" in err
    )


def test_another_model_is_refused(train, tmp_path):
    saved_by(train, tmp_path, "dp1", *BATCH_4x2)
    err = refusal(train, "--strategy", "dp1", *BATCH_4x2, model="qwen-tiny")
    assert "--resume: checkpoint-4 (saved by llama-tiny on dp1) holds llama-tiny, not qwen-tiny" in err


def test_another_shape_is_refused_naming_the_first_difference(train, tmp_path):
    code, cfg = train("--strategy", "dp1", *BATCH_4x2)
    saved = SavedRun.of(RunConfig.model_validate(cfg))
    dims = {**saved.model_dims, "num_hidden_layers": 2}
    record = {**saved.to_dict(), "model_dims": dims, "init_from": "/w/two-layers"}
    _checkpoint(tmp_path / "run", 4, UNIFIED_FILES, record)
    err = refusal(train, "--strategy", "dp1", *BATCH_4x2)
    assert "holds a model with num_hidden_layers 2; this run builds 4" in err
    assert "hint: resume with the model settings of the run that saved it (--init-from /w/two-layers)" in err


def test_another_sequence_length_is_refused(train, tmp_path):
    saved_by(train, tmp_path, "dp1", *BATCH_4x2)
    err = refusal(train, "--strategy", "dp1", *BATCH_4x2, "--seq-len", "64")
    assert "--resume --seq-len 64: checkpoint-4 (saved by llama-tiny on dp1) was trained on 128-token sequences" in err
    assert "hint: resume with --seq-len 128" in err


def test_the_newest_complete_checkpoint_is_the_one_checked(train, tmp_path):
    saved_by(train, tmp_path, "dp1", *BATCH_4x2, step=4)
    saved_by(train, tmp_path, "tp2", *BATCH_4x2, step=8, files=PER_RANK_FILES)
    assert "saved by llama-tiny on tp2" in refusal(train, "--strategy", "dp2", *BATCH_4x1)


# --- the summary's checkpoint timings -------------------------------------------------------------------------

RECORDS = [
    {"event": "begin", "step": 0, "t": 0.0},
    {"event": "checkpoint_save", "step": 4, "seconds": 0.5, "bytes": 3 * 2**20, "t": 1.0},
    {"event": "checkpoint_save", "step": 8, "seconds": 0.9, "bytes": 3 * 2**20, "t": 2.0},
    {"event": "begin", "step": 4, "t": 3.0},  # a resumed attempt: its save of step 8 replaces the first one's
    {"event": "checkpoint_load", "step": 4, "checkpoint": "checkpoint-4", "saved_by": "tp2", "seconds": 1.25,
     "model_seconds": 0.5, "optimizer_seconds": 0.75, "bytes": 3 * 2**20, "t": 3.5},
    {"event": "checkpoint_save", "step": 8, "seconds": 0.7, "bytes": 4 * 2**20, "t": 4.0},
]  # fmt: skip


def test_saves_by_step_and_loads_in_order():
    assert checkpoint_saves(RECORDS) == [
        {"step": 4, "seconds": 0.5, "bytes": 3 * 2**20},
        {"step": 8, "seconds": 0.7, "bytes": 4 * 2**20},
    ]
    assert checkpoint_loads(RECORDS) == [
        {"step": 4, "checkpoint": "checkpoint-4", "saved_by": "tp2", "seconds": 1.25, "model_seconds": 0.5,
         "optimizer_seconds": 0.75, "bytes": 3 * 2**20}
    ]  # fmt: skip
    assert checkpoint_saves([]) == [] and checkpoint_loads([]) == []


def test_the_text_summary_line():
    line = checkpoint_line(
        {"checkpoint_saves": checkpoint_saves(RECORDS), "checkpoint_loads": checkpoint_loads(RECORDS)}
    )
    assert line == (
        "checkpoints: 2 saved (step 4, 8), 3.0 MiB..4.0 MiB each, 0.60 s mean, 0.70 s max (step 8); resumed from "
        "checkpoint-4 (saved by tp2) in 1.25 s (weights 0.50 s, optimizer 0.75 s, 3.0 MiB)"
    )
    assert checkpoint_line({"checkpoint_saves": [], "checkpoint_loads": []}) is None
