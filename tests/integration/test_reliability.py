"""Failures of a running job, for real: a rank killed with SIGKILL, Ctrl-C, a save cut short, a preemption signal
(SIGTERM or train.preempt_signal, to llmpt alone or to every process at once), llmpt or the launcher killed, a
stopped rank; then --resume.

One uninterrupted 20-step dp2 run is the reference; every interrupted run resumes to step 20 and must reproduce
its losses within 1e-5 (fp32 on CPU), which includes seeing the data in the same order."""

from __future__ import annotations

import json
import os
import re
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
def reference_dir(llmpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    run(llmpt, out)
    return out


@pytest.fixture(scope="module")
def reference(reference_dir):
    summary = json.loads((reference_dir / "summary.json").read_text())
    return {p["step"]: p["loss"] for p in summary["losses"]}


def start(llmpt, out: Path, *extra: str) -> subprocess.Popen:
    # SIGINT at its default even if this test runs as a background job (where the shell ignores it for children)
    return llmpt.start(
        "train", *COMMON, "--json", "-o", out, *extra, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
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


def processes(out: Path, program: str, but: str = "\0\0") -> list[int]:
    """Processes (not zombies) whose command line runs `program` (and not `but`) on this run's run.yaml."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmdline = (p / "cmdline").read_bytes().decode(errors="replace")
                state = (p / "stat").read_text().rsplit(") ", 1)[1][0]
            except (OSError, IndexError):
                continue
            if program in cmdline and but not in cmdline and str(out / "run.yaml") in cmdline and state != "Z":
                found.append(int(p.name))
    return found


def rank_processes(out: Path) -> list[int]:
    """Processes still running this run's ranks."""
    return processes(out, "entry.py", but="paddle.distributed.launch")


def launcher_processes(out: Path) -> list[int]:
    return processes(out, "paddle.distributed.launch")


def none_left_within(out: Path, seconds: float) -> float:
    """Seconds until no rank or launcher of the run is left; fails after `seconds`."""
    t0 = time.time()
    while rank_processes(out) or launcher_processes(out):
        assert time.time() - t0 < seconds, (rank_processes(out), launcher_processes(out))
        time.sleep(0.2)
    return time.time() - t0


def step_of(ckpt: Path) -> int:
    return int(ckpt.name.rsplit("-", 1)[1])


def the_error(err: str) -> dict:
    """The one llmpt.error/1 object a --json run ends with on stderr."""
    (line,) = err.strip().splitlines()
    return json.loads(line)


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
    after = step_of(last_complete(out))
    assert after >= 12
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


# ---- a cluster's signals (issue 16) ------------------------------------------------------------------------------


def rank_pids(out: Path) -> list[int]:
    return [int(p.read_text().split()[0]) for p in sorted((out / "ranks").glob("rank*.pid"))]


@pytest.mark.parametrize(
    "to,sig,extra",
    [
        ("llmpt", signal.SIGTERM, ()),  # a user's or a script's kill
        ("all", signal.SIGTERM, ()),  # Slurm's scancel / time limit, a Kubernetes eviction: every process at once
        # a configured train.preempt_signal, sent ahead of a time limit to every process (the default, SIGUSR1, is
        # what test_multinode's Slurm script test sends)
        ("all", signal.SIGHUP, ("--set", "train.preempt_signal=SIGHUP")),
    ],
    ids=["sigterm-llmpt", "sigterm-all", "sighup-configured-all"],
)
def test_preemption_checkpoints_the_step_every_rank_finished_and_resume_is_exact(
    llmpt, tmp_path, reference, to, sig, extra
):
    """Resumed exactly after the signal to llmpt alone and after the configured one to every process (the suite's
    time: the SIGTERM to every process is not resumed again)."""
    out = tmp_path / "run"
    proc = start(llmpt, out, *extra)
    wait_for_step(out, 5, proc)
    running = llmpt.json("status", out, "--json")
    assert running["state"] == "running" and running["step"] >= 5, running
    assert [r["process"] for r in running["ranks"]] == ["running", "running"], running
    targets = [proc.pid] + (launcher_processes(out) + rank_pids(out) if to == "all" else [])
    for pid in targets:
        os.kill(pid, sig)
    _, err = proc.communicate(timeout=120)
    end = the_error(err)
    assert proc.returncode == 75 and (end["kind"], end["exit_code"]) == ("preempted", 75), err
    state = json.loads((out / "state.json").read_text())
    step = state["step"]
    assert (state["state"], state["signal"]) == ("preempted", sig.name), state
    assert 5 <= step < 20
    assert end["error"].startswith(
        f"{sig.name}: every rank stopped after step {step} of 20; checkpoint-{step} is complete"
    )
    assert last_complete(out) == out / f"checkpoint-{step}"
    reports = [json.loads(p.read_text()) for p in sorted((out / "ranks").glob("rank[0-9].json"))]
    assert [(r["stopped"], r["step"]) for r in reports] == [("preempted", step)] * 2, reports
    assert not (out / "model_state.pdparams").exists()  # the final weights of a finished run were not written
    none_left_within(out, 10)
    after = llmpt.json("status", out, "--json")
    assert (after["state"], after["step"]) == ("preempted", step), after
    assert {"step": step, "path": str(out / f"checkpoint-{step}"), "complete": True} in after["checkpoints"]
    if (to, sig) != ("all", signal.SIGTERM):
        assert_resumes_exactly(llmpt, out, reference, step)
        assert json.loads((out / "state.json").read_text())["state"] == "finished"


def test_sigkill_of_llmpt_takes_the_launcher_and_every_rank_with_it(llmpt, tmp_path):
    out = tmp_path / "run"
    proc = start(llmpt, out)
    wait_for_step(out, 3, proc)
    assert len(rank_processes(out)) == 2 and len(launcher_processes(out)) == 1
    proc.kill()  # the OOM killer, a stray kill -9: no handler runs in llmpt
    proc.communicate()
    assert none_left_within(out, 30) < 30
    assert llmpt.json("status", out, "--json")["state"] == "lost"  # its supervisor went without a word


def test_sigkill_of_the_launcher_stops_the_ranks_and_names_it(llmpt, tmp_path):
    out = tmp_path / "run"
    proc = start(llmpt, out)
    wait_for_step(out, 3, proc)
    (launcher,) = launcher_processes(out)
    os.kill(launcher, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert the_error(err)["error"].startswith(
        f"training failed: the launcher (pid {launcher}) was killed by SIGKILL; its ranks were stopped with it"
    ), err
    none_left_within(out, 10)


def test_a_stopped_rank_is_named_and_every_live_rank_leaves_its_stack(llmpt, tmp_path):
    out = tmp_path / "run"
    proc = start(llmpt, out, "--set", "train.hang_timeout_s=4")
    wait_for_step(out, 3, proc)
    victim = rank_pids(out)[1]
    os.kill(victim, signal.SIGSTOP)  # a rank that stops making progress; its peer then waits in a collective
    t0 = time.time()
    _, err = proc.communicate(timeout=120)
    elapsed = time.time() - t0
    end = the_error(err)
    assert proc.returncode == 1 and end["kind"] == "run failed", err
    assert end["error"].startswith("training hung: no progress for "), err
    assert f"rank 1 (process {victim} stopped)" in end["error"] and "rank 0 waits after step" in end["error"], err
    assert 4 <= elapsed < 4 + 30, elapsed
    for rank in (0, 1):  # every live rank's Python stack: the peer inside training, the stopped one where it stood
        stack = (out / "ranks" / f"rank{rank}.stack").read_text()
        assert "(most recent call first)" in stack and "entry.py" in stack, stack
    state = json.loads((out / "state.json").read_text())
    assert (state["state"], state["ranks"]) == ("hung", ["1"]), state
    none_left_within(out, 10)


def test_a_finished_run_stays_finished_unless_max_steps_is_raised(llmpt, tmp_path, reference_dir):
    out = tmp_path / "run"
    shutil.copytree(reference_dir, out)
    metrics = (out / "metrics.jsonl").read_bytes()
    saved = sorted(step_of(p) for p in out.glob("checkpoint-*"))
    assert saved[-1] == 20
    again = llmpt("train", *COMMON, "--json", "-o", out, "--resume")
    doc = json.loads(again.stdout)
    assert (doc["schema"], doc["trained_steps"]) == ("llmpt.nothing-to-train/1", 0), doc
    assert "finished at step 20 (max_steps 20); nothing to train" in doc["why"]
    assert (out / "metrics.jsonl").read_bytes() == metrics and rank_processes(out) == []
    assert sorted(step_of(p) for p in out.glob("checkpoint-*")) == saved  # nothing saved either
    # raised: it trains on from its last checkpoint; in a log (stderr not a terminal) a plain line for the first
    # step, every 2nd and the last
    more = llmpt(
        "train", *COMMON, "-o", out, "--resume", "--max-steps", "25",
        "--set", "train.progress_every_steps=2", "--set", "train.progress_every_s=1000",
    )  # fmt: skip
    printed = [int(m.group(1)) for m in re.finditer(r"^step (\d+)/25 · loss \d+\.\d{4} · lr ", more.stderr, re.M)]
    assert printed == [21, 23, 25], more.stderr
    state = json.loads((out / "state.json").read_text())
    assert (state["state"], state["step"]) == ("finished", 25), state


def test_preemption_before_training_starts_stops_at_once(llmpt, tmp_path):
    """A node whose peer never comes (its ranks wait in the rendezvous) has nothing to save: SIGTERM stops it now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    proc = llmpt.start(
        "train", *COMMON, "--json", "-o", out, "--gpus", "1", "--nnodes", "2", "--master", f"127.0.0.1:{port}",
        "--node-rank", "0",
    )  # fmt: skip
    deadline = time.time() + 120
    while not launcher_processes(out):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    end = the_error(err)
    assert proc.returncode == 75 and time.time() - t0 < 15, err
    assert end["error"].startswith("SIGTERM: every rank stopped before it could save a step of this attempt"), err
    assert json.loads((out / "state.json").read_text())["state"] == "preempted"
    none_left_within(out, 10)
