"""``mobilelwt models``: the teachers, their parameters and MACs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from mobilelwt.app.cli._common import console, handle_user_errors, human
from mobilelwt.app.cli._options import TrustCodeOption, allow_model_code, with_groups
from mobilelwt.app.cli._params import count


@handle_user_errors
@with_groups
def models_command(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Only these teachers (repeatable); file.py:factory for your own."),
    ] = None,
    input_size: Annotated[int, typer.Option(help="Square input side in pixels.")] = 224,
    num_classes: Annotated[
        int | None,
        typer.Option(help="Classes of the classifier head (default: 1000; your model's own)."),
        count(low=2, optional=True),
    ] = None,
    layers: Annotated[bool, typer.Option("--layers", help="Also print a per-layer table.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    trust_code: TrustCodeOption = False,
) -> None:
    """List the teachers with parameters and MACs (multiply-accumulates) at the chosen input size."""
    # lazy: imports torch (seconds); `--help` and option errors answer at once
    from mobilelwt.teachers import check_model, list_teachers
    from mobilelwt.teachers.summary import summarize_teachers

    allow_model_code(trust_code, *(model or []))
    names = [check_model(name) for name in model or list_teachers()]  # unknown names fail before any work
    rows = summarize_teachers(names, input_size=input_size, num_classes=num_classes)
    if as_json:
        if not layers:
            rows = [{k: v for k, v in r.items() if k != "layers"} for r in rows]
        console.print_json(json.dumps(rows))
        return
    classes = ", ".join(sorted({str(r["num_classes"]) for r in rows}))
    table = Table(title=f"Teachers at {input_size}×{input_size}, {classes} classes")
    for column in ("model", "family", "params", "MACs", "GMACs"):
        table.add_column(column, justify="left" if column in ("model", "family") else "right")
    for r in rows:
        table.add_row(r["model"], r["family"], human(r["params"]), human(r["macs"]), f"{r['macs'] / 1e9:.3f}")
    console.print(table)
    if layers:
        for r in rows:
            layer_table = Table(title=f"{r['model']} layers")
            for column in ("name", "type", "output shape", "MACs", "params", "% MACs"):
                layer_table.add_column(column, justify="left" if column in ("name", "type") else "right")
            for layer in r["layers"]:
                share = 100.0 * layer["macs"] / r["macs"] if r["macs"] else 0.0
                layer_table.add_row(
                    layer["name"],
                    layer["type"],
                    "×".join(map(str, layer["output_shape"])),
                    human(layer["macs"]),
                    human(layer["params"]),
                    f"{share:.1f}",
                )
            console.print(layer_table)
