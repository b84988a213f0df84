"""`llmpt launch-script --slurm|--k8s` (one resolved run -> cluster launch files) and `llmpt run-node` (what those
files run on every node: one node's ranks of an existing run.yaml)."""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import typer

from llmpt import schemas
from llmpt.cli import options as opt
from llmpt.cli._common import console, err_console, print_json
from llmpt.errors import LlmptError, LlmptWarning
from llmpt.launch.scripts import SLURM_PORT_BASE, SLURM_PORT_SLOTS, SLURM_PORT_STRIDE

_SLURM_ONLY = ("--partition", "--account", "--time", "--qos", "--sbatch", "--requeue", "--signal-before", "--port")
_K8S_ONLY = ("--image", "--pvc", "--host-path")


def launch_script(
    model: str = opt.MODEL,
    strategy: str = opt.STRATEGY_REQUIRED,
    nnodes: int = typer.Option(..., "--nnodes", help="Number of nodes."),
    gpus: str = opt.GPUS,
    slurm: bool = typer.Option(False, "--slurm", help="Write an sbatch script (OUT/launch.sbatch)."),
    k8s: bool = typer.Option(False, "--k8s", help="Write a PaddleJob manifest (OUT/paddlejob.yaml)."),
    data: list[str] = opt.DATA,
    device: str = opt.DEVICE,
    seq_len: int = opt.SEQ_LEN,
    max_steps: int = opt.MAX_STEPS,
    save_steps: int = opt.SAVE_STEPS,
    seed: int = opt.SEED,
    output_dir: str = opt.OUTPUT_DIR,
    init_from: str = opt.INIT_FROM,
    config_file: str = opt.CONFIG,
    set_items: list[str] = opt.SET,
    allow_partial: bool = opt.ALLOW_PARTIAL,
    device_type: str = opt.DEVICE_TYPE,
    force: bool = opt.FORCE,
    overwrite: bool = opt.OVERWRITE,
    resume: bool = typer.Option(
        False, "--resume", help="Write the files to continue the run in --output-dir (its newest complete checkpoint)."
    ),
    image: str = typer.Option("llmpt:latest", "--image", help="--k8s: container image with llmpt installed."),
    pvc: list[str] = typer.Option(
        None, "--pvc", help="--k8s: mount a PersistentVolumeClaim: CLAIM:/MOUNT (repeatable; default llmpt-runs at -o)."
    ),
    host_path: list[str] = typer.Option(
        None, "--host-path", help="--k8s: mount a node directory: /DIR[:/MOUNT] (repeatable)."
    ),
    port: int = typer.Option(
        None,
        "--port",
        help=f"--slurm: rendezvous port on the first node (default: {SLURM_PORT_BASE} + job id % {SLURM_PORT_SLOTS} x "
        f"{SLURM_PORT_STRIDE}); the run also uses the next 129.",
    ),
    partition: str = typer.Option(None, "--partition", help="--slurm: #SBATCH --partition."),
    account: str = typer.Option(None, "--account", help="--slurm: #SBATCH --account."),
    time_limit: str = typer.Option(None, "--time", help="--slurm: #SBATCH --time (e.g. 2-00:00:00)."),
    qos: str = typer.Option(None, "--qos", help="--slurm: #SBATCH --qos."),
    sbatch: list[str] = typer.Option(
        None, "--sbatch", help='--slurm: another #SBATCH line, e.g. --sbatch "--constraint=a100" (repeatable).'
    ),
    requeue: bool = typer.Option(
        False, "--requeue", help="--slurm: a preempted run (exit 75) requeues its job; it resumes when it starts again."
    ),
    signal_before: int = typer.Option(
        None,
        "--signal-before",
        help="--slurm: send train.preempt_signal this many seconds before the time limit (a checkpoint, exit 75).",
    ),
    json_out: bool = opt.JSON,
) -> None:
    """Write the cluster launch files for a run: the same checks and run.yaml as llmpt train, started on each node."""
    from llmpt.launch.scripts import (
        SlurmOptions,
        absolute,
        absolute_data,
        check_absolute_paths,
        check_slurm_options,
        check_volumes,
        default_volumes,
        paddlejob_manifest,
        parse_volume,
        slurm_script,
    )
    from llmpt.launch.state import nothing_left
    from llmpt.launch.supervise import prepare_output_dir
    from llmpt.launch.trust import pickle_warnings
    from llmpt.resolve import RunRequest, resolve_run
    from llmpt.run_config import write_run_yaml
    from llmpt.run_dir import RunDir

    if slurm == k8s:
        raise LlmptError("launch-script needs exactly one of --slurm or --k8s", "e.g. llmpt launch-script … --slurm")
    if k8s and not image.strip():
        raise LlmptError(f"--image {image!r}: empty; --k8s needs the container image with llmpt installed")
    slurm_opts = SlurmOptions(partition, account, time_limit, qos, tuple(sbatch or ()), requeue, signal_before, port)
    check_slurm_options(slurm_opts)
    volumes = [parse_volume("pvc", v) for v in pvc or ()] + [parse_volume("host", v) for v in host_path or ()]
    given = {f for f, v in zip(_SLURM_ONLY, (partition, account, time_limit, qos, sbatch, requeue, signal_before, port),
                                 strict=True) if v}  # fmt: skip
    given |= {f for f, v in zip(_K8S_ONLY, (image != "llmpt:latest", pvc, host_path), strict=True) if v}
    unused = sorted(given - set(_SLURM_ONLY if slurm else _K8S_ONLY), key=(*_SLURM_ONLY, *_K8S_ONLY).index)
    for flag in unused:
        warnings.warn(f"{flag} has no effect with {'--slurm' if slurm else '--k8s'}", LlmptWarning, stacklevel=1)
    # every node opens the same paths: made absolute here, where they were given
    fields = opt.request_fields(locals())
    fields |= {"output_dir": absolute(output_dir), "data": tuple(absolute_data(d) for d in fields["data"])}
    if init_from and Path(init_from).expanduser().exists():
        fields["init_from"] = absolute(init_from)
    # the nodes find each other on the cluster: the master is known there, not here
    request = RunRequest(**fields, master=f"first-node:{port or SLURM_PORT_BASE}", local=False)
    cfg = resolve_run(request)
    if not Path(cfg.output_dir).is_absolute():  # the default run directory, under this directory
        cfg = resolve_run(replace(request, output_dir=absolute(cfg.output_dir)))
    check_absolute_paths(cfg)
    if k8s and volumes:
        check_volumes(cfg, volumes, _in_image())
    elif k8s:
        volumes = default_volumes(cfg, _in_image())
    if resume and (why := nothing_left(cfg.output_dir, cfg.resume_from, cfg.train.max_steps)):
        raise LlmptError(
            f"--resume: {why}: the files would train nothing",
            "raise --max-steps to train further, or start a new run with another --output-dir",
        )
    prepare_output_dir(cfg, overwrite=overwrite)
    out = Path(cfg.output_dir)
    run_yaml = RunDir(out).run_yaml
    write_run_yaml(cfg, run_yaml)
    n = cfg.nproc_per_node
    if slurm:
        script = out / "launch.sbatch"
        (out / "logs").mkdir(exist_ok=True)  # Slurm opens #SBATCH --output before the script runs
        text = slurm_script(cfg, run_yaml, n, slurm_opts)
    else:
        script = out / "paddlejob.yaml"
        text = paddlejob_manifest(cfg, run_yaml.read_text(encoding="utf-8"), n, image, volumes)
    tmp = script.with_name(script.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(script)
    if slurm:
        script.chmod(0o755)
    for w in pickle_warnings(cfg):
        warnings.warn(w, LlmptWarning, stacklevel=1)
    if json_out:
        print_json(
            {
                "output_dir": cfg.output_dir,
                "run_yaml_path": str(run_yaml),
                "script_path": str(script),
                "world_size": cfg.world_size,
                "nnodes": nnodes,
                "nproc_per_node": n,
            },
            schemas.LAUNCH_SCRIPT,
        )
        return
    console.print(f"wrote {run_yaml} and {script}", highlight=False)
    console.print(f"submit: {'sbatch' if slurm else 'kubectl apply -f'} {script}", highlight=False)


def _in_image() -> list[str]:
    """What a pod has without a volume: llmpt's own files (its shipped tokenizer) and the shipped corpus, which
    run-node prepares in the pod's cache."""
    from llmpt.data.prepare import shipped_prefix

    return [str(Path(__file__).resolve().parents[1]), str(shipped_prefix())]


def run_node(
    run_yaml: str = typer.Argument(..., help="The run.yaml launch-script (or llmpt train) wrote."),
    master: str = opt.MASTER,
    node_rank: int = opt.NODE_RANK,
    nproc_per_node: int = typer.Option(None, "--nproc-per-node", help="Ranks on this node (default: even split)."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue from the newest complete checkpoint if there is one, else start; a finished run trains nothing.",
    ),
    host: str = typer.Option(
        None, "--host", help="This node's IP address for the other nodes (default: the master's on node 0)."
    ),
    json_out: bool = opt.JSON,
) -> None:
    """Start this node's ranks of an existing run (what launch-script's files run on every node)."""
    from llmpt.cli.progress import progress_printer
    from llmpt.data.prepare import prepare_shipped
    from llmpt.interop.convert import prepare_init_weights
    from llmpt.launch.checkpoints import last_complete
    from llmpt.launch.command import (
        RunPorts,
        check_host,
        check_master_here,
        check_master_port,
        check_multinode,
        check_ports_free,
        resolve_master,
    )
    from llmpt.launch.state import nothing_left
    from llmpt.launch.supervise import check_devices_here, check_output_writable, run_training
    from llmpt.launch.trust import pickle_warnings

    cfg = _read_run_yaml(Path(run_yaml))
    if not 1 <= cfg.nnodes <= cfg.world_size:
        raise LlmptError(
            f"{run_yaml}: nnodes {cfg.nnodes} and world_size {cfg.world_size}: allowed: 1 <= nnodes <= world_size",
            "pass the run.yaml llmpt launch-script wrote, unedited",
        )
    n = cfg.world_size // cfg.nnodes if nproc_per_node is None else nproc_per_node
    if n < 1 or n * cfg.nnodes != cfg.world_size:
        raise LlmptError(
            f"--nproc-per-node {n} x {cfg.nnodes} nodes != world size {cfg.world_size} of {run_yaml}",
            f"pass --nproc-per-node {cfg.world_size // cfg.nnodes}",
        )
    check_multinode(cfg.nnodes, master, node_rank)
    out = Path(cfg.output_dir)
    newest = last_complete(out) if resume else None
    if resume and (why := nothing_left(out, str(newest) if newest else None, cfg.train.max_steps)):
        # a requeued or restarted job whose run is complete: nothing to do, and nothing to fail
        if json_out:
            print_json(
                {"node_rank": node_rank or 0, "ranks_finished": True, "nothing_to_train": why, "summary": str(out)},
                schemas.NODE_SUMMARY,
            )
        else:
            err_console.print(f"llmpt run-node: {why}", highlight=False, soft_wrap=True)
        return
    master = resolve_master(master)
    check_host(host)
    check_master_port(master, node_rank)
    check_master_here(master, node_rank)
    ports = RunPorts(int(master.rpartition(":")[2])) if master else None
    if ports is not None:
        check_ports_free(master, ports.opened_on(node_rank))
    check_devices_here(cfg)
    check_output_writable(out)
    _check_inputs(cfg, Path(run_yaml))
    if resume:
        cfg = _resumed(cfg, newest)
    cfg = cfg.on_node(master, node_rank, n)
    for w in pickle_warnings(cfg):  # now, before anything is loaded (a LlmptWarning shows when the command ends)
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    prepare_shipped(cfg.data.prefixes)  # every check passed: the first write
    prepare_init_weights(cfg.model.init_source, cfg.model.family)  # a Hugging Face --init-from, converted here too
    if resume:
        _new_attempt(cfg, node_rank or 0, n)
    # paddle.distributed.launch reads its host IP from POD_IP (its --host): the address its peers reach it at. On
    # node 0 that is the master's, so its launcher knows the rendezvous is its own and serves it.
    launcher_host = host or (master.rpartition(":")[0] if master and not node_rank else None)
    if launcher_host:
        os.environ["POD_IP"] = launcher_host
    if not json_out:  # --json: stderr is left to the one llmpt.error/1 object of a failure
        start = f"from {Path(cfg.resume_from).name}" if cfg.resume_from else "from step 0"
        err_console.print(
            f"[bold]llmpt run-node[/] {cfg.model.id} · {cfg.strategy.name} · node {node_rank or 0}/{cfg.nnodes} · "
            f"{n} {cfg.device} ranks · {start} → {cfg.output_dir}",
            highlight=False,
            soft_wrap=True,
        )
    # a node's log (Slurm's): plain progress lines from rank 0's metrics when this node sees them
    summary = run_training(cfg, progress=None if json_out else progress_printer(cfg))
    if json_out:
        print_json(summary)
    else:
        console.print(f"node {node_rank or 0}: done; {cfg.output_dir}/summary.json", highlight=False)


def _resumed(cfg, ckpt: Path | None):
    """run-node --resume: the run from its newest complete checkpoint (checked as llmpt train --resume checks it),
    or from the start when it has none yet."""
    from llmpt.resolve.resume import check_resume

    cfg = cfg.model_copy(update={"resume_from": str(ckpt) if ckpt else None})
    return check_resume(cfg) if ckpt else cfg


def _new_attempt(cfg, node_rank: int, nproc: int) -> None:
    """Before a restarted node starts its ranks: its own ranks' files of the last attempt go (a stale pid file would
    read as a dead rank, stale progress as a hang); node 0 also clears what would mix into this attempt: checkpoints
    newer than the one resumed (saves cut short), and, starting afresh, the last attempt's results."""
    from llmpt.run_dir import RunDir

    run = RunDir(cfg.output_dir)
    for rank in range(node_rank * nproc, (node_rank + 1) * nproc):
        for p in (run.rank_pid(rank), run.rank_report(rank), run.rank_progress(rank), run.rank_stack(rank)):
            p.unlink(missing_ok=True)
    if node_rank != 0:
        return
    run.preempt_request.unlink(missing_ok=True)
    resumed = int(Path(cfg.resume_from).name.rsplit("-", 1)[1]) if cfg.resume_from else -1
    for step, p in run.checkpoints():
        if step > resumed:
            shutil.rmtree(p)
    if cfg.resume_from is None:
        for p in run.outputs_of_a_run():
            p.unlink(missing_ok=True)


def _check_inputs(cfg, run_yaml: Path) -> None:
    """What the ranks will open exists on this node (data must be at the same paths on every node): each prefix's
    files and header, the tokenizer directory. Hashes were checked where run.yaml was written."""
    from llmpt.data.prepare import open_prepared, shipped_pending

    for prefix in cfg.data.prefixes:
        if not shipped_pending(prefix):  # the shipped corpus is prepared on this node if it is not there yet
            open_prepared(prefix, f"{run_yaml}: data.prefixes:")
    if not Path(cfg.data.tokenizer_dir).is_dir():
        raise LlmptError(
            f"{run_yaml}: data.tokenizer_dir {cfg.data.tokenizer_dir}: no such directory on this node",
            "data, tokenizer and the Python environment must be at the same paths on every node",
        )


def _read_run_yaml(path: Path):
    """The run.yaml launch-script wrote; whatever is wrong with the file (missing, a directory, not UTF-8, not YAML,
    not a mapping, not a run) is one line naming it."""
    from llmpt.run_config import load_run_yaml
    from llmpt.strategies.presets import read_yaml

    hint = "pass the run.yaml llmpt launch-script (or llmpt train) wrote: OUTPUT_DIR/run.yaml"
    try:
        if not read_yaml(path):
            raise LlmptError(f"{path}: empty; expected a run.yaml", hint)
        return load_run_yaml(path)
    except LlmptError as e:
        raise LlmptError(e.message, e.hint or hint) from None
