"""`llmpt launch-script --slurm|--k8s` (one resolved run -> cluster launch files) and `llmpt run-node` (what those
files run on every node: one node's ranks of an existing run.yaml)."""

from __future__ import annotations

from pathlib import Path

import typer

from llmpt.cli._common import console, err_console, handles_errors, print_json
from llmpt.errors import LlmptError


@handles_errors
def launch_script(
    model: str = typer.Argument(..., help="Model id or alias."),
    strategy: str = typer.Option(..., "--strategy", "-s", help="Strategy preset/name or YAML file."),
    nnodes: int = typer.Option(..., "--nnodes", help="Number of nodes."),
    gpus: str = typer.Option("8", "--gpus", help="Devices per node (CPU: ranks per node)."),
    slurm: bool = typer.Option(False, "--slurm", help="Write an sbatch script (OUT/launch.sbatch)."),
    k8s: bool = typer.Option(False, "--k8s", help="Write a PaddleJob manifest (OUT/paddlejob.yaml)."),
    data: list[str] = typer.Option(
        None, "--data", help="Prepared prefix (repeatable), at the same path on every node."
    ),
    device: str = typer.Option("gpu", "--device", help="gpu or cpu."),
    seq_len: int = typer.Option(None, "--seq-len", help="Sequence length."),
    max_steps: int = typer.Option(None, "--max-steps", help="Optimizer steps."),
    save_steps: int = typer.Option(None, "--save-steps", help="Checkpoint every N steps."),
    output_dir: str = typer.Option(None, "--output-dir", "-o", help="Run directory, shared by the nodes."),
    config: str = typer.Option(None, "--config", help="YAML with train/strategy/data/seq_len sections."),
    set_: list[str] = typer.Option(None, "--set", help="Override, as for llmpt train (repeatable)."),
    device_type: str = typer.Option(None, "--device-type", help="GPU model for the memory check."),
    force: bool = typer.Option(False, "--force", help="Write even if the planner predicts it does not fit."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a previous run in the run directory."),
    image: str = typer.Option("llmpt:latest", "--image", help="--k8s: container image with llmpt installed."),
    port: int = typer.Option(36017, "--port", help="Rendezvous port on the first node."),
    json_out: bool = typer.Option(False, "--json", help="Print the written paths as JSON."),
) -> None:
    """Write the cluster launch files for a run: the same checks and run.yaml as llmpt train, started on each node."""
    from llmpt.launch.scripts import paddlejob_manifest, slurm_script
    from llmpt.launch.supervise import prepare_output_dir
    from llmpt.resolve import TrainRequest, resolve_run
    from llmpt.run_config import write_run_yaml

    if slurm == k8s:
        raise LlmptError("launch-script needs exactly one of --slurm or --k8s", "e.g. llmpt launch-script … --slurm")
    if not 0 < port < 65536:
        raise LlmptError(f"--port {port}: must be in 1..65535")
    req = TrainRequest(
        model=model,
        strategy=strategy,
        data=list(data or []),
        device=device,
        gpus=gpus,
        nnodes=nnodes,
        master=f"first-node:{port}",
        seq_len=seq_len,
        max_steps=max_steps,
        save_steps=save_steps,
        output_dir=output_dir,
        config_file=config,
        set_items=list(set_ or []),
        device_type=device_type,
        force=force,
        check_port=False,
    )
    cfg, plan = resolve_run(req)
    cfg = prepare_output_dir(cfg, resume=False, overwrite=overwrite)
    out = Path(cfg.output_dir)
    run_yaml = out / "run.yaml"
    write_run_yaml(cfg, run_yaml)
    n = plan.topology.nproc_per_node
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
        print_json({"run_yaml": str(run_yaml), "script": str(script), "nnodes": nnodes, "nproc_per_node": n})
        return
    console.print(f"wrote {run_yaml} and {script}", highlight=False)
    console.print(f"submit: {'sbatch' if slurm else 'kubectl apply -f'} {script}", highlight=False)


@handles_errors
def run_node(
    run_yaml: str = typer.Argument(..., help="The run.yaml launch-script (or llmpt train) wrote."),
    master: str = typer.Option(None, "--master", help="HOST:PORT of the first node."),
    node_rank: int = typer.Option(None, "--node-rank", help="This node's rank."),
    nproc_per_node: int = typer.Option(None, "--nproc-per-node", help="Ranks on this node (default: even split)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Start this node's ranks of an existing run (what launch-script's files run on every node)."""
    from llmpt.launch.command import Topology, check_master_port, check_multinode
    from llmpt.launch.supervise import run_training
    from llmpt.run_config import load_run_yaml

    cfg = load_run_yaml(Path(run_yaml))
    n = nproc_per_node or cfg.world_size // cfg.nnodes
    if n < 1 or n * cfg.nnodes != cfg.world_size:
        raise LlmptError(
            f"--nproc-per-node {n} x {cfg.nnodes} nodes != world size {cfg.world_size} of {run_yaml}",
            f"pass --nproc-per-node {cfg.world_size // cfg.nnodes}",
        )
    check_multinode(cfg.nnodes, master, node_rank)
    check_master_port(master, node_rank)
    topo = Topology(
        devices=tuple(str(i) for i in range(n)),
        device=cfg.device,
        nnodes=cfg.nnodes,
        master=master,
        node_rank=node_rank,
    )
    err_console.print(
        f"[bold]llmpt run-node[/] {cfg.model.id} · {cfg.strategy.name} · node {node_rank or 0}/{cfg.nnodes} · "
        f"{n} {cfg.device} ranks → {cfg.output_dir}",
        highlight=False,
        soft_wrap=True,
    )
    summary = run_training(cfg, topo)
    if json_out:
        print_json(summary)
    else:
        console.print(f"node {node_rank or 0}: done; {cfg.output_dir}/summary.json", highlight=False)
