"""Which rank a failed run names (llmpt/launch/supervise.py), on recorded run directories: worker logs, the
launcher's log, pid files. Without paddle: the launcher is a stand-in that prints what paddle.distributed.launch
printed and exits with its code; the ranks are pids of processes that are (or are not) alive.

The recorded lines come from a real failure (llama-tiny dp2 on CPU, `kill -9` of rank 1 at step 9): rank 1's log
ends cleanly; rank 0 died of the loss (gloo::IoException, SIGABRT), and the launcher named rank 0, the peer, first.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmpt.errors import TrainingFailed
from llmpt.launch import supervise
from llmpt.run_dir import RunDir

# ---- recorded (paths shortened to /r) --------------------------------------------------------------------------

INFO = (
    "\x1b[32m[2026-11-28 07:37:02,434] [    INFO]\x1b[0m - loss: 7.56337357, learning_rate: 0.0003, global_step: 9, "
    "interval_runtime: 0.2158, interval_samples_per_second: 74.1544\x1b[0m"
)
KILLED_LOG = [  # rank 1, killed from outside: its log just stops
    "    Reason: paddle.incubate.nn.functional.swiglu will be removed in future. Please use "
    "paddle.nn.functional.swiglu instead. \x1b[0m",
    "  x = swiglu(self.gate_proj(x), self.up_proj(x))",
    "W1128 07:37:00.576018 13042 reducer.cc:736] All parameters are involved in the backward pass. It is recommended "
    "to set find_unused_parameters to False to improve performance.",
]
LOSS_LOG = [  # rank 0, died of the loss of its peer
    INFO,
    "W1128 07:37:02.655807 13041 backward.cc:697] While running Node (GradNodeAccumulation) raises a std::exception: "
    "gloo::IoException",
    "terminate called after throwing an instance of 'gloo::IoException'",
    "  what():  [/paddle/third_party/gloo/gloo/transport/tcp/pair.cc:576] Read error [127.0.0.1]:412: Connection "
    "reset by peer",
]
OWN_ERROR_LOG = [  # a rank that failed by itself (a cut-short --init-from checkpoint)
    INFO,
    "Traceback (most recent call last):",
    '  File "/r/llmpt/train/entry.py", line 290, in main',
    "ValueError: `paddle.load` can not parse the file: /r/init/model_state.pdparams.",
]


def container_failed(rank: int, code: int) -> list[str]:
    """paddle.distributed.launch's account of a failed worker, as its log has it."""
    return [
        "LAUNCH INFO 2026-11-28 07:37:02,925 Pod failed",
        "LAUNCH ERROR 2026-11-28 07:37:02,925 Container failed !!!",
        f"Container rank {rank} status failed cmd ['/r/.venv/bin/python', '-u', '/r/llmpt/train/entry.py', "
        f"'/r/run/run.yaml'] code {code} log /r/run/logs/workerlog.{rank}",
        "LAUNCH INFO 2026-11-28 07:37:02,925 ------------------------- ERROR LOG DETAIL -------------------------",
    ]


# ---- building a run directory ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_pids() -> list[int]:
    """Pids of processes that ran and were reaped: gone, as a SIGKILLed rank is."""
    pids = []
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-c", "pass"])
        p.wait()
        pids.append(p.pid)
    return pids


ALIVE = None  # a rank still running: this test's own pid


def recorded(out: Path, ranks: dict[int, dict], launcher: list[str] | None = None) -> RunDir:
    """A run directory as a failed run leaves it. ranks: N -> {log: lines, pid: int (ALIVE: running),
    host: str (default: no host, as older pid files), report: True if rank N wrote its final report}."""
    run = RunDir(out)
    log_dir = run.log_dir()
    log_dir.mkdir(parents=True)
    run.ranks.mkdir()
    for n, r in ranks.items():
        if "log" in r:
            RunDir.worker_log(log_dir, n).write_text("\n".join(r["log"]) + "\n")
        pid = r.get("pid", ALIVE) or os.getpid()
        run.rank_pid(n).write_text(f"{pid} {r['host']}" if "host" in r else str(pid))
        if r.get("report"):
            run.rank_report(n).write_text("{}")
    if launcher is not None:
        RunDir.launcher_log(log_dir).write_text("\n".join(launcher) + "\n")
    return run


def fail_with(run: RunDir, monkeypatch, launcher_says: Sequence[str] = (), code: int = 1, hangs: bool = False) -> str:
    """run_training on `run` with a stand-in launcher that prints `launcher_says` (into launcher.log, as the real
    one's stdout) and exits with `code`, or hangs until stopped; the TrainingFailed message."""
    said = "".join(f"{line}\n" for line in launcher_says)
    script = f"import sys, time\nsys.stdout.write({said!r})\nsys.stdout.flush()\n"
    script += "time.sleep(120)\n" if hangs else f"sys.exit({code})\n"
    monkeypatch.setattr(supervise, "write_run_yaml", lambda cfg, path: None)
    monkeypatch.setattr(supervise, "run_launch_command", lambda cfg: [sys.executable, "-c", script])
    train = SimpleNamespace(max_steps=10, stop_at_step=None, hang_timeout_s=0, preempt_signal="SIGUSR1")
    cfg = SimpleNamespace(output_dir=str(run.root), nnodes=1, node_rank=None, master=None, train=train)
    with pytest.raises(TrainingFailed) as e:
        supervise.run_training(cfg, poll_seconds=0.01)
    return e.value.message


