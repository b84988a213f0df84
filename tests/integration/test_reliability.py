"""Failures of a running job, for real: a rank killed with SIGKILL, Ctrl-C, a save cut short; then --resume.

One uninterrupted 20-step dp2 run is the reference; every interrupted run resumes to step 20 and must reproduce
its losses within 1e-5 (fp32 on CPU), which includes seeing the data in the same order."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("paddlenlp")
pytestmark = [pytest.mark.paddle, pytest.mark.slow]

from llmpt.launch.checkpoints import MARKER, last_complete  # noqa: E402

COMMON = (
    "llama-tiny",
    "--strategy",
    "dp2",
    "--device",
    "cpu",
    "--max-steps",
    "20",
    "--save-steps",
    "4",
    "--set",
    "strategy.batch.micro_batch_size=4",
    "--set",
    "strategy.batch.grad_accum=1",
    "--set",
    "train.report_to=none",
    "--set",
    "train.warmup_steps=5",
    "--set",
    "train.learning_rate=3e-3",
    "--set",
    "train.save_total_limit=3",
)


def run(llmpt, out: Path, *extra: str) -> dict:
    summary = llmpt.json("train", *COMMON, "--json", "-o", out, *extra)
    return {p["step"]: p["loss"] for p in summary["losses"]}


@pytest.fixture(scope="module")
def reference(llmpt, tmp_path_factory):
    return run(llmpt, tmp_path_factory.mktemp("ref") / "run")


def start(llmpt, out: Path) -> subprocess.Popen:
    # SIGINT at its default even if this test runs as a background job (where the shell ignores it for children)
    return llmpt.start(
        "train", *COMMON, "--json", "-o", out, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )


def wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        metrics = out / "metrics.jsonl"
        if metrics.is_file():
            steps = [json.loads(ln).get("step", 0) for ln in metrics.read_text().splitlines() if ln.strip()]
            if steps and max(steps) >= step:
                return
        time.sleep(0.1)
    raise AssertionError(f"step {step} not reached")


def rank_processes(out: Path) -> list[int]:
    """Processes still running this run's ranks."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmdline = (p / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "entry.py" in cmdline and str(out / "run.yaml") in cmdline:
                found.append(int(p.name))
    return found


def assert_resumes_exactly(llmpt, out: Path, reference: dict, after: int) -> None:
    resumed = run(llmpt, out, "--resume")  # the curve across attempts: later records win
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    last_begin = max(i for i, r in enumerate(records) if r["event"] == "begin")
    steps = [r["step"] for r in records[last_begin:] if r["event"] == "step"]
    assert steps == list(range(after + 1, 21)), steps  # the resumed attempt starts right after the checkpoint
    for step in range(after + 1, 21):
        assert abs(resumed[step] - reference[step]) <= 1e-5, (step, resumed[step], reference[step])


def test_sigkill_of_one_rank_stops_the_job_and_resume_is_exact(llmpt, tmp_path, reference):
    out = tmp_path / "run"
    proc = start(llmpt, out)
    wait_for_step(out, 13, proc)  # checkpoint-12 is written and marked by now
    victim = int((out / "ranks" / "rank1.pid").read_text().split()[0])  # "PID HOST"
    os.kill(victim, signal.SIGKILL)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    elapsed = time.time() - t0
    assert proc.returncode == 1, err
    assert elapsed < 30, elapsed
    # named first: "rank 1 was killed by SIGKILL" (the launcher's word) or "rank 1 (pid N) died first; then rank 0 …";
    # with --json the ending is one llmpt.error/1 object, and nothing else is on stderr
    (line,) = err.strip().splitlines()
    end = json.loads(line)
    assert (end["schema"], end["kind"], end["exit_code"]) == ("llmpt.error/1", "run failed", 1), err
    assert end["error"].startswith("training failed: rank 1 ") and "Traceback" not in err, err
    assert "\x1b[" not in end["error"]  # the rank's log lines without Paddle's colour codes
    time.sleep(1)
    assert rank_processes(out) == []  # rank 0 did not hang in its collective
    assert last_complete(out).name >= "checkpoint-12"
    after = int(last_complete(out).name.split("-")[1])
    assert_resumes_exactly(llmpt, out, reference, after)


def test_ctrl_c_stops_every_rank_and_a_save_cut_short_is_passed_over(llmpt, tmp_path, reference):
    out = tmp_path / "run"
    proc = start(llmpt, out)
    wait_for_step(out, 9, proc)
    proc.send_signal(signal.SIGINT)  # what a terminal sends to llmpt (the ranks run in their own session)
    _, err = proc.communicate(timeout=60)
    (line,) = err.strip().splitlines()
    assert proc.returncode == 1 and "interrupted: every rank was stopped" in json.loads(line)["error"], err
    deadline = time.time() + 15
    while rank_processes(out) and time.time() < deadline:
        time.sleep(0.2)
    assert rank_processes(out) == []
    ckpt = last_complete(out)
    step = int(ckpt.name.split("-")[1])
    assert step >= 8
    # what a kill in the middle of the next save leaves: a checkpoint directory with its files, one of them cut
    # short, trainer_state.json written, and no completion marker; --resume must pass over it
    partial = out / f"checkpoint-{step + 4}"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(ckpt, partial)
    (partial / MARKER).unlink()
    biggest = max((p for p in partial.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with biggest.open("r+b") as f:
        f.truncate(biggest.stat().st_size // 2)
    assert last_complete(out) == ckpt
    assert_resumes_exactly(llmpt, out, reference, step)
    assert all((p / MARKER).is_file() for p in out.glob("checkpoint-*"))  # the cut-short one was cleared


def test_stop_at_step_then_resume_is_exact(llmpt, tmp_path, reference):
    """A planned stop (train.stop_at_step) saves where it stops and keeps the full schedule."""
    out = tmp_path / "run"
    first = run(llmpt, out, "--set", "train.stop_at_step=10")
    assert sorted(first) == list(range(1, 11))
    assert all(abs(first[s] - reference[s]) <= 1e-6 * abs(reference[s]) for s in first)
    assert last_complete(out).name == "checkpoint-10"
    assert_resumes_exactly(llmpt, out, reference, 10)
