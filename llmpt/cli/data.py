"""`llmpt prepare-data`: text -> PaddleNLP's mmap .bin/.idx."""

from __future__ import annotations

import time

import typer

from llmpt import schemas
from llmpt.cli._common import console, err_console, print_json


def prepare_data(
    inputs: list[str] = typer.Argument(
        None, help="Files, directories or globs (jsonl or plain text, gzip'd or not). None: the shipped corpus."
    ),
    output: str = typer.Option(None, "--output", "-o", help="Output prefix: writes PREFIX.bin, .idx, .manifest.json."),
    tokenizer: str = typer.Option(
        None, "--tokenizer", "-t", help="Tokenizer directory, or a model whose tokenizer files are local."
    ),
    workers: int = typer.Option(1, "--workers", "-w", help="Encoding processes."),
    text_key: str = typer.Option("text", "--text-key", help="JSON key holding a document's text."),
    fmt: str = typer.Option("auto", "--format", help="auto (by file suffix), jsonl or text (blank-line separated)."),
    append_eos: bool = typer.Option(True, "--append-eos/--no-append-eos", help="End every document with EOS."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad line instead of skipping it."),
    merge: bool = typer.Option(False, "--merge", help="Inputs are prepared prefixes: concatenate them into --output."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary object."),
) -> None:
    """Tokenize a corpus into the .bin/.idx files PaddleNLP's pretraining reads."""
    from llmpt.data.prepare import merge_prefixes, prepare_data

    if merge:
        if not output:
            from llmpt.data.inputs import DataError

            raise DataError("--merge needs --output PREFIX")
        result = merge_prefixes(inputs or [], output, force=force)
    else:
        result = _run_with_progress(
            lambda progress: prepare_data(
                inputs,
                output=output,
                tokenizer=tokenizer,
                workers=workers,
                text_key=text_key,
                append_eos=append_eos,
                force=force,
                strict=strict,
                fmt=fmt,
                progress=progress,
            ),
            quiet=json_out,
        )
    if json_out:
        print_json(result.to_dict(), schemas.PREPARE_DATA)
        return
    for b in result.bad_lines:
        err_console.print(f"[yellow]skipped[/] {b['file']}:{b['line']}: {b['reason']}", highlight=False, soft_wrap=True)
    if result.skipped > len(result.bad_lines):
        err_console.print(f"[yellow]… and {result.skipped - len(result.bad_lines)} more bad lines[/]")
    mb = result.input_bytes / 1e6
    console.print(
        f"[green]wrote[/] {result.output_prefix}.bin/.idx: {result.documents:,} documents, {result.tokens:,} tokens "
        f"({result.dtype}, {result.bin_bytes / 1e6:.1f} MB) in {result.seconds:.1f} s — "
        f"{result.tokens_per_sec:,.0f} tokens/s, {mb / max(result.seconds, 1e-9):.1f} MB/s; "
        f"skipped {result.skipped} bad lines, {result.empty} empty documents; tokenizer {result.tokenizer}"
        + (f" ({_encoder_text(result.encoder)})" if result.encoder else ""),
        highlight=False,
        soft_wrap=True,
    )


def _run_with_progress(run, quiet: bool):
    """Run with a rich progress line on stderr, started at the first update so that an early refusal
    prints nothing but its one error line."""
    if quiet or not err_console.is_terminal:
        return run(None)
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    start = time.perf_counter()
    bar = Progress(
        TextColumn("[bold]prepare-data[/]"),
        TextColumn("{task.fields[docs]:>10,} docs"),
        TextColumn("{task.fields[tokens]:>12,} tokens"),
        TextColumn("{task.fields[mbs]:>7.1f} MB/s"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    task = None

    def progress(docs: int, tokens: int, nbytes: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("prepare", docs=0, tokens=0, mbs=0.0, total=None)
        mbs = nbytes / 1e6 / max(time.perf_counter() - start, 1e-9)
        bar.update(task, docs=docs, tokens=tokens, mbs=mbs)

    try:
        return run(progress)
    finally:
        if task is not None:
            bar.stop()


def _encoder_text(encoder: dict) -> str:
    """What encoded the ids: PaddleNLP's class itself, or a fast encoder whose ids were checked against it."""
    if encoder.get("backend") == "paddlenlp":
        return "PaddleNLP's tokenizer class encoded every document"
    return f"encoder {encoder['backend']}, ids checked against PaddleNLP's class"
