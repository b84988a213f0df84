"""`llmpt plan MODEL --strategy NAME --gpus N`: show what a run would be, start nothing."""

from __future__ import annotations

import typer
import yaml
from rich.panel import Panel

from llmpt.cli._common import console, handles_errors, print_json
from llmpt.launch.command import format_command
from llmpt.planning import make_plan


@handles_errors
def plan(
    model: str = typer.Argument(..., help="Model id or alias, e.g. qwen-7b or meta-llama/Llama-2-7b."),
    strategy: str = typer.Option(..., "--strategy", "-s", help="Strategy preset/name (llmpt presets list) or YAML."),
    gpus: str = typer.Option("8", "--gpus", help="Devices per node: a count (8) or ids (0,1,2,3)."),
    nnodes: int = typer.Option(1, "--nnodes", help="Number of nodes; world size = devices x nodes."),
    master: str = typer.Option(None, "--master", help="HOST:PORT of the rank-0 node (multi-node)."),
    node_rank: int = typer.Option(None, "--node-rank", help="This node's rank (multi-node)."),
    seq_len: int = typer.Option(4096, "--seq-len", help="Training sequence length."),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", help="Allow capabilities the matrix marks partial (🚧), with a warning."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Resolve and check a run: strategy, fleet hybrid config, PaddleNLP arguments, launch command."""
    p = make_plan(
        model,
        strategy,
        gpus,
        nnodes=nnodes,
        master=master,
        node_rank=node_rank,
        seq_len=seq_len,
        allow_partial=allow_partial,
    )
    d = p.to_dict()
    if json_out:
        print_json(d)
        return
    deg = d["degrees"]
    m = d["model"]["config"]
    console.print(
        f"[bold]{p.model.id}[/] ({p.model.family}: hidden {p.model.hidden_size}, {p.model.num_hidden_layers} layers, "
        f"{p.model.num_attention_heads} heads, {p.model.num_key_value_heads} kv heads, vocab {m['vocab_size']}, "
        f"seq {p.seq_len})",
        highlight=False,
    )
    console.print(
        f"[bold]{p.model.id}[/] with [bold]{p.strategy.name}[/] on {d['world_size']} ranks "
        f"({d['nproc_per_node']} x {d['nnodes']} node{'s' if d['nnodes'] > 1 else ''}): "
        + " x ".join(f"{k}{v}" for k, v in deg.items() if v > 1 or k == "dp"),
        highlight=False,
    )
    for title, key in (
        ("strategy", "strategy"),
        ("fleet hybrid_configs", "hybrid_configs"),
        ("PaddleNLP training arguments", "training_args"),
    ):
        console.print(Panel(yaml.safe_dump(d[key], sort_keys=False).rstrip(), title=title, title_align="left"))
    console.print(Panel(format_command(p.launch_command), title="launch command", title_align="left"))
    for n in p.notes:
        console.print(f"[dim]note:[/] {n}", highlight=False)
