"""``mobilelwt report``: compare teachers and students across builds, runtimes, precisions and devices."""

from __future__ import annotations

from typing import Annotated

import typer

from mobilelwt.app.cli._common import console, handle_user_errors
from mobilelwt.app.cli._options import with_groups
from mobilelwt.app.cli._params import BUILD_DIRS, OUTPUT_FILE_OPTIONAL, POINTS, POSITIVE_OPTIONAL, names


@handle_user_errors
@with_groups
def report_command(
    build_dirs: Annotated[list[str], typer.Argument(help="One or more build directories."), BUILD_DIRS],
    format: Annotated[
        str,
        typer.Option("--format", help="Comma-separated: html, md, csv, json."),
        names(("html", "md", "csv", "json"), optional=False),
    ] = "html,md,csv,json",
    out: Annotated[
        str | None,
        typer.Option(help="Report path without suffix (default: <first DIR>/report)."),
        OUTPUT_FILE_OPTIONAL,
    ] = None,
    budget_ms: Annotated[
        float | None, typer.Option(help="Mark variants whose median latency is at most this."), POSITIVE_OPTIONAL
    ] = None,
    max_drop: Annotated[
        float | None, typer.Option(help="… and whose top-1 drop is at most this (points)."), POINTS
    ] = None,
) -> None:
    """Write the speedup/accuracy report (self-contained HTML, Markdown, CSV, JSON) and print where it is."""
    # lazy: imports torch (seconds); `--help` and option errors answer at once
    from mobilelwt.app.reports import make_report

    formats = tuple(f.strip() for f in format.split(",") if f.strip())
    result = make_report(build_dirs, out=out, formats=formats, budget_ms=budget_ms, max_drop=max_drop)
    for path in result["files"]:
        console.print(f"report: {path}")
    for line in result["headline"]:
        console.print(line)
