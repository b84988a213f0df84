"""The `llmpt` app: composes the sub-commands and nothing else."""

from __future__ import annotations

import typer

from llmpt import __version__
from llmpt.cli import data, matrix, models, plan, presets, rehearse, train

app = typer.Typer(
    name="llmpt",
    help="Checked, repeatable LLM pretraining on PaddlePaddle + PaddleNLP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(presets.app, name="presets")
app.add_typer(models.app, name="models")
app.command("plan")(plan.plan)
app.command("matrix")(matrix.matrix)
app.command("prepare-data")(data.prepare_data)
app.command("train")(train.train)
app.command("rehearse")(rehearse.rehearse)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmpt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Checked, repeatable LLM pretraining on PaddlePaddle + PaddleNLP."""


def main() -> None:
    app()
