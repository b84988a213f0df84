"""Cluster launch files for one resolved run: a Slurm sbatch script, or a PaddleJob manifest for Paddle's
Kubernetes operator. Both start `llmpt run-node RUN_YAML --resume` once per node, so every node runs the same run.yaml
and a restarted job continues from the newest complete checkpoint (or starts, or, finished, trains nothing)."""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from llmpt.errors import ExitCode, LlmptError
from llmpt.run_config import RunConfig

DEFAULT_PORT = 36017  # the rendezvous port llmpt train uses when none is given (a fixed one: one job per node pair)
# The Slurm script's rendezvous port when --port is not given: SLURM_PORT_BASE + (job id % SLURM_PORT_SLOTS) x
# SLURM_PORT_STRIDE, so two jobs sharing a first node do not meet on one port; a run uses its port and the next
# 1 + GROUP_PORTS (llmpt/launch/command.py RunPorts). 20000-31999 lies below Linux's ephemeral range (32768-60999) and
# paddle.distributed.launch's PORT_RANGE (35100-64000), where the kernel and the launcher pick the ports nobody chose.
SLURM_PORT_BASE = 20000
SLURM_PORT_STRIDE = 200
SLURM_PORT_SLOTS = 60
# Kubernetes: how long a pod has between SIGTERM (eviction, preemption, deletion) and SIGKILL. Kubernetes' default
# of 30 s is shorter than a checkpoint of a large model; run-node saves one on SIGTERM and exits 75.
K8S_GRACE_S = 600
# srun --wait: once one node's run-node has ended, how long the others get before srun kills them. Not
# --kill-on-bad-exit: a preempted node exits 75 (non-zero) as soon as its ranks are done, while rank 0 on another node
# may still be writing the checkpoint's completion marker. A node that failed stops the rest within this time (its
# peers would otherwise wait in a collective until train.hang_timeout_s).
SRUN_WAIT_S = 120
# the #SBATCH options launch-script writes itself (each has its own flag, or follows from the run)
_OWN_SBATCH = {
    "--job-name": None, "-J": None, "--nodes": "--nnodes", "-N": "--nnodes", "--ntasks-per-node": None,
    "--gpus-per-node": "--gpus", "--exclusive": None, "--output": None, "-o": None, "--open-mode": None,
    "--partition": "--partition", "-p": "--partition", "--account": "--account", "-A": "--account",
    "--time": "--time", "-t": "--time", "--qos": "--qos", "-q": "--qos", "--requeue": "--requeue",
    "--signal": "--signal-before",
}  # fmt: skip
# Slurm's --time: minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes,
# days-hours:minutes:seconds (sbatch(1)), or UNLIMITED / INFINITE
_SLURM_TIME = re.compile(r"^(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+)(?::(\d+)(?::(\d+))?)?)$")
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.,+:-]*$")  # partition / account / qos names (a list for -p)


def _name(cfg: RunConfig) -> str:
    raw = f"llmpt-{cfg.model.id.split('/')[-1]}-{cfg.strategy.name}".lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in raw)[:63].strip("-")


# ---- paths every node opens ----------------------------------------------------------------------------------------


def absolute(path: str | None) -> str | None:
    """A path as the user gave it, made absolute against this directory (symlinks kept: on a cluster the link is
    often the shared name, and its target differs per node)."""
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def absolute_data(item: str) -> str:
    """`--data PREFIX` or `--data WEIGHT:PREFIX` with PREFIX made absolute."""
    head, sep, rest = item.partition(":")
    try:
        weighted = bool(sep and rest) and float(head) == float(head)
    except ValueError:
        weighted = False
    return f"{head}:{absolute(rest)}" if weighted else str(absolute(item))


def run_paths(cfg: RunConfig) -> list[tuple[str, str]]:
    """Every path of run.yaml a node opens: (where it is in run.yaml, the path)."""
    paths = [("output_dir", cfg.output_dir)]
    paths += [("data.prefixes", p) for p in cfg.data.prefixes]
    paths.append(("data.tokenizer_dir", cfg.data.tokenizer_dir))
    if cfg.model.init_from:
        paths.append(("model.init_from", cfg.model.init_from))
    if cfg.resume_from:
        paths.append(("resume_from", cfg.resume_from))
    return paths


def check_absolute_paths(cfg: RunConfig) -> None:
    """Every path of run.yaml is absolute: a relative one would be resolved against each node's working directory.
    (launch-script makes --output-dir, --data and a directory --init-from absolute; what is left came from a file.)"""
    for where, path in run_paths(cfg):
        if not Path(path).is_absolute():
            origin = {
                "data.prefixes": "a --config file or --set data.prefixes",
                "data.tokenizer_dir": "the data's manifest (prepare-data --tokenizer was given a relative path)",
            }.get(where, where)
            raise LlmptError(
                f"{where} {path!r} (from {origin}) is relative: each node would resolve it against its own working "
                "directory",
                "give it as an absolute path (on the shared file system)",
            )


