"""``mobilelwt bench``: latency of a build's artifacts into ``DIR/bench.jsonl``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mobilelwt.cli._common import console, handle_user_errors


@handle_user_errors
def bench_command(
    build_dir: Annotated[Path, typer.Argument(help="A build directory with artifacts.json.")],
    device: Annotated[str, typer.Option(help="host (adb serials are being added).")] = "host",
    runs: Annotated[int, typer.Option(help="Timed runs per artifact.")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 5,
    threads: Annotated[int, typer.Option(help="Runtime threads.")] = 2,
) -> None:
    """Time every artifact (teacher and student interleaved); records resume, a summary table is printed."""
    from device_bench.bench import bench_build

    records = bench_build(build_dir, devices=tuple(d.strip() for d in device.split(",")), runs=runs, warmup=warmup,
                          threads=threads)  # fmt: skip
    table = Table(title=f"{build_dir}: latency (ms)")
    for column in ("artifact", "device", "median", "p10", "p90", "CV", "runs", "status"):
        table.add_column(column, justify="left" if column in ("artifact", "device", "status") else "right")
    for r in records:
        ok = r.get("status") == "ok"
        table.add_row(
            r["artifact"],
            r["device"],
            f"{r['median_ms']:.2f}" if ok else "n/a",
            f"{r['p10_ms']:.2f}" if ok else "n/a",
            f"{r['p90_ms']:.2f}" if ok else "n/a",
            f"{r['cv']:.3f}" if ok else "n/a",
            str(r.get("runs", "")),
            r.get("status", "") if ok else f"{r.get('status')}: {r.get('reason', '')}",
        )
    console.print(table)
    console.print(f"records: {Path(build_dir) / 'bench.jsonl'}")
