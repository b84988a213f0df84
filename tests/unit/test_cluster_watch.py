"""The supervisor's pure parts for a cluster (llmpt/launch/hang.py, state.py, status.py, llmpt/cli/progress.py), on
run directories written here with real processes standing in for ranks (a `sleep`, stopped with SIGSTOP where a
test needs a stopped rank). The real signals on real ranks: tests/integration/test_reliability.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from llmpt.cli.progress import PlainLines, plain_line, snapshot, this_attempt
from llmpt.launch.hang import HangWatch, kernel_state
from llmpt.launch.state import finished_at, nothing_left, read_state, write_state
from llmpt.launch.status import run_status
from llmpt.run_dir import RunDir


@pytest.fixture
def sleepers():
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait()


def ranks(out: Path, pids: list[int], progress: dict[int, tuple[int, str, float]]) -> RunDir:
    """A run directory whose rank N runs as pids[N] on this host, with progress (step, phase, seconds ago)."""
    run = RunDir(out)
    run.ranks.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for n, pid in enumerate(pids):
        run.rank_pid(n).write_text(f"{pid} {socket.gethostname()}")
    for n, (step, phase, ago) in progress.items():
        run.rank_progress(n).write_text(json.dumps({"step": step, "phase": phase, "t": now - ago}))
    return run


def test_no_hang_while_loading_or_within_the_timeout_or_when_off(tmp_path, sleepers):
    run = ranks(tmp_path, sleepers[:2], {0: (0, "starting", 500), 1: (0, "starting", 500)})
    assert HangWatch(run, 60).check() is None  # loading weights, building the data index: not timed
    run = ranks(tmp_path, sleepers[:2], {0: (5, "training", 10), 1: (5, "training", 10)})
    assert HangWatch(run, 60).check() is None
    assert HangWatch(run, 0).check() is None  # train.hang_timeout_s=0: never


def test_the_rank_behind_is_named_and_the_others_wait(tmp_path, sleepers):
    run = ranks(tmp_path, sleepers[:3], {0: (7, "training", 70), 1: (6, "training", 90), 2: (7, "training", 70)})
    hang = HangWatch(run, 60).check()
    assert hang.stalled == ["1"] and hang.why["1"] == "last finished step 6"
    assert hang.describe() == (
        "no progress for 90 s: rank 1 (last finished step 6); rank 0 waits after step 7, rank 2 waits after step 7"
    )


def test_a_stopped_process_is_named_whatever_its_step(tmp_path, sleepers):
    os.kill(sleepers[0], signal.SIGSTOP)
    deadline = time.time() + 5
    while kernel_state(sleepers[0]) != "T" and time.time() < deadline:
        time.sleep(0.01)
    run = ranks(tmp_path, sleepers[:2], {0: (9, "training", 70), 1: (8, "training", 70)})
    hang = HangWatch(run, 60).check()
    assert hang.stalled == ["0"] and hang.why["0"] == f"process {sleepers[0]} stopped"


def test_all_equal_means_all_named_and_a_finished_rank_is_not_timed(tmp_path, sleepers):
    run = ranks(tmp_path, sleepers[:3], {0: (4, "training", 70), 1: (4, "saving", 70), 2: (9, "training", 900)})
    run.rank_report(2).write_text("{}")  # rank 2 finished: its old progress is not a hang
    hang = HangWatch(run, 60).check()
    assert hang.stalled == ["0", "1"]
    assert hang.why == {"0": "last finished step 4", "1": "last saving a checkpoint at step 4"}


def test_a_rank_that_never_reported_is_timed_from_the_first_that_did(tmp_path, sleepers):
    run = ranks(tmp_path, sleepers[:2], {0: (1, "training", 100)})
    hang = HangWatch(run, 60).check()
    assert hang.stalled == ["1"] and hang.why == {"1": "never started training"} and 99 < hang.seconds < 102


def test_state_records_and_what_a_resume_has_left(tmp_path):
    assert read_state(tmp_path) is None and finished_at(tmp_path) is None
    write_state(tmp_path, "running", max_steps=20)
    assert read_state(tmp_path)["state"] == "running" and finished_at(tmp_path) is None
    assert nothing_left(tmp_path, str(tmp_path / "checkpoint-16"), 20) is None
    # without a finished record, a checkpoint at max_steps is enough (PaddleNLP would take one more step)
    assert "checkpoint-20 is at step 20, max_steps is 20" in nothing_left(tmp_path, str(tmp_path / "checkpoint-20"), 20)
    write_state(tmp_path, "finished", max_steps=20, step=20)
    assert finished_at(tmp_path) == 20
    assert "finished at step 20 (max_steps 20); nothing to train" in nothing_left(tmp_path, None, 20)
    assert nothing_left(tmp_path, str(tmp_path / "checkpoint-20"), 25) is None  # raised: steps 21..25 to train
    with pytest.raises(AssertionError):
        write_state(tmp_path, "bogus")
    (tmp_path / "state.json").write_text("{not json")
    assert read_state(tmp_path) is None


def test_status_reads_any_run_and_a_vanished_supervisor_is_lost(tmp_path, sleepers):
    run = ranks(tmp_path, sleepers[:2], {0: (3, "training", 1), 1: (3, "training", 1)})
    run.run_yaml.write_text("model: {id: llama-tiny}\nstrategy: {name: dp2}\ntrain: {max_steps: 20}\n")
    run.metrics.write_text(
        json.dumps({"event": "begin", "step": 0, "t": time.time() - 5}) + "\n"
        + "".join(json.dumps({"event": "step", "step": s, "t": time.time() - 5 + s}) + "\n" for s in (1, 2, 3))
        + json.dumps({"event": "log", "step": 3, "loss": 7.25, "learning_rate": 1e-3, "t": time.time()}) + "\n"
    )  # fmt: skip
    ckpt = run.checkpoint(2)
    ckpt.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_state(run.root, "running", max_steps=20)
    state = json.loads(run.state.read_text())
    run.state.write_text(json.dumps({**state, "pid": dead.pid}))  # the supervisor, killed by SIGKILL
    s = run_status(run.root)
    assert (s["model"], s["strategy"], s["state"], s["step"], s["max_steps"], s["last_loss"]) == (
        "llama-tiny", "dp2", "lost", 3, 20, 7.25,
    )  # fmt: skip
    assert [(r["rank"], r["process"], r["step"]) for r in s["ranks"]] == [(0, "running", 3), (1, "running", 3)]
    assert s["checkpoints"] == [{"step": 2, "path": str(ckpt), "complete": False}]  # no completion marker


def test_plain_lines_first_every_nth_or_by_time_and_last():
    clock = [0.0]
    lines = PlainLines(max_steps=25, every_steps=10, every_s=30.0, now=lambda: clock[0])
    printed = []
    for step in range(1, 26):
        clock[0] += 1.0 if step < 15 else 20.0  # later steps are slow: the 30 s cadence takes over
        if lines.due(step):
            printed.append(step)
    assert printed == [1, 11, 16, 18, 20, 22, 24, 25]
    assert not lines.due(25)  # printed once


def test_a_resumed_attempt_shows_its_own_steps_only():
    old = [{"event": "begin", "step": 0, "t": 100.0}, {"event": "step", "step": 1, "t": 101.0}]
    new = [
        {"event": "begin", "step": 20, "t": 500.0},
        {"event": "step", "step": 21, "t": 502.0},
        {"event": "log", "step": 21, "loss": 6.5, "learning_rate": 2e-4, "t": 502.0},
    ]
    assert this_attempt(old, since=400.0) == []
    records = this_attempt(old + new, since=400.0)
    snap = snapshot(records, max_steps=25, tokens_per_step=1000)
    assert snap == {"step": 21, "loss": 6.5, "learning_rate": 2e-4, "tokens_per_sec": 500.0, "eta_s": 8.0}
    assert plain_line(snap, 25) == "step 21/25 · loss 6.5000 · lr 2.00e-04 · 500 tok/s · ETA 8s"