# ---- Slurm -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlurmOptions:
    """What launch-script --slurm writes besides the run: scheduler settings and how the job survives its limits."""

    partition: str | None = None
    account: str | None = None
    time: str | None = None
    qos: str | None = None
    sbatch: tuple[str, ...] = ()  # further `#SBATCH` lines, as given (e.g. "--constraint=a100")
    requeue: bool = False  # preempted (run-node exits 75): `scontrol requeue` the job
    signal_before: int | None = None  # seconds before the time limit Slurm sends train.preempt_signal
    port: int | None = None  # the rendezvous port; None: derived from the job id (SLURM_PORT_BASE)


def slurm_seconds(text: str) -> int | None:
    """Slurm's --time in seconds; None for UNLIMITED / INFINITE. LlmptError for anything sbatch would refuse."""
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    m = _SLURM_TIME.match(text)
    if not m:
        raise LlmptError(
            f"--time {text!r}: not a Slurm time limit",
            "use MINUTES, HH:MM:SS, D-HH or D-HH:MM:SS (e.g. --time 2-00:00:00), as sbatch --time takes",
        )
    d, dh, dm, ds, mm, ms, hs = m.groups()
    if d is not None:
        return int(d) * 86400 + int(dh) * 3600 + int(dm or 0) * 60 + int(ds or 0)
    if hs is not None:  # H:M:S
        return int(mm) * 3600 + int(ms) * 60 + int(hs)
    return int(mm) * 60 + int(ms or 0)


def check_slurm_options(o: SlurmOptions) -> None:
    """Refuse, one line each, what would make a broken or hijacked script: names with spaces or newlines, a time
    limit sbatch refuses, a signal lead that does not fit it, passthrough lines that are not one sbatch option."""
    for flag, value in (("--partition", o.partition), ("--account", o.account), ("--qos", o.qos)):
        if value is not None and not _SLURM_NAME.match(value):
            raise LlmptError(
                f"{flag} {value!r}: not a Slurm name (letters, digits and _.,+:- only, no spaces or newlines)",
                f"e.g. {flag} gpu",
            )
    limit = slurm_seconds(o.time) if o.time is not None else None
    if o.signal_before is not None:
        if not 1 <= o.signal_before <= 65535:  # sbatch --signal: sig_time is at most 65535 seconds
            raise LlmptError(f"--signal-before {o.signal_before}: must be in 1..65535 seconds (sbatch --signal)")
        if limit is not None and o.signal_before >= limit:
            raise LlmptError(
                f"--signal-before {o.signal_before}: not shorter than --time {o.time} ({limit} s)",
                "the signal must come before the time limit: give fewer seconds, or a longer --time",
            )
    for line in o.sbatch:
        if any(c in line for c in "\n\r\0") or line != line.strip() or not line.startswith("-"):
            raise LlmptError(
                f"--sbatch {line!r}: must be one sbatch option on one line (no newline, no leading space)",
                'e.g. --sbatch "--constraint=a100"',
            )
        key = line.split("=", 1)[0].split(" ", 1)[0]
        if key in _OWN_SBATCH:
            own = _OWN_SBATCH[key]
            raise LlmptError(
                f"--sbatch {line!r}: launch-script writes {key} itself",
                f"use {own}" if own else "it follows from the run (--nnodes, --gpus, the output directory)",
            )
    if o.port is not None and not 0 < o.port < 65536:
        raise LlmptError(f"--port {o.port}: must be in 1..65535")


