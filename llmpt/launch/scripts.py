"""Cluster launch files for one resolved run: a Slurm sbatch script, or a PaddleJob manifest for Paddle's
Kubernetes operator. Both start `llmpt run-node RUN_YAML` once per node, so every node runs the same run.yaml."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml

from llmpt.run_config import RunConfig

DEFAULT_PORT = 36017


def _name(cfg: RunConfig) -> str:
    raw = f"llmpt-{cfg.model.id.split('/')[-1]}-{cfg.strategy.name}".lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in raw)[:63].strip("-")


def slurm_script(cfg: RunConfig, run_yaml: Path, nproc_per_node: int, port: int = DEFAULT_PORT) -> str:
    """An sbatch script: one task per node, each running `llmpt run-node` with the first node as master."""
    out = Path(cfg.output_dir).resolve()
    node_cmd = (
        f"exec {shlex.quote(sys.executable)} -m llmpt.cli run-node {shlex.quote(str(run_yaml.resolve()))} "
        f'--master "$LLMPT_MASTER" --node-rank "$SLURM_NODEID" --nproc-per-node {nproc_per_node}'
    )
    lines = [
        "#!/bin/bash",
        f"# llmpt launch-script --slurm: {cfg.model.id} with {cfg.strategy.name} on {cfg.nnodes} nodes x "
        f"{nproc_per_node} {'GPUs' if cfg.device == 'gpu' else 'CPU ranks'} (world size {cfg.world_size})",
        f"# run.yaml: {run_yaml.resolve()} (data, output and this venv must be at the same paths on every node)",
        f"#SBATCH --job-name={_name(cfg)}",
        f"#SBATCH --nodes={cfg.nnodes}",
        "#SBATCH --ntasks-per-node=1",
        *([f"#SBATCH --gpus-per-node={nproc_per_node}"] if cfg.device == "gpu" else []),
        "#SBATCH --exclusive",
        f"#SBATCH --output={out}/logs/slurm-%j.out",
        "set -euo pipefail",
        f"mkdir -p {shlex.quote(str(out))}/logs",
        f'export LLMPT_MASTER="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):{port}"',
        f"srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c {shlex.quote(node_cmd)}",
        "",
    ]
    return "\n".join(lines)


def paddlejob_manifest(
    cfg: RunConfig, run_yaml_text: str, nproc_per_node: int, image: str, claim: str = "llmpt-runs"
) -> str:
    """A ConfigMap carrying run.yaml and a PaddleJob (batch.paddlepaddle.org/v1) with one worker pod per node.

    The operator gives each worker PADDLE_TRAINER_ID and PADDLE_TRAINER_ENDPOINTS; the first endpoint is the
    master. The run directory comes from a PersistentVolumeClaim mounted at the run's output path."""
    name = _name(cfg)
    out = str(Path(cfg.output_dir).resolve())
    node_cmd = (
        'exec llmpt run-node /llmpt/run.yaml --master "${PADDLE_TRAINER_ENDPOINTS%%,*}" '
        f'--node-rank "$PADDLE_TRAINER_ID" --nproc-per-node {nproc_per_node}'
    )
    container: dict = {
        "name": "llmpt",
        "image": image,
        "command": ["bash", "-c", node_cmd],
        "volumeMounts": [
            {"name": "run", "mountPath": "/llmpt"},
            {"name": "runs", "mountPath": out},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    if cfg.device == "gpu":
        container["resources"] = {"limits": {"nvidia.com/gpu": nproc_per_node}}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-run"},
        "data": {"run.yaml": run_yaml_text},
    }
    job = {
        "apiVersion": "batch.paddlepaddle.org/v1",
        "kind": "PaddleJob",
        "metadata": {"name": name},
        "spec": {
            "cleanPodPolicy": "OnCompletion",
            "withGloo": 1,
            "intranet": "PodIP",
            "worker": {
                "replicas": cfg.nnodes,
                "template": {
                    "spec": {
                        "containers": [container],
                        "volumes": [
                            {"name": "run", "configMap": {"name": f"{name}-run"}},
                            {"name": "runs", "persistentVolumeClaim": {"claimName": claim}},
                            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                        ],
                    }
                },
            },
        },
    }
    head = (
        f"# llmpt launch-script --k8s: {cfg.model.id} with {cfg.strategy.name} on {cfg.nnodes} pods x "
        f"{nproc_per_node} (world size {cfg.world_size}); kubectl apply -f this file\n"
    )
    return head + yaml.dump_all([config_map, job], Dumper=_BlockDumper, sort_keys=False, width=1000)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the embedded run.yaml) as literal blocks, readable in the manifest."""


_BlockDumper.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)
