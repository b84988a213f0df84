"""`llmpt export RUN_OR_CHECKPOINT --output DIR`: one unsplit model in the Hugging Face (or PaddleNLP) layout."""

from __future__ import annotations

import typer

from llmpt import schemas
from llmpt.cli._common import console, print_json


def export(
    source: str = typer.Argument(
        ...,
        help="A run directory (its final model, else its newest complete checkpoint), a checkpoint-N, or a "
        "save_pretrained() directory.",
    ),
    output: str = typer.Option(..., "--output", "-o", help="New directory to write the model into."),
    fmt: str = typer.Option("hf", "--format", help="hf (config.json + safetensors for transformers) or paddle."),
    dtype: str = typer.Option(None, "--dtype", help="fp32, bf16 or fp16 (default: as the weights are stored)."),
    max_shard_size: str = typer.Option(
        "5GB", "--max-shard-size", help="Largest safetensors file; above it, shards + model.safetensors.index.json."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: what was written."),
) -> None:
    """Merge a run's or checkpoint's shards (tp, pp, sharding) into one model and write it with its tokenizer."""
    from llmpt.interop.export import export as run_export

    report = run_export(source, output, fmt, dtype, max_shard_size)
    if json_out:
        print_json(report, schemas.EXPORT)
        return
    size = sum(f["bytes"] for f in report["files"])
    console.print(
        f"[bold]llmpt export[/] {report['weights']} → {report['output_dir']} ({report['format']}, {report['dtype']}): "
        f"{report['tensors']} tensors, {report['parameters']:,} parameters, {len(report['files'])} files, "
        f"{size / 2**20:.1f} MiB",
        highlight=False,
        soft_wrap=True,
    )
    if report["remote_code"]:
        console.print(
            f"[dim]transformers loads this layout with trust_remote_code=True (modeling code of "
            f"{report['remote_code']}, named in config.json's auto_map)[/]",
            highlight=False,
            soft_wrap=True,
        )
