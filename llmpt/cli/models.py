"""`llmpt models list | show MODEL`: the registry."""

from __future__ import annotations

import typer
import yaml
from rich.table import Table

from llmpt import schemas
from llmpt.cli._common import console, print_json, print_table
from llmpt.models.registry import all_models, paddlenlp_config, resolve_model

app = typer.Typer(help="The model registry: ids, aliases, families, architectures.", no_args_is_help=True)


@app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every model id llmpt knows, with its aliases and size."""
    models = all_models()
    if json_out:
        print_json({"models": [m.model_dump(mode="json") for m in models]}, schemas.MODELS)
        return
    table = Table(title="llmpt models", title_justify="left")
    for col in ("id", "aliases", "family", "matrix row", "hidden", "layers", "heads", "kv", "vocab"):
        table.add_column(col, no_wrap=col in ("id", "family"))
    for m in models:
        table.add_row(
            m.id + ("" if m.seed_weight else " *"),
            ", ".join(m.aliases),
            m.family,
            m.matrix_row,
            str(m.hidden_size),
            str(m.num_hidden_layers),
            str(m.num_attention_heads),
            str(m.num_key_value_heads),
            str(m.vocab_size),
        )
    print_table(table)
    console.print("* not among the 29 weights of PaddleNLP's pretraining README", highlight=False)


@app.command("show")
def show_cmd(
    model: str = typer.Argument(..., help="Model id or alias."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One model: the registry entry and the PaddleNLP config training builds from it."""
    m = resolve_model(model)
    data = {**m.model_dump(mode="json"), "paddlenlp_config": paddlenlp_config(m)}
    if json_out:
        print_json(data, schemas.MODEL)
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
