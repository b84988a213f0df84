"""Multi-node for real on one machine: two launchers act as two nodes of one CPU rank each.

Both paths a cluster uses are run: `llmpt train --nnodes 2 --master --node-rank` on each node, and the files
`llmpt launch-script` writes (one run.yaml, `llmpt run-node` per node, one shared run directory), the latter also with
node 1 on another address (127.0.0.2: Linux routes all of 127/8 to lo), so that each rank's endpoint and the stores
live on different hosts. Each must reproduce the one-node dp2 run's losses. The Slurm script runs for real with
stand-ins for `srun` and `scontrol`: preempted by the signal Slurm sends before the time limit, requeued, resumed to
the same losses, and requeued once finished, it trains nothing. The PaddleJob's container command runs as two pods
would, with the operator's environment: evicted (SIGTERM), restarted, it resumes to the same losses."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import losses

pytest.importorskip("paddlenlp")
pytestmark = [pytest.mark.paddle, pytest.mark.slow]

STEPS = "6"
COMMON = (
    "--set", "strategy.batch.micro_batch_size=4", "--set", "strategy.batch.grad_accum=1",
    "--set", "train.report_to=none", "--set", "train.learning_rate=3e-3", "--set", "train.warmup_steps=2",
)  # fmt: skip
TRAIN = ("train", "llama-tiny", "--strategy", "dp2", "--device", "cpu", "--max-steps", STEPS, "--json")


def done(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out)


def free_window(span: int = 140) -> int:
    """A port below the kernel's ephemeral range with the next `span` free: what run-node checks (RunPorts)."""
    for base in range(21000 + os.getpid() % 50 * 200, 32000, 200):
        socks = []
        try:
            for port in range(base, base + span):
                socks.append(socket.socket())
                socks[-1].bind(("", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError("no free port window below 32000")


@pytest.fixture(scope="module")
def one_node(llmpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    return losses(llmpt.json(*TRAIN, "--gpus", "2", "-o", out, *COMMON))


def _same(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b) == int(STEPS)
    assert max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True)) < 1e-5, (a, b)


def test_two_train_launchers_as_two_nodes_match_one_node(llmpt, tmp_path, one_node):
    """--master as a host name, as a cluster gives it: node 0's launcher serves the rendezvous only when the master
    is its own IP (llmpt.launch.command.run_launch_command resolves it and passes --host); given the name as it was,
    both nodes waited for "master not ready" forever."""
    master = f"localhost:{free_window()}"
    nodes = [
        llmpt.start(*TRAIN, "--gpus", "1", "--nnodes", "2", "--master", master, "--node-rank", str(r),
                    "-o", tmp_path / f"node{r}", *COMMON)
        for r in (0, 1)
    ]  # fmt: skip
    first, second = done(nodes[0]), done(nodes[1])
    assert first["world_size"] == 2 and second == {
        "schema": "llmpt.node-summary/1",
        "node_rank": 1,
        "ranks_finished": True,
        "summary": f"on node 0, {tmp_path / 'node1'}/summary.json",
    }
    _same(losses(first), one_node)
    assert (tmp_path / "node0" / "logs" / "node0" / "workerlog.0").is_file()


def test_launch_script_files_run_the_same_run_yaml_on_each_node(llmpt, tmp_path, one_node):
    out = tmp_path / "shared"
    args = ("llama-tiny", "--strategy", "dp2", "--device", "cpu", "--gpus", "1", "--nnodes", "2",
            "--max-steps", STEPS, "-o", str(out), "--json", *COMMON)  # fmt: skip
    written = llmpt.json("launch-script", *args, "--slurm")
    assert written["schema"] == "llmpt.launch-script/1" and written["run_yaml_path"] == str(out / "run.yaml")
    script = Path(written["script_path"]).read_text()
    assert subprocess.run(["bash", "-n", written["script_path"]]).returncode == 0
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    assert f"run-node {out / 'run.yaml'}" in script and '--node-rank "$SLURM_NODEID"' in script
    run_yaml = (out / "run.yaml").read_text()
    k8s = llmpt.json("launch-script", *args, "--k8s", "--overwrite", "--image", "reg/llmpt:1")
    config_map, job = yaml.safe_load_all(Path(k8s["script_path"]).read_text())
    assert config_map["data"]["run.yaml"] == (out / "run.yaml").read_text() == run_yaml
    assert job["kind"] == "PaddleJob" and job["spec"]["worker"]["replicas"] == 2
    # the nodes: one run.yaml, one shared run directory, `llmpt run-node` on each
    master = f"127.0.0.1:{free_window()}"
    nodes = [
        llmpt.start("run-node", str(out / "run.yaml"), "--master", master, "--node-rank", str(r), "--json")
        for r in (0, 1)
    ]
    first, second = done(nodes[0]), done(nodes[1])
    assert second["node_rank"] == 1
    _same(losses(first), one_node)
    assert {p.name for p in (out / "logs").iterdir() if p.is_dir()} >= {"node0", "node1"}
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2


def _listening(procs: list[subprocess.Popen]) -> set[int]:
    """The TCP ports the processes of these llmpt commands (and everything they started) listen on now."""
    import psutil

    ports = set()
    for proc in procs:
        try:
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in tree:
            try:
                ports |= {c.laddr.port for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
            except psutil.NoSuchProcess:
                continue
    return ports


def test_two_hosts_on_two_loopback_addresses_match_one_node(llmpt, tmp_path, one_node):
    """Node 0 on 127.0.0.1 hosts the rendezvous and the ranks' store; node 1 is told it is 127.0.0.2 (run-node --host,
    paddle's POD_IP): its rank's endpoint, and the stores of the groups it leads, are on that address. Every fixed
    port the ranks open is one run-node checked (llmpt.launch.command.RunPorts); the rest are gloo's pair sockets,
    which the kernel picks (bound to port 0) from its ephemeral range."""
    from llmpt.launch.command import RunPorts

    out = tmp_path / "shared"
    llmpt("launch-script", "llama-tiny", "--strategy", "dp2", "--device", "cpu", "--gpus", "1", "--nnodes", "2",
          "--max-steps", STEPS, "-o", str(out), "--slurm", *COMMON)  # fmt: skip
    port = free_window()
    master = f"127.0.0.1:{port}"
    nodes = [
        llmpt.start("run-node", str(out / "run.yaml"), "--master", master, "--node-rank", "0", "--json"),
        llmpt.start("run-node", str(out / "run.yaml"), "--master", master, "--node-rank", "1", "--host", "127.0.0.2",
                    "--json"),
    ]  # fmt: skip
    seen: set[int] = set()
    while any(n.poll() is None for n in nodes):
        seen |= _listening(nodes)
        time.sleep(0.3)
    first, second = done(nodes[0]), done(nodes[1])
    assert second["node_rank"] == 1
    _same(losses(first), one_node)
    # the launchers saw the two hosts: node 1's rank announced 127.0.0.2, the store is node 0's
    peers = "".join(p.read_text() for p in (out / "logs" / "node0").glob("default.*.log"))  # the launcher's peer list
    ports = RunPorts(port)
    assert f"'candidate': '127.0.0.1:{ports.store}'" in peers and "'endpoints': '127.0.0.2:" in peers
    env1 = json.loads((out / "logs" / "node1" / "backup_env.1.json").read_text())
    assert (
        env1["PADDLE_CURRENT_ENDPOINT"].startswith("127.0.0.2:") and env1["PADDLE_MASTER"] == f"127.0.0.1:{ports.store}"
    )
    # ports: the rendezvous and the store were seen, every other fixed port is in the checked window
    checked = {p for p, _ in ports.opened_on(0)}
    low, _ = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert {port, ports.store} <= seen, (sorted(seen), port)
    assert {p for p in seen if p < low} <= checked, (sorted(seen), port)
    assert max(checked) < low


def _fake_slurm(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """`srun` runs its command once per node of the job, here, as SLURM_NODEID=i; `scontrol` lists this machine as
    every node and records a requeue. The environment of a job on NODES nodes."""
    bin_dir = tmp_path / "fake-slurm"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        "#!/bin/bash\n"
        'while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done\n'
        "pids=()\n"
        'for ((i = 0; i < SLURM_JOB_NUM_NODES; i++)); do SLURM_NODEID=$i "$@" & pids+=($!); done\n'
        'rc=0; for p in "${pids[@]}"; do wait "$p"; r=$?; [ "$r" -gt "$rc" ] && rc=$r; done; exit "$rc"\n'
    )
    (bin_dir / "scontrol").write_text(
        "#!/bin/bash\n"
        'case "$1" in\n'
        "  show) for ((i = 0; i < SLURM_JOB_NUM_NODES; i++)); do echo localhost; done ;;\n"
        '  requeue) echo "requeue $2" >> "$FAKE_SLURM_LOG" ;;\n'
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    log = tmp_path / "scontrol.log"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": str(4000 + os.getpid() % 1000),
           "SLURM_JOB_NODELIST": "localhost", "SLURM_JOB_NUM_NODES": "1", "FAKE_SLURM_LOG": str(log)}  # fmt: skip
    return env, log


def _metrics_step(out: Path) -> int:
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    return max((json.loads(ln).get("step", 0) for ln in lines if ln.strip()), default=0)


def test_slurm_script_preempted_requeues_and_resumes_to_the_same_losses(llmpt, tmp_path, one_node):
    """The sbatch script as Slurm runs it (one node of two CPU ranks): SIGUSR1 to every process of the job step (what
    `--signal=USR1@S` does before the time limit) -> a checkpoint, run-node exits 75, the script requeues the job;
    the requeued script continues from that checkpoint to the losses of an uninterrupted run; requeued once more,
    the finished run exits 0 at once without training."""
    import psutil

    out = tmp_path / "run"
    llmpt("launch-script", "llama-tiny", "--strategy", "dp2", "--device", "cpu", "--gpus", "2", "--nnodes", "1",
          "--max-steps", STEPS, "--save-steps", "0", "-o", str(out), "--slurm", "--requeue",
          "--signal-before", "120", "--time", "30:00", "--port", str(free_window()), *COMMON)  # fmt: skip
    script = out / "launch.sbatch"
    env, requeues = _fake_slurm(tmp_path)
    env = dict(llmpt.env, **env)
    batch = subprocess.Popen(
        ["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while _metrics_step(out) < 2:
        assert batch.poll() is None and time.monotonic() < deadline, batch.communicate()[0]
        time.sleep(0.2)
    srun = next(c for c in psutil.Process(batch.pid).children() if c.name() == "srun")
    for p in srun.children(recursive=True):  # the job step's processes; Slurm's --signal spares srun itself
        try:
            p.send_signal(signal.SIGUSR1)
        except psutil.NoSuchProcess:
            pass
    log, _ = batch.communicate(timeout=300)
    assert batch.returncode == 0, log
    assert requeues.read_text() == f"requeue {env['SLURM_JOB_ID']}\n", log
    state = json.loads((out / "state.json").read_text())
    assert state["state"] == "preempted" and 2 <= state["step"] < int(STEPS), state
    assert (out / f"checkpoint-{state['step']}" / "llmpt-complete.json").is_file()
    # requeued: the same script, unchanged, continues (warning first that the checkpoint's pickles are group-writable)
    ckpt = out / f"checkpoint-{state['step']}"
    ckpt.chmod(0o775)
    again = subprocess.run(["bash", str(script)], env=dict(env, SLURM_RESTART_COUNT="1"), capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    said = again.stdout + again.stderr
    assert again.returncode == 0, said
    assert f"from checkpoint-{state['step']}" in said
    # a node's log is not a terminal: plain progress lines, from this attempt's first step to the last
    printed = [int(m.group(1)) for m in re.finditer(rf"^step (\d+)/{STEPS} · loss \d", said, re.M)]
    assert printed and printed[0] == state["step"] + 1 and printed[-1] == int(STEPS), said
    assert f"warning: --resume {ckpt}: loads pickled files" in said and "group-writable (mode 0775)" in said
    _same(losses(json.loads((out / "summary.json").read_text())), one_node)
    assert json.loads((out / "state.json").read_text())["state"] == "finished"
    # requeued once finished: nothing trained, at once
    metrics = (out / "metrics.jsonl").read_text()
    t0 = time.monotonic()
    last = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert last.returncode == 0 and "nothing to train" in last.stdout + last.stderr, last.stdout + last.stderr
    assert (out / "metrics.jsonl").read_text() == metrics and took < 20, took
    assert requeues.read_text().count("requeue") == 1
    # launch-script --resume: refused while the run would train nothing; with more steps, files that continue it
    args = ("launch-script", "llama-tiny", "--strategy", "dp2", "--device", "cpu", "--gpus", "2", "--nnodes", "1",
            "--save-steps", "0", "-o", str(out), "--slurm", "--resume", *COMMON)  # fmt: skip
    refused = llmpt(*args, "--max-steps", STEPS, check=False)
    assert refused.returncode == 2 and "nothing to train" in refused.stderr, refused.stderr
    llmpt(*args, "--max-steps", str(int(STEPS) + 2))
    more = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert more.returncode == 0 and f"from checkpoint-{STEPS}" in more.stdout + more.stderr, more.stdout + more.stderr
    assert json.loads((out / "state.json").read_text())["step"] == int(STEPS) + 2


def test_paddlejob_pods_preempted_restart_and_resume_to_the_same_losses(llmpt, tmp_path, one_node):
    """The PaddleJob's container command, run as the operator and the kubelet would run it, on two addresses: each
    pod gets the operator's PADDLE_TRAINER_ENDPOINTS (pod IP:port, one per pod), PADDLE_TRAINER_ID and POD_IP
    (paddle-operator controllers/paddlejob_helper.go), and run.yaml from the ConfigMap. SIGTERM to pod 0's main process
    (an eviction) -> every rank stops after the same step with a checkpoint, both containers exit non-zero; restarted
    (restartPolicy OnFailure: the same command in the same pod), they resume to the losses of an uninterrupted run."""
    out = tmp_path / "run"
    r = llmpt("launch-script", "llama-tiny", "--strategy", "dp2", "--device", "cpu", "--gpus", "1", "--nnodes", "2",
              "--max-steps", STEPS, "--save-steps", "0", "-o", str(out), "--k8s", *COMMON)  # fmt: skip
    assert r.returncode == 0
    config_map, job = yaml.safe_load_all((out / "paddlejob.yaml").read_text())
    pod = job["spec"]["worker"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    # the ConfigMap's run.yaml where the container mounts it (/llmpt), here a directory of the test
    mounted = tmp_path / "configmap"
    mounted.mkdir()
    (mounted / "run.yaml").write_text(config_map["data"]["run.yaml"])
    shell, flag, command = pod["containers"][0]["command"]
    command = command.replace("/llmpt/run.yaml", str(mounted / "run.yaml"))
    port = free_window()
    ips = ("127.0.0.1", "127.0.0.2")
    bin_dir = Path(sys.executable).parent  # the image's `llmpt`: this environment's

    def start(i: int) -> subprocess.Popen:
        env = dict(llmpt.env, PATH=f"{bin_dir}:{os.environ['PATH']}", POD_IP=ips[i], PADDLE_TRAINER_ID=str(i),
                   PADDLE_TRAINER_ENDPOINTS=",".join(f"{ip}:{port}" for ip in ips), PADDLE_TRAINERS_NUM="2")  # fmt: skip
        return subprocess.Popen([shell, flag, command], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip

    pods = [start(0), start(1)]
    deadline = time.monotonic() + 300
    while _metrics_step(out) < 2:
        assert all(p.poll() is None for p in pods) and time.monotonic() < deadline, [p.communicate() for p in pods]
        time.sleep(0.2)
    pods[0].send_signal(signal.SIGTERM)  # bash exec'd llmpt: the container's main process
    ends = [p.communicate(timeout=300) for p in pods]
    codes = [p.returncode for p in pods]
    assert codes[0] == 75 and codes[1] != 0, (codes, [e[1][-2000:] for e in ends])
    step = json.loads((out / "state.json").read_text())["step"]
    assert (out / f"checkpoint-{step}" / "llmpt-complete.json").is_file() and step < int(STEPS)
    # the kubelet restarts each failed container with the same command
    pods = [start(0), start(1)]
    ends = [p.communicate(timeout=600) for p in pods]
    assert [p.returncode for p in pods] == [0, 0], [e[1][-2000:] for e in ends]
    assert f"from checkpoint-{step}" in ends[0][1]
    _same(losses(json.loads((out / "summary.json").read_text())), one_node)
