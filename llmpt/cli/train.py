"""`llmpt train`: resolve, check, write run.yaml, launch through paddle.distributed.launch, summarise."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.table import Table

from llmpt import schemas
from llmpt.cli import options as opt
from llmpt.cli._common import console, err_console, print_json, print_table


def train(
    model: str = typer.Argument(None, help="Model id or alias. None: the demo (llama-tiny, dp2, CPU, shipped corpus)."),
    strategy: str = opt.STRATEGY,
    data: list[str] = opt.DATA,
    device: str = opt.DEVICE,
    gpus: str = opt.GPUS,
    nnodes: int = opt.NNODES,
    master: str = opt.MASTER,
    node_rank: int = opt.NODE_RANK,
    seq_len: int = opt.SEQ_LEN,
    max_steps: int = opt.MAX_STEPS,
    output_dir: str = opt.OUTPUT_DIR,
    init_from: str = opt.INIT_FROM,
    seed: int = opt.SEED,
    save_steps: int = opt.SAVE_STEPS,
    resume: bool = opt.RESUME,
    overwrite: bool = opt.OVERWRITE,
    config_file: str = opt.CONFIG,
    set_items: list[str] = opt.SET,
    allow_partial: bool = opt.ALLOW_PARTIAL,
    device_type: str = opt.DEVICE_TYPE,
    force: bool = opt.FORCE,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the command and run.yaml; start nothing."),
    json_out: bool = opt.JSON,
) -> None:
    """Pretrain MODEL with a strategy: real PaddleNLP training on every rank through paddle.distributed.launch."""
    from llmpt.cli.progress import progress_printer
    from llmpt.interop.convert import prepare_init_weights
    from llmpt.launch.command import RunPorts, check_ports_free, format_command, run_launch_command
    from llmpt.launch.state import nothing_left
    from llmpt.launch.supervise import check_devices_here, prepare_output_dir, run_training
    from llmpt.launch.trust import pickle_warnings
    from llmpt.resolve import RunRequest, resolve_run
    from llmpt.run_dir import RunDir

    cfg = resolve_run(RunRequest(**opt.request_fields(locals())))
    if dry_run:
        run_config = cfg.model_dump(mode="json")  # what run.yaml will hold
        if json_out:
            run_yaml_path = str(RunDir(Path(cfg.output_dir)).run_yaml)
            print_json(
                {"command": run_launch_command(cfg), "run_yaml_path": run_yaml_path, "run_config": run_config},
                schemas.DRY_RUN,
            )
        else:
            typer.echo(format_command(run_launch_command(cfg)))
            typer.echo(yaml.safe_dump(run_config, sort_keys=False, allow_unicode=True).rstrip())
        return
    if cfg.resume_from is not None and (done := nothing_left(cfg.output_dir, cfg.resume_from, cfg.train.max_steps)):
        # a finished run stays finished: no launch, no step, nothing written
        if json_out:
            print_json({"output_dir": cfg.output_dir, "trained_steps": 0, "why": done}, schemas.NOTHING_TO_TRAIN)
        else:
            err_console.print(f"{done} (raise --max-steps to train on)", highlight=False, soft_wrap=True)
        return
    check_devices_here(cfg)
    if cfg.master:  # every port this node will open, free before the first write (run-node checks the same)
        check_ports_free(cfg.master, RunPorts(int(cfg.master.rpartition(":")[2])).opened_on(cfg.node_rank))
    prepare_output_dir(cfg, overwrite=overwrite)
    prepare_init_weights(cfg.model.init_source, cfg.model.family)  # a Hugging Face --init-from, converted once
    if not json_out:  # --json: stderr is left to the one llmpt.error/1 object of a failure (notes: run.yaml)
        for w in pickle_warnings(cfg):  # before anything is loaded
            err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
        for n in cfg.notes:
            err_console.print(f"[dim]note:[/] {n}", highlight=False, soft_wrap=True)
        for w in cfg.data.repeat_warnings():
            err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
        err_console.print(
            f"[bold]llmpt train[/] {cfg.model.id} · {cfg.strategy.name} · {cfg.device} x{cfg.world_size} · "
            f"seq {cfg.data.seq_len} · {cfg.train.max_steps} steps → {cfg.output_dir}",
            highlight=False,
            soft_wrap=True,
        )
    summary = run_training(cfg, progress=None if json_out else progress_printer(cfg))
    if json_out:
        print_json(summary)
        return
    if "node_rank" in summary:
        console.print(f"node {summary['node_rank']}: every rank finished; the run summary is {summary['summary']}")
        return
    _print_summary(summary, cfg.output_dir)


def _print_summary(s, output_dir: str) -> None:
    from rich import box

    from llmpt.launch.summary import checkpoint_line, sparkline

    table = Table(title="run summary (seed table format)", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("model", "seq len", "strategy", "tokens/card/s", "MFU", "memory (MB)", "final loss"):
        table.add_column(col, no_wrap=True)
    mem = f"{s['peak_memory_mb']:.0f}" if s["peak_memory_mb"] else "n/a"
    table.add_row(
        s["model"],
        str(s["seq_len"]),
        s["strategy"],
        f"{s['tokens_per_card_per_sec']:.2f}",
        "n/a" if s["mfu"] is None else f"{s['mfu']:.1%}",
        mem,
        f"{s['final_loss']:.4f}" if s["final_loss"] is not None else "n/a",
    )
    print_table(table)  # never "llama-ti…": stacked when the terminal (or a pipe's 80 columns) is too narrow
    losses = [p["loss"] for p in s["losses"]]
    if losses:
        console.print(f"loss {losses[0]:.3f} {sparkline(losses)} {losses[-1]:.3f}", highlight=False)
    evals = s.get("eval_losses") or []
    if evals:
        shown = ", ".join(f"{e['loss']:.3f} @{e['step']}" for e in evals[-6:])
        console.print(f"eval loss (validation split) {shown}", highlight=False, soft_wrap=True)
    if ckpt := checkpoint_line(s):
        console.print(ckpt, highlight=False, soft_wrap=True)
    console.print(
        f"[dim]{s['peak_memory_kind']}; throughput = mean over steps "
        f"{s['throughput_window'][0]}..{s['throughput_window'][1]}; "
        f"{output_dir}/summary.json, {output_dir}/loss.png[/]",
        highlight=False,
        soft_wrap=True,
    )