def slurm_script(cfg: RunConfig, run_yaml: Path, nproc_per_node: int, o: SlurmOptions | None = None) -> str:
    """An sbatch script: one task per node, each running `llmpt run-node --resume` with the first node as master;
    preempted (exit 75) and --requeue: the job requeues itself; run again, it continues from the newest complete
    checkpoint, or, finished, exits 0 at once."""
    o = o or SlurmOptions()
    out = Path(cfg.output_dir)
    log_dir = out / "logs"
    python = shlex.quote(sys.executable)
    signal_name = cfg.train.preempt_signal.removeprefix("SIG")
    node_cmd = (
        f"exec {python} -m llmpt.cli run-node {shlex.quote(str(run_yaml))} --resume "
        f'--master "$LLMPT_MASTER" --node-rank "$SLURM_NODEID" --nproc-per-node {nproc_per_node}'
    )
    port = (
        str(o.port)
        if o.port is not None
        else f"$(( {SLURM_PORT_BASE} + SLURM_JOB_ID % {SLURM_PORT_SLOTS} * {SLURM_PORT_STRIDE} ))"
    )
    sbatch = [
        f"--job-name={_name(cfg)}",
        f"--nodes={cfg.nnodes}",
        "--ntasks-per-node=1",
        *([f"--gpus-per-node={nproc_per_node}"] if cfg.device == "gpu" else []),
        "--exclusive",
        f"--output={log_dir}/slurm-%j.out",  # opened by Slurm before the script runs: launch-script creates the dir
        "--open-mode=append",  # a requeued job appends to its log instead of truncating it
        *([f"--partition={o.partition}"] if o.partition else []),
        *([f"--account={o.account}"] if o.account else []),
        *([f"--time={o.time}"] if o.time else []),
        *([f"--qos={o.qos}"] if o.qos else []),
        *(["--requeue"] if o.requeue else []),
        # without "B:", Slurm signals every process of the job's steps: run-node, the launcher (which ignores it)
        # and the ranks, which finish their step and checkpoint
        *([f"--signal={signal_name}@{o.signal_before}"] if o.signal_before else []),
        *o.sbatch,
    ]
    preempted = int(ExitCode.PREEMPTED)
    on_preempted = (
        [
            f'if [ "$rc" -eq {preempted} ]; then',
            '    echo "llmpt: preempted (exit 75): a complete checkpoint is saved; requeueing job $SLURM_JOB_ID"',
            '    scontrol requeue "$SLURM_JOB_ID"',
            "    exit 0",
            "fi",
        ]
        if o.requeue
        else [
            f'if [ "$rc" -eq {preempted} ]; then',
            '    echo "llmpt: preempted (exit 75): a complete checkpoint is saved; sbatch this script to continue"',
            "fi",
        ]
    )
    lines = [
        "#!/bin/bash",
        f"# llmpt launch-script --slurm: {cfg.model.id} with {cfg.strategy.name} on {cfg.nnodes} nodes x "
        f"{nproc_per_node} {'GPUs' if cfg.device == 'gpu' else 'CPU ranks'} (world size {cfg.world_size})",
        f"# run.yaml: {run_yaml} (data, output and this venv must be at the same paths on every node)",
        "# each submission or requeue runs `llmpt run-node --resume`: from the newest complete checkpoint if there",
        "# is one, else from the start; a finished run exits 0 without training",
        *(f"#SBATCH {s}" for s in sbatch),
        "set -uo pipefail",
        f"PORT={port}",
        'MASTER_HOST="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        'export LLMPT_MASTER="$MASTER_HOST:$PORT"',
        'echo "llmpt: job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NUM_NODES:-?} nodes, '
        'master $LLMPT_MASTER"',
        # a signal to this shell (scancel, the time limit) must not end it before run-node has saved and exited:
        # srun runs in the background and `wait` is resumed until srun is gone
        "trap 'echo \"llmpt: the batch script got SIGTERM; waiting for run-node\"' TERM",
        f"srun --wait={SRUN_WAIT_S} --ntasks-per-node=1 bash -c {shlex.quote(node_cmd)} &",
        "SRUN_PID=$!",
        'while kill -0 "$SRUN_PID" 2>/dev/null; do wait "$SRUN_PID"; done',
        'wait "$SRUN_PID"; rc=$?',
        *on_preempted,
        'exit "$rc"',
        "",
    ]
    return "\n".join(lines)


# ---- Kubernetes ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Volume:
    """A directory of the pods: a PersistentVolumeClaim or a node's hostPath, mounted at `mount` in every pod."""

    kind: str  # "pvc" or "host"
    source: str  # the claim's name, or the node's directory
    mount: str

    @property
    def flag(self) -> str:
        return f"--pvc {self.source}:{self.mount}" if self.kind == "pvc" else f"--host-path {self.source}:{self.mount}"

    def spec(self, name: str) -> dict:
        if self.kind == "pvc":
            return {"name": name, "persistentVolumeClaim": {"claimName": self.source}}
        return {"name": name, "hostPath": {"path": self.source, "type": "Directory"}}


_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # a PersistentVolumeClaim name (DNS subdomain)


def parse_volume(kind: str, text: str) -> Volume:
    """`--pvc CLAIM:/MOUNT` or `--host-path /DIR[:/MOUNT]` (the mount defaults to the same path)."""
    flag = "--pvc" if kind == "pvc" else "--host-path"
    if kind == "pvc":
        source, sep, mount = text.partition(":")
    else:
        source, sep, mount = text.partition(":") if ":" in text else (text, "", text)
    example = "--pvc llmpt-runs:/runs" if kind == "pvc" else "--host-path /data/corpora:/data"
    if kind == "pvc" and not (sep and _K8S_NAME.match(source) and len(source) <= 253):
        raise LlmptError(f"{flag} {text!r}: expected CLAIM:/MOUNT with a lower-case claim name", f"e.g. {example}")
    if kind == "host" and not PurePosixPath(source).is_absolute():
        raise LlmptError(f"{flag} {text!r}: the node's directory must be an absolute path", f"e.g. {example}")
    if not PurePosixPath(mount).is_absolute() or any(c in text for c in "\n\r\0") or mount == "/":
        raise LlmptError(f"{flag} {text!r}: the mount point must be an absolute path other than /", f"e.g. {example}")
    return Volume(kind, source.rstrip("/") or "/", os.path.normpath(mount))


