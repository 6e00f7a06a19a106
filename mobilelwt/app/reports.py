"""The report stage as a plain function: table from build directories, files written, headline lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from device_bench.report import FORMATS, Budget, load_report_table, write_reports
from device_bench.report.render import delivered_phrase, format_cell
from device_bench.report.table import frontiers, layer_breakdown, machines, op_profiles, plan_lines
from mobilelwt.errors import ConfigError


def make_report(
    build_dirs: list[Path],
    *,
    out: Path | None = None,
    formats: tuple[str, ...] = ("html", "md", "csv", "json"),
    budget_ms: float | None = None,
    max_drop: float | None = None,
) -> dict[str, Any]:
    """Write the report files; returns the table, the files and human headline lines."""
    if not build_dirs:
        raise ConfigError("No build directory given.", "Pass one or more directories written by `mobilelwt build`.")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"Unknown report format(s) {', '.join(unknown) or '(none)'}.", f"Use: {', '.join(FORMATS)}.")
    budget = Budget(budget_ms, max_drop)
    table = load_report_table([Path(d) for d in build_dirs], budget)
    names = [Path(d).name for d in build_dirs]
    files = write_reports(
        table,
        Path(out) if out else Path(build_dirs[0]) / "report",
        formats,
        builds=names,
        budget={"max_ms": budget_ms, "max_drop": max_drop},
        layers={Path(d).name: layer_breakdown(Path(d)) for d in build_dirs},
        profiles={Path(d).name: op_profiles(Path(d)) for d in build_dirs},
        machines=machines([Path(d) for d in build_dirs]),
        plans=plan_lines([Path(d) for d in build_dirs]),
        frontiers=frontiers([Path(d) for d in build_dirs]),  # several builds: their frontiers overlaid
    )
    return {"table": table, "files": files, "headline": headline(table),
            "delivered": headline(table, accuracy=False)}  # fmt: skip


def headline(table, *, accuracy: bool = True) -> list[str]:
    """One line per student that was timed: the speedup its files deliver (interval, cache state, the target it
    meets or misses) and, with ``accuracy``, its top-1 change on each runtime and device."""
    lines = []
    students = table[(table["role"] == "student") & table["speedup"].notna()]
    for r in students.to_dict("records"):
        where = f"{r['model']} student on {r['runtime']} {r['precision']} ({r['device']})"
        line = f"{r['build']}: {where}: {r['latency_median_ms']:.2f} ms, {delivered_phrase(r)}"
        line += f"; MACs {r['mac_ratio']:.2f}× fewer"
        if accuracy:
            line += f", top-1 {format_cell('top1_delta', r['top1_delta'])} points"
        if r["meets_budget"] is not None:
            line += f", meets budget: {'yes' if r['meets_budget'] else 'no'}"
        lines.append(line)
    if not lines:
        lines.append("no student timed yet: run `mobilelwt build` (host) or `mobilelwt bench` (devices)")
    return lines
