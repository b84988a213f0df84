"""Multi-node for real on one machine: two launchers on 127.0.0.1 act as two nodes of one CPU rank each.

Both paths a cluster uses are run: `llmpt train --nnodes 2 --master --node-rank` on each node, and the files
`llmpt launch-script` writes (one run.yaml, `llmpt run-node` per node, one shared run directory). Each must
reproduce the one-node dp2 run's losses."""

from __future__ import annotations

import json
import socket
import subprocess
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_node(llmpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    return losses(llmpt.json(*TRAIN, "--gpus", "2", "-o", out, *COMMON))


def _same(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b) == int(STEPS)
    assert max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True)) < 1e-5, (a, b)


def test_two_train_launchers_as_two_nodes_match_one_node(llmpt, tmp_path, one_node):
    master = f"127.0.0.1:{free_port()}"
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
    master = f"127.0.0.1:{free_port()}"
    nodes = [
        llmpt.start("run-node", str(out / "run.yaml"), "--master", master, "--node-rank", str(r), "--json")
        for r in (0, 1)
    ]
    first, second = done(nodes[0]), done(nodes[1])
    assert second["node_rank"] == 1
    _same(losses(first), one_node)
    assert {p.name for p in (out / "logs").iterdir() if p.is_dir()} >= {"node0", "node1"}
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
