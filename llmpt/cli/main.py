"""The `llmpt` app: composes the sub-commands and nothing else."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape
from typer.core import TyperGroup

from llmpt import __version__
from llmpt.cli import cluster, data, doctor, matrix, models, plan, presets, rehearse, train
from llmpt.cli._common import err_console


class _OneLineErrors(TyperGroup):
    """Usage errors (unknown option, a value of the wrong type, a missing argument) as one line and exit code 2,
    like every other bad input, instead of a usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        import typer._click.exceptions as click_exc  # typer's vendored click

        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exc.ClickException as e:
            if not standalone_mode:
                raise
            where = e.ctx.command_path if getattr(e, "ctx", None) is not None else "llmpt"
            err_console.print(
                f"[bold red]error:[/] {where}: {escape(e.format_message())}; hint: {where} --help",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(e.exit_code)
        except click_exc.Abort:
            if not standalone_mode:
                raise
            err_console.print("aborted", highlight=False)
            sys.exit(130)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(
    cls=_OneLineErrors,
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
