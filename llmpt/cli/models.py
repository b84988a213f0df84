"""`llmpt models list | show MODEL`: the registry."""

from __future__ import annotations

import typer
import yaml
from rich.table import Table

from llmpt import schemas
from llmpt.cli._common import console, print_json, print_table
from llmpt.models.moe import moe_counts, short_count
from llmpt.models.registry import ModelSpec, all_models, paddlenlp_config, resolve_model

app = typer.Typer(help="The model registry: ids, aliases, families, architectures.", no_args_is_help=True)


@app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every model id llmpt knows, with its aliases and size."""
    models = all_models()
    if json_out:
        print_json({"models": [{**m.model_dump(mode="json"), **_moe_facts(m)} for m in models]}, schemas.MODELS)
        return
    table = Table(title="llmpt models", title_justify="left")
    for col in (
        "id",
        "aliases",
        "family",
        "matrix row",
        "hidden",
        "layers",
        "heads",
        "kv",
        "vocab",
        "experts",
        "params",
    ):
        table.add_column(col, no_wrap=col in ("id", "family", "experts", "params"))
    for m in models:
        moe = _moe_facts(m)
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
            _experts_text(m),
            f"{short_count(moe['total_parameters'])} ({short_count(moe['active_parameters'])} active)" if moe else "",
        )
    print_table(table)
    console.print("* not among the 29 weights of PaddleNLP's pretraining README", highlight=False)
    console.print(
        "experts: routed (+ shared) per MoE layer, top-k per token; params: total (active per token), as PaddleNLP "
        "builds the model",
        highlight=False,
    )


def _moe_facts(m: ModelSpec) -> dict:
    """A mixture-of-experts model's parameter facts (llmpt/models/moe.py, exact for PaddleNLP's classes); {} when
    dense. Counted on the model's own vocabulary (not padded as a from-scratch run pads it)."""
    if not m.is_moe:
        return {}
    c = moe_counts(m, from_scratch=False)
    return {
        "total_parameters": c.total,
        "active_parameters": c.active,
        "moe_layers": c.moe_layers,
        "parameters_per_expert": c.per_expert,
        "routed_expert_parameters": c.routed,
    }


def _experts_text(m: ModelSpec) -> str:
    """'8, top-2'; '60 + 1 shared, top-4'; '' for a dense model."""
    if not m.is_moe:
        return ""
    shared = m.num_shared_experts or (1 if m.shared_expert_intermediate_size else 0)
    return f"{m.num_experts}" + (f" + {shared} shared" if shared else "") + f", top-{m.num_experts_per_tok}"


@app.command("show")
def show_cmd(
    model: str = typer.Argument(..., help="Model id or alias."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One model: the registry entry and the PaddleNLP config training builds from it."""
    m = resolve_model(model)
    data = {**m.model_dump(mode="json"), **_moe_facts(m), "paddlenlp_config": paddlenlp_config(m)}
    if json_out:
        print_json(data, schemas.MODEL)
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