@pytest.fixture(autouse=True)
def _no_grace_timeout(monkeypatch):
    # a stand-in launcher exits at once; only the hanging-launcher test wants the grace period to run out
    monkeypatch.setattr(supervise, "DEAD_RANK_GRACE_S", 60.0)


# ---- which rank is named ----------------------------------------------------------------------------------------


def test_killed_from_outside_is_named_though_the_launcher_names_the_peer_first(tmp_path, monkeypatch, dead_pids):
    """The recorded run: rank 1 killed, rank 0 died of the loss, the launcher named rank 0 (SIGABRT)."""
    run = recorded(tmp_path, {0: {"log": LOSS_LOG, "pid": dead_pids[0]}, 1: {"log": KILLED_LOG, "pid": dead_pids[1]}})
    message = fail_with(run, monkeypatch, container_failed(0, -6))
    logs = run.log_dir()
    assert message.startswith(
        f"training failed: rank 1 (pid {dead_pids[1]}) died; then rank 0 was killed by SIGABRT (logs: {logs})"
    )
    assert "terminate called after throwing an instance of 'gloo::IoException'" in message  # rank 0's own lines


def test_the_launchers_word_stands_when_it_names_the_killed_rank(tmp_path, monkeypatch, dead_pids):
    run = recorded(tmp_path, {0: {"log": LOSS_LOG, "pid": dead_pids[0]}, 1: {"log": KILLED_LOG, "pid": dead_pids[1]}})
    message = fail_with(run, monkeypatch, container_failed(1, -9))
    assert message.startswith(f"training failed: rank 1 was killed by SIGKILL (logs: {run.log_dir()})")


def test_a_rank_that_failed_by_itself_is_named_by_the_launcher_with_its_error(tmp_path, monkeypatch, dead_pids):
    run = recorded(
        tmp_path, {0: {"log": OWN_ERROR_LOG, "pid": dead_pids[0]}, 1: {"log": LOSS_LOG, "pid": dead_pids[1]}}
    )
    message = fail_with(run, monkeypatch, container_failed(0, 1))
    first, *tail = message.splitlines()
    assert first == f"training failed: rank 0 exited with code 1 (logs: {run.log_dir()})"
    assert tail[-1] == "    ValueError: `paddle.load` can not parse the file: /r/init/model_state.pdparams."


def test_several_dead_with_clean_logs_names_the_first_seen(tmp_path, monkeypatch, dead_pids):
    """Two ranks gone without a word (the OOM killer took both): the first in the order they were seen."""
    run = recorded(tmp_path, {0: {"log": KILLED_LOG, "pid": dead_pids[0]}, 1: {"log": KILLED_LOG, "pid": dead_pids[1]}})
    message = fail_with(run, monkeypatch)
    assert message == f"training failed: rank 0 (pid {dead_pids[0]}) died (logs: {run.log_dir()})"


def test_several_dead_with_errors_names_the_first_seen(tmp_path, monkeypatch, dead_pids):
    run = recorded(tmp_path, {0: {"log": LOSS_LOG, "pid": dead_pids[0]}, 1: {"log": LOSS_LOG, "pid": dead_pids[1]}})
    assert fail_with(run, monkeypatch, container_failed(0, -6)).startswith(
        "training failed: rank 0 was killed by SIGABRT"
    )


def test_none_dead_the_launcher_or_the_first_log_with_an_error_is_named(tmp_path, monkeypatch):
    run = recorded(tmp_path / "a", {0: {"log": [INFO], "report": True}, 1: {"log": [INFO]}})  # 1 still running
    assert (
        fail_with(run, monkeypatch, code=3)
        == f"training failed: the launcher exited with code 3 (logs: {run.log_dir()})"
    )
    run = recorded(tmp_path / "b", {0: {"log": [INFO]}, 1: {"log": OWN_ERROR_LOG}})
    assert fail_with(run, monkeypatch).startswith(f"training failed: rank 1 failed (logs: {run.log_dir()})\n")


def test_a_rank_on_another_host_is_left_to_its_own_node(tmp_path, monkeypatch, dead_pids):
    """Node 1's rank 1 shares the run directory; its pid means nothing here, so it is not taken for dead."""
    here = socket.gethostname()
    run = recorded(
        tmp_path,
        {0: {"log": LOSS_LOG, "pid": dead_pids[0], "host": here}, 1: {"pid": dead_pids[1], "host": f"not-{here}"}},
    )
    assert supervise.dead_ranks(run.root) == [("0", dead_pids[0])]
    assert fail_with(run, monkeypatch, container_failed(0, -6)).startswith(
        "training failed: rank 0 was killed by SIGABRT"
    )


