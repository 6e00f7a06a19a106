"""The ``mobilelwt`` command line: thin Typer wrappers over plain functions that return data."""

from __future__ import annotations

from typing import Annotated

import typer

from mobilelwt import __version__
from mobilelwt.app.cli.bench import bench_command
from mobilelwt.app.cli.build import build_command, export_command
from mobilelwt.app.cli.compress import compress_command, evaluate_command
from mobilelwt.app.cli.datasets import datasets_command
from mobilelwt.app.cli.models import models_command
from mobilelwt.app.cli.report import report_command
from mobilelwt.app.cli.train_teacher import train_teacher_command

app = typer.Typer(
    name="mobilelwt",
    help="Layer-wise compression of CNN teachers into fast students for mobile runtimes.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mobilelwt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Layer-wise compression of CNN teachers into fast students for mobile runtimes."""


app.command("models")(models_command)
app.command("datasets")(datasets_command)
app.command("train-teacher")(train_teacher_command)
app.command("compress")(compress_command)
app.command("evaluate")(evaluate_command)
app.command("export")(export_command)
app.command("build")(build_command)
app.command("bench")(bench_command)
app.command("report")(report_command)


def main() -> None:
    app()
