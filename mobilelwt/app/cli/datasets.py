"""``mobilelwt datasets``: the built-in datasets."""

from __future__ import annotations

from rich.table import Table

from mobilelwt.app.cli._common import console, handle_user_errors


@handle_user_errors
def datasets_command() -> None:
    """List the built-in datasets (offline, no download); any ImageFolder directory works as --data too."""
    # lazy: imports torch (seconds); `--help` and option errors answer at once
    from mobilelwt.data import list_builtin_datasets

    table = Table(title="Built-in datasets")
    for column in ("name", "classes", "images", "default input", "description"):
        table.add_column(column)
    for d in list_builtin_datasets():
        table.add_row(d["name"], str(d["classes"]), str(d["images"]), f"{d['default_input_size']}²", d["description"])
    console.print(table)
    console.print("Any ImageFolder tree (DIR/<class>/<image>) works as --data DIR.")
