"""`llmpt launch-script --slurm|--k8s` (one resolved run -> cluster launch files) and `llmpt run-node` (what those
files run on every node: one node's ranks of an existing run.yaml)."""

from __future__ import annotations

from pathlib import Path

import typer

from llmpt import schemas
from llmpt.cli import options as opt
from llmpt.cli._common import console, err_console, print_json
from llmpt.errors import LlmptError


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
    image: str = typer.Option("llmpt:latest", "--image", help="--k8s: container image with llmpt installed."),
    port: int = opt.PORT,
    json_out: bool = opt.JSON,
) -> None:
    """Write the cluster launch files for a run: the same checks and run.yaml as llmpt train, started on each node."""
    from llmpt.launch.scripts import paddlejob_manifest, slurm_script
    from llmpt.launch.supervise import prepare_output_dir
    from llmpt.resolve import RunRequest, resolve_run
    from llmpt.run_config import write_run_yaml
    from llmpt.run_dir import RunDir

    if slurm == k8s:
        raise LlmptError("launch-script needs exactly one of --slurm or --k8s", "e.g. llmpt launch-script … --slurm")
    if not 0 < port < 65536:
        raise LlmptError(f"--port {port}: must be in 1..65535")
    if k8s and not image.strip():
        raise LlmptError(f"--image {image!r}: empty; --k8s needs the container image with llmpt installed")
    # the nodes find each other on the cluster: the master is known there, not here
    fields = opt.request_fields(locals())
    cfg = resolve_run(RunRequest(**fields, master=f"first-node:{port}", local=False))
    prepare_output_dir(cfg, overwrite=overwrite)
    out = Path(cfg.output_dir)
    run_yaml = RunDir(out).run_yaml
    write_run_yaml(cfg, run_yaml)
    n = cfg.nproc_per_node
    if slurm:
        script = out / "launch.sbatch"
        text = slurm_script(cfg, run_yaml, n, port)
    else:
        script = out / "paddlejob.yaml"
        text = paddlejob_manifest(cfg, run_yaml.read_text(encoding="utf-8"), n, image)
    tmp = script.with_name(script.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(script)
    if slurm:
        script.chmod(0o755)
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


def run_node(
    run_yaml: str = typer.Argument(..., help="The run.yaml launch-script (or llmpt train) wrote."),
    master: str = opt.MASTER,
    node_rank: int = opt.NODE_RANK,
    nproc_per_node: int = typer.Option(None, "--nproc-per-node", help="Ranks on this node (default: even split)."),
    json_out: bool = opt.JSON,
) -> None:
    """Start this node's ranks of an existing run (what launch-script's files run on every node)."""
    from llmpt.data.prepare import prepare_shipped
    from llmpt.interop.convert import prepare_init_weights
    from llmpt.launch.command import check_master_port, check_multinode
    from llmpt.launch.supervise import check_devices_here, check_output_writable, run_training

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
    check_master_port(master, node_rank)
    check_devices_here(cfg)
    check_output_writable(Path(cfg.output_dir))
    _check_inputs(cfg, Path(run_yaml))
    cfg = cfg.on_node(master, node_rank, n)
    prepare_shipped(cfg.data.prefixes)  # every check passed: the first write
    prepare_init_weights(cfg.model.init_source, cfg.model.family)  # a Hugging Face --init-from, converted here too
    if not json_out:  # --json: stderr is left to the one llmpt.error/1 object of a failure
        err_console.print(
            f"[bold]llmpt run-node[/] {cfg.model.id} · {cfg.strategy.name} · node {node_rank or 0}/{cfg.nnodes} · "
            f"{n} {cfg.device} ranks → {cfg.output_dir}",
            highlight=False,
            soft_wrap=True,
        )
    summary = run_training(cfg)
    if json_out:
        print_json(summary)
    else:
        console.print(f"node {node_rank or 0}: done; {cfg.output_dir}/summary.json", highlight=False)


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