def _needed_dirs(cfg: RunConfig, in_image: list[str]) -> list[tuple[str, str]]:
    """(where in run.yaml, the directory a pod must see) for every path of run.yaml not in the image."""
    dirs = []
    for where, path in run_paths(cfg):
        if not any(_under(path, p) for p in in_image):
            is_dir = where in ("output_dir", "data.tokenizer_dir", "model.init_from")
            dirs.append((where, path if is_dir else str(Path(path).parent)))
    return dirs


def check_volumes(cfg: RunConfig, volumes: list[Volume], in_image: list[str]) -> None:
    """Every path of run.yaml a pod opens lies under a declared volume, or in the image (`in_image`: llmpt's own
    files; the shipped corpus, which run-node prepares on each node). Two volumes on one mount point are refused."""
    mounts = [v.mount for v in volumes]
    if len(set(mounts)) != len(mounts):
        dup = next(m for m in mounts if mounts.count(m) > 1)
        raise LlmptError(f"two volumes are mounted at {dup}", "give each --pvc / --host-path its own mount point")
    for where, folder in _needed_dirs(cfg, in_image):
        if not any(_under(folder, v.mount) for v in volumes):
            raise LlmptError(
                f"--k8s: {where} {folder} is on no declared volume (mounted: {', '.join(mounts)}); the pods would "
                "not see it",
                f"mount it too: --pvc CLAIM:{folder} or --host-path {folder}",
            )


def default_volumes(cfg: RunConfig, in_image: list[str]) -> list[Volume]:
    """Without --pvc / --host-path: the claim llmpt-runs at the run directory, and each other directory the run
    reads from the node's own file system at the same path (hostPath), as a Slurm node would see it."""
    volumes = [Volume("pvc", "llmpt-runs", cfg.output_dir)]
    for _, folder in _needed_dirs(cfg, in_image):
        if not any(_under(folder, v.mount) for v in volumes):
            volumes = [v for v in volumes if v.kind == "pvc" or not _under(v.mount, folder)]  # the outer one covers
            volumes.append(Volume("host", folder, folder))
    return volumes


def _under(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.normpath(path), os.path.normpath(root)]) == os.path.normpath(root)


def paddlejob_manifest(
    cfg: RunConfig, run_yaml_text: str, nproc_per_node: int, image: str, volumes: list[Volume]
) -> str:
    """A ConfigMap carrying run.yaml and a PaddleJob (batch.paddlepaddle.org/v1) with one worker pod per node.

    The operator gives each worker PADDLE_TRAINER_ID and PADDLE_TRAINER_ENDPOINTS (pod IPs); the first endpoint is
    the master. The run directory and the data come from `volumes` (check_volumes, default_volumes). restartPolicy
    OnFailure: a container that exits non-zero (75 when preempted, 1 when a peer failed) is restarted in its pod,
    keeping the pod's IP, and `run-node --resume` continues from the newest complete checkpoint; a finished run exits
    0 and is not restarted."""
    name = _name(cfg)
    node_cmd = (
        'exec llmpt run-node /llmpt/run.yaml --resume --master "${PADDLE_TRAINER_ENDPOINTS%%,*}" '
        f'--node-rank "$PADDLE_TRAINER_ID" --nproc-per-node {nproc_per_node}'
    )
    container: dict = {
        "name": "llmpt",
        "image": image,
        "command": ["bash", "-c", node_cmd],
        "volumeMounts": [
            {"name": "run", "mountPath": "/llmpt", "readOnly": True},
            *({"name": f"vol{i}", "mountPath": v.mount} for i, v in enumerate(volumes)),
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
                        "restartPolicy": "OnFailure",
                        "terminationGracePeriodSeconds": K8S_GRACE_S,
                        "containers": [container],
                        "volumes": [
                            {"name": "run", "configMap": {"name": f"{name}-run"}},
                            *(v.spec(f"vol{i}") for i, v in enumerate(volumes)),
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
        f"# volumes: {', '.join(v.flag for v in volumes)}\n"
    )
    return head + yaml.dump_all([config_map, job], Dumper=_BlockDumper, sort_keys=False, width=1000)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the embedded run.yaml) as literal blocks, readable in the manifest."""


_BlockDumper.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)