def test_a_dead_rank_the_launcher_does_not_notice_stops_the_job(tmp_path, monkeypatch, dead_pids):
    """The rest hang in a collective and the launcher waits with them: after the grace period every rank is
    stopped and the rank killed from outside is named, not its peer that logged the loss."""
    monkeypatch.setattr(supervise, "DEAD_RANK_GRACE_S", 0.2)
    run = recorded(tmp_path, {0: {"log": LOSS_LOG, "pid": dead_pids[0]}, 1: {"log": KILLED_LOG, "pid": dead_pids[1]}})
    message = fail_with(run, monkeypatch, hangs=True)
    assert message == (
        f"training failed: rank 1 (pid {dead_pids[1]}) died before finishing; every rank was stopped "
        f"(logs: {run.log_dir()})"
    )


# ---- the pieces ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code,said",
    [(-9, "rank 1 was killed by SIGKILL"), (-6, "rank 1 was killed by SIGABRT"), (-99, "rank 1 was killed by signal 99"),
     (1, "rank 1 exited with code 1"), (0, "rank 1 exited with code 0")],
)  # fmt: skip
def test_describe_exit(code, said):
    assert supervise._describe_exit("1", code) == said


def test_launcher_verdict_reads_the_first_failed_container(tmp_path):
    log_dir = recorded(tmp_path / "a", {}, container_failed(0, -6) + container_failed(1, -9)).log_dir()
    assert supervise._launcher_verdict(log_dir) == "rank 0 was killed by SIGABRT"
    log_dir = recorded(
        tmp_path / "b", {}, ["LAUNCH INFO 2026-11-28 07:36:44,919 Watching Pod: csaefi, replicas 2"]
    ).log_dir()
    assert supervise._launcher_verdict(log_dir) is None
    assert supervise._launcher_verdict(recorded(tmp_path / "c", {}).log_dir()) is None  # no launcher.log


def test_log_shows_error(tmp_path):
    def shows(lines: list[str] | None) -> bool:
        log = tmp_path / "workerlog.0"
        log.unlink(missing_ok=True)
        if lines is not None:
            log.write_text("\n".join(lines) + "\n")
        return supervise._log_shows_error(log)

    assert shows(LOSS_LOG) and shows(OWN_ERROR_LOG) and shows(["terminate called without an active exception"])
    assert not shows(KILLED_LOG) and not shows([INFO]) and not shows(None)
    assert not shows(OWN_ERROR_LOG + [INFO] * 200)  # only the last 200 lines count


def test_culprit_prefers_a_clean_log(tmp_path):
    log_dir = recorded(tmp_path, {0: {"log": LOSS_LOG}, 1: {"log": KILLED_LOG}, 2: {"log": LOSS_LOG}}).log_dir()
    assert supervise._culprit([("0", 10), ("1", 11), ("2", 12)], log_dir) == ("1", 11)
    assert supervise._culprit([("2", 12), ("0", 10)], log_dir) == ("2", 12)  # all show errors: the first seen
    assert supervise._culprit([("3", 13), ("1", 11)], log_dir) == ("3", 13)  # no log at all counts as clean


def test_dead_ranks(tmp_path, dead_pids):
    run = recorded(
        tmp_path,
        {
            0: {},  # alive
            1: {"pid": dead_pids[0]},  # gone (an older pid file: no host)
            2: {"pid": dead_pids[1], "report": True},  # gone after its final report: finished
            3: {"pid": dead_pids[2], "host": socket.gethostname()},  # gone, this host
            4: {"pid": dead_pids[2], "host": "elsewhere"},  # another node's
        },
    )
    run.rank_pid(5).write_text("not-a-pid")
    assert supervise.dead_ranks(run.root) == [("1", dead_pids[0]), ("3", dead_pids[2])]


def test_failed_rank_takes_the_first_log_with_an_error_in_rank_order(tmp_path):
    ranks = {n: {"log": [INFO]} for n in (0, 2, 10)}
    ranks[10]["log"] = LOSS_LOG
    ranks[2]["log"] = ["", *OWN_ERROR_LOG, "", *[f"line {i}" for i in range(20)]]
    log_dir = recorded(tmp_path / "a", ranks).log_dir()
    name, tail = supervise._failed_rank(log_dir)
    assert name == "rank 2" and tail == [f"line {i}" for i in range(5, 20)]  # its last 15 lines that are not blank
    log_dir = recorded(tmp_path / "b", {0: {"log": [INFO]}}, ["RuntimeError: launcher lost its pod"]).log_dir()
    assert supervise._failed_rank(log_dir) == ("the launcher", ["RuntimeError: launcher lost its pod"])
    assert supervise._failed_rank(recorded(tmp_path / "c", {0: {"log": [INFO]}}).log_dir()) is None
