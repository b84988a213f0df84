"""The `llmpt` app: composes the sub-commands and nothing else."""

from __future__ import annotations

import typer

from llmpt import __version__
from llmpt.cli import cluster, data, doctor, export, matrix, models, plan, presets, rehearse, status, train, tune
from llmpt.cli._common import LlmptGroup, console

app = typer.Typer(
    cls=LlmptGroup,  # ends every command line through one handler (llmpt/errors.py's table)
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
app.command("doctor")(doctor.doctor)
app.command("launch-script")(cluster.launch_script)
app.command("run-node")(cluster.run_node)
app.command("export")(export.export)
app.command("status")(status.status)
app.command("tune")(tune.tune)


def _version(value: bool) -> None:
    if value:
        console.print(f"llmpt {__version__}", highlight=False)  # a closed pipe ends like any other output
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Checked, repeatable LLM pretraining on PaddlePaddle + PaddleNLP."""


def main() -> None:
    app()
