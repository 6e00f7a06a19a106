"""Render the report table: CSV and JSON for dashboards, Markdown for pull requests, self-contained HTML."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from device_bench.report.table import frontier_lines, headline_rows, shown_speedup
from mobilelwt.errors import ConfigError
from mobilelwt.io import atomic_path

FORMATS = ("html", "md", "csv", "json")
REPORT_FORMAT = "mobilelwt.report/1"
# what Markdown and HTML show, with headers; CSV and JSON carry every column
SHOWN = [
    ("model", "model"), ("role", "role"), ("format", "format"), ("precision", "precision"), ("device", "device"),
    ("macs", "MACs"), ("bytes", "size"), ("latency_median_ms", "median ms"), ("latency_p90_ms", "p90 ms"),
    ("speedup", "speedup"), ("speedup_ci", "speedup 95% CI"), ("load_ms", "load ms"),
    ("model_rss_mb", "model MB (RSS)"), ("mac_ratio", "MAC ratio"), ("realised_ratio", "realised"), ("top1", "top-1"),
    ("accuracy_source", "top-1 from"),
    ("top1_delta", "Δ top-1"), ("top5", "top-5"), ("sqnr_db", "SQNR dB"), ("status", "status"),
    ("meets_budget", "meets budget"), ("note", "note"),
]  # fmt: skip


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell_value(row: dict[str, Any], column: str) -> Any:
    if column == "speedup_ci":
        low, high = row.get("speedup_ci_low"), row.get("speedup_ci_high")
        return None if _missing(low) or _missing(high) else (low, high)
    return row[column]


def format_cell(column: str, value: Any) -> str:
    """Human text for one cell; a missing measurement is 'n/a', never a zero."""
    if column == "speedup_ci" and isinstance(value, tuple):
        return f"{value[0]:.2f}–{value[1]:.2f}×"
    if _missing(value):
        return "n/a"
    if column in ("macs", "bytes"):
        units = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        scale, unit = next(((s, u) for s, u in units if abs(value) >= s), (1, ""))
        return f"{value / scale:.2f} {unit}{'B' if column == 'bytes' else ''}".strip()
    if column in ("speedup", "mac_ratio"):
        return f"{value:.2f}×"
    if column == "realised_ratio":
        return f"{value:.2f}"
    if column in ("top1_delta",):
        return f"{value + 0.0:+.2f}"  # + 0.0: never "-0.00"
    if column == "meets_budget":
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}" if column != "sqnr_db" or math.isfinite(value) else "∞"
    return str(value)


def to_json(table: pd.DataFrame, meta: dict[str, Any]) -> str:
    rows = [{k: (None if _missing(v) else v) for k, v in row.items()} for row in table.to_dict("records")]
    return json.dumps({"format": REPORT_FORMAT, **meta, "rows": rows}, indent=2, default=str) + "\n"


def read_json_report(text: str) -> pd.DataFrame:
    data = json.loads(text)
    if data.get("format") != REPORT_FORMAT:
        raise ConfigError("Not a mobilelwt report JSON.", f"Expected format {REPORT_FORMAT}.")
    return pd.DataFrame(data["rows"]).astype({"latency_median_ms": float, "speedup": float})


def to_markdown(table: pd.DataFrame, meta: dict[str, Any]) -> str:
    def cell(column: str, value: Any) -> str:
        return format_cell(column, value).replace("|", "\\|").replace("\n", " ")

    lines = [f"## mobilelwt report ({', '.join(meta['builds'])})", ""]
    lines.append("| " + " | ".join(header for _, header in SHOWN) + " |")
    lines.append("|" + "|".join(" --- " for _ in SHOWN) + "|")
    for row in table.to_dict("records"):
        lines.append("| " + " | ".join(cell(column, _cell_value(row, column)) for column, _ in SHOWN) + " |")
    headline = headline_lines(table)
    if headline:
        lines[1:1] = ["", "**Headline** (fastest student per device, runtime and precision):", "",
                      *(f"- {line}" for line in headline)]  # fmt: skip
    machines = machine_lines(meta.get("machines") or {})
    if machines:
        lines += ["", "**Measured on**:", "", *(f"- {line}" for line in machines)]
    if meta.get("plans"):
        lines += ["", "**Plan** (what each student was planned to meet):", "", *(f"- {p}" for p in meta["plans"])]
    for name, frontier in (meta.get("frontiers") or {}).items():
        first, *points = frontier_lines(name, frontier)
        lines += ["", f"**Frontier** {first}", "", *(f"- {line}" for line in points)]
    lines += ["", _footnote(meta)]
    return "\n".join(lines) + "\n"


def delivered_phrase(r: dict[str, Any]) -> str:
    """'4.12× faster (95% CI 3.95–4.30×, cold); target 4× met' — the delivered speedup of the exported files, how
    it was timed, and the promise it keeps or misses."""
    text = f"{r['speedup']:.2f}× faster"
    how = [] if _missing(r["speedup_ci_low"]) else [f"95% CI {r['speedup_ci_low']:.2f}–{r['speedup_ci_high']:.2f}×"]
    if isinstance(r.get("cache"), str):
        how.append(r["cache"])
    if not _missing(r.get("timing_processes")) and r["timing_processes"] > 1:
        how.append(f"{int(r['timing_processes'])} processes")
    if r.get("timing_converged") is False:
        how.append("interval not within the width asked by the time cap")
    if r.get("timing_quiet") is False:
        how.append("measured under load: re-measure on a quiet machine")
    if r.get("timing_steady") is False:
        how.append("the machine kept changing speed: re-measure")
    elif not _missing(r.get("timing_shifted")) and r["timing_shifted"] > 0:
        how.append(f"{int(r['timing_shifted'])} stretch(es) timed at another machine speed set aside")
    text += f" ({', '.join(how)})" if how else ""
    target = r.get("target_speedup")
    if not _missing(target):
        high = r["speedup_ci_high"] if not _missing(r["speedup_ci_high"]) else r["speedup"]
        planned = "" if _missing(r.get("planned_speedup")) else f"planned {r['planned_speedup']:.2f}×"
        if high >= target:
            text += f"; target {target:g}× met" + (f" ({planned})" if planned else "")
        else:  # the files miss what the plan promised: say so, and what to ask for to land on the target
            again = target * target / r["speedup"]
            text += (f"; below the {target:g}× target ({planned + ' before training; ' if planned else ''}"
                     f"re-plan with --speedup {again:.2f} to land on it)")  # fmt: skip
    return text


def headline_lines(table: pd.DataFrame) -> list[str]:
    """One sentence per (device, runtime, precision) for the headline box."""
    lines = []
    for r in headline_rows(table):
        parts = [
            f"{r['model']} student on {r['runtime']} {r['precision']} ({r['device']}): {delivered_phrase(r)}, "
            f"at {r['mac_ratio']:.2f}× fewer MACs",
            f"top-1 {format_cell('top1_delta', r['top1_delta'])} points",
            f"{format_cell('bytes', r['bytes'])}",
            f"{format_cell('latency_median_ms', r['latency_median_ms'])} ms",
            f"load {format_cell('load_ms', r['load_ms'])} ms",
            f"model memory {format_cell('model_rss_mb', r['model_rss_mb'])} MB",
        ]
        if r["stable"] is False:
            parts.append("unstable timing (CV > 10 % or p99 > 1.5× median): re-measure")
        lines.append(", ".join(parts))
    return lines


def machine_lines(machines: dict[str, dict[str, Any]]) -> list[str]:
    """One line per device: what it is, how many threads ran, which runtime versions."""
    lines = []
    for device, facts in sorted(machines.items()):
        if device == "host":
            runtimes = ", ".join(f"{k} {v}" for k, v in (facts.get("runtimes") or {}).items() if v)
            what = (
                f"{facts.get('cpu') or facts.get('machine')}, {facts.get('cpu_count')} cores, {facts.get('platform')}"
            )
        else:
            what = " ".join(str(facts[k]) for k in ("manufacturer", "model", "soc", "abi") if facts.get(k))
            runtimes = f"Android {facts.get('android')}" if facts.get("android") else ""
        lines.append(f"{device}: {what}; {facts.get('threads')} thread(s){'; ' + runtimes if runtimes else ''}")
    return lines


def _footnote(meta: dict[str, Any]) -> str:
    budget = meta.get("budget") or {}
    parts = [
        "Speedup: teacher median / student median on the same runtime, precision and device, measured side by side "
        "(over several processes: the geometric mean of their ratios, the interval covering their spread).",
        "MAC ratio: teacher MACs / model MACs; realised = speedup / MAC ratio. n/a = not measured.",
    ]
    if budget.get("max_ms") is not None or budget.get("max_drop") is not None:
        parts.append(f"Budget: median ≤ {budget.get('max_ms')} ms, top-1 drop ≤ {budget.get('max_drop')} points.")
    return " ".join(parts)


def to_csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False)


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by another that is both faster and at least as accurate (latency ascending)."""
    front: list[tuple[float, float]] = []
    best = -math.inf
    for latency, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            front.append((latency, accuracy))
            best = accuracy
    return front


def plots(table: pd.DataFrame, layers: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """Embedded PNGs: accuracy vs latency with the Pareto front, speedup per runtime, per-layer MACs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    timed = table.dropna(subset=["latency_median_ms", "top1"])
    if not timed.empty:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for (runtime, role), group in timed.groupby(["runtime", "role"]):
            ax.scatter(group["latency_median_ms"], group["top1"], marker="o" if role == "student" else "s",
                       label=f"{runtime} {role}", s=40, alpha=0.85)  # fmt: skip
        front = pareto_front(list(zip(timed["latency_median_ms"], timed["top1"], strict=True)))
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
        ax.set_xlabel("median latency (ms)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title("accuracy vs latency")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        out["scatter"] = _png(fig)
    students = table[(table["role"] == "student")].dropna(subset=["speedup"])
    if not students.empty:
        fig, ax = plt.subplots(figsize=(7, 3.4))
        labels = [f"{r.model} {r.runtime} {r.precision} {r.device}" for r in students.itertuples()]
        ax.barh(labels, students["speedup"], color="#4c78a8", label="measured speedup")
        ax.barh(labels, students["mac_ratio"], fill=False, edgecolor="#e45756", label="MAC ratio")
        ax.set_xlabel("× faster than the teacher")
        ax.set_title("speedup per runtime (measured) vs MAC ratio")
        ax.legend(fontsize=7)
        out["speedup"] = _png(fig)
    for build, rows in layers.items():
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
        names = [r["layer"] for r in rows]
        ax.barh(names, [r["teacher_macs"] / 1e6 for r in rows], color="#bab0ac", label="teacher")
        ax.barh(names, [r["student_macs"] / 1e6 for r in rows], color="#4c78a8", label="student")
        ax.invert_yaxis()
        ax.set_xlabel("MMACs")
        ax.set_title(f"{build}: MACs per replaced layer")
        ax.legend(fontsize=7)
        out[f"layers:{build}"] = _png(fig)
    return out


def frontier_plot(frontiers: dict[str, dict[str, Any]]) -> str | None:
    """top-1 and top-5 against speedup, one series per build (points with their 95 % intervals; hollow: trained
    layer-wise only, at the planner's timing), the chosen point starred, each budget's line dashed; the int8 files
    of the fine-tuned points as triangles (top-1 only: validation scores top-1)."""
    if not frontiers:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    any_int8 = False
    for index, (name, frontier) in enumerate(frontiers.items()):
        color = colors[index % len(colors)]
        points = sorted((p for p in frontier["points"] if "same_as" not in p), key=lambda p: shown_speedup(p)[0])
        for ax, metric in zip(axes, ("top1", "top5"), strict=True):
            teacher = frontier["teacher"][metric]
            for point in points:
                speedup, ci, _ = shown_speedup(point)
                full = point["trained"] == "fine-tuned"
                ax.errorbar(speedup, point[metric], xerr=_xerr(speedup, ci), fmt="o", color=color, capsize=3,
                            markerfacecolor=color if full else "white")  # fmt: skip
            ax.plot([shown_speedup(p)[0] for p in points], [p[metric] for p in points], "-", color=color, lw=1,
                    alpha=0.5, label=f"{name} fp32")  # fmt: skip
            chosen = next((p for p in points if p["target"] == frontier["chosen"]), None)
            if chosen is not None:
                ax.plot(shown_speedup(chosen)[0], chosen[metric], "*", color=color, markersize=16, markeredgecolor="k")
            ax.axhline(teacher, color=color, lw=0.8, ls=":")
            if metric == "top1":
                ax.axhline(teacher - frontier["max_drop"], color=color, lw=1, ls="--")
        int8 = sorted((e for e in (((p.get("files") or {}).get("int8") or {}) for p in points)
                       if e.get("speedup") and e.get("top1") is not None), key=lambda e: e["speedup"])  # fmt: skip
        if int8:
            any_int8 = True
            for entry in int8:
                axes[0].errorbar(entry["speedup"], entry["top1"], xerr=_xerr(entry["speedup"], entry["speedup_ci95"]),
                                 fmt="^", color=color, capsize=3, markeredgecolor="k")  # fmt: skip
            axes[0].plot([e["speedup"] for e in int8], [e["top1"] for e in int8], "--", color=color, lw=1, alpha=0.5,
                         label=f"{name} int8 (file)")  # fmt: skip
    kind = next(iter(frontiers.values()))["speedup_kind"]
    for ax, metric in zip(axes, ("top-1", "top-5"), strict=True):
        ax.set_xlabel(f"{kind} over the fp32 teacher (×)")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    axes[0].set_title("top-1: dotted teacher, dashed budget, ★ chosen" + (", ▲ int8" if any_int8 else ""))
    axes[1].set_title("top-5 (hollow: layer-wise only)")
    axes[0].legend(fontsize=7)
    return _png(fig)


def _xerr(value: float, ci: list[float] | None) -> list[list[float]] | None:
    return [[value - ci[0]], [ci[1] - value]] if ci else None


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;font-size:12px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0}td.t{text-align:left}tr.student td{background:#f6fbff}.na{color:#999}
.fail{color:#b00020}.ok{color:#1b7f3b}img{max-width:100%;margin:8px 0}.note{color:#555;font-size:12px}
#headline{border:2px solid #1b7f3b;border-radius:6px;padding:4px 16px;margin:12px 0;background:#f4fbf6}
"""


def to_html(
    table: pd.DataFrame,
    meta: dict[str, Any],
    layers: dict[str, list[dict[str, Any]]],
    profiles: dict[str, dict[str, Any]] | None = None,
) -> str:
    """A self-contained page: inline CSS, plots as data URIs, no script, every value escaped."""
    e = html.escape
    head = "".join(f"<th>{e(header)}</th>" for _, header in SHOWN)
    body = []
    for row in table.to_dict("records"):
        cells = []
        for column, _ in SHOWN:
            value = _cell_value(row, column)
            text = e(format_cell(column, value))
            classes = []
            if column in ("model", "role", "format", "precision", "device", "note", "status", "accuracy_source"):
                classes.append("t")
            if _missing(value):
                classes.append("na")
            if column == "status":
                classes.append("ok" if value == "ok" else "fail")
            cells.append(f'<td class="{" ".join(classes)}">{text}</td>')
        body.append(f'<tr class="{e(str(row["role"]))}">{"".join(cells)}</tr>')
    images = plots(table, layers)
    figures = []
    frontiers = meta.get("frontiers") or {}
    if frontiers:
        figures.append("<h2>Frontier: accuracy against measured speedup</h2>")
        figures.append(f'<img alt="frontier" src="{frontier_plot(frontiers)}">')
        for name, frontier in frontiers.items():
            lines = frontier_lines(name, frontier)
            figures.append(f'<p>{e(lines[0])}</p><ul class="frontier">'
                           + "".join(f"<li>{e(line)}</li>" for line in lines[1:]) + "</ul>")  # fmt: skip
    for key, title in (("scatter", "Accuracy vs latency"), ("speedup", "Speedup per runtime")):
        if key in images:
            figures.append(f'<h2>{e(title)}</h2><img alt="{e(title)}" src="{images[key]}">')
        else:
            figures.append(f'<h2>{e(title)}</h2><p class="na">No latency measured yet.</p>')
    for build, rows in layers.items():
        key = f"layers:{build}"
        figures.append(f"<h2>Per-layer breakdown: {e(build)}</h2>")
        if key in images:
            figures.append(f'<img alt="{e("MACs per layer of " + build)}" src="{images[key]}">')
        figures.append(_layer_table(rows, _network_ms((profiles or {}).get(build) or {})))
    for build, by_artifact in (profiles or {}).items():
        if by_artifact:
            figures.append(f"<h2>Operators (ExecuTorch: ETDump; LiteRT: its profiler): {e(build)}</h2>")
            figures.extend(_op_table(path, profile) for path, profile in sorted(by_artifact.items()))
    headline = headline_lines(table)
    box = (
        '<section id="headline"><h2>Headline</h2><ul>' + "".join(f"<li>{e(line)}</li>" for line in headline)
        + "</ul></section>" if headline else '<section id="headline"><p class="na">No student timed yet.</p></section>'
    )  # fmt: skip
    machines = machine_lines(meta.get("machines") or {})
    facts = (
        '<section id="machines"><h2>Measured on</h2><ul>' + "".join(f"<li>{e(m)}</li>" for m in machines)
        + "</ul></section>" if machines else ""
    )  # fmt: skip
    plans = meta.get("plans") or []
    facts += (
        '<section id="plan"><h2>Plan</h2><ul>' + "".join(f"<li>{e(p)}</li>" for p in plans) + "</ul></section>"
        if plans else ""
    )  # fmt: skip
    title = f"mobilelwt report: {', '.join(meta['builds'])}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{e(title)}</h1>{box}<p class="note">Generated {e(meta["generated"])}. {e(_footnote(meta))}</p>'
        f'<table id="report"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        f"{facts}{''.join(figures)}</body></html>\n"
    )


def _op_table(path: str, profile: dict[str, Any], top: int = 10) -> str:
    """The slowest operators of one artifact; ops outside the delegate marked (compute ones in red)."""
    e = html.escape
    if "error" in profile:
        return f'<h3>{e(path)}</h3><p class="fail">No operator profile: {e(profile["error"])}</p>'
    where = "" if " on " in path else " on the host"
    runtime = "LiteRT" if ".tflite" in path.split(" on ")[0] else "ExecuTorch"
    out = [f"<h3>{e(path)}{e(where)} ({runtime}): {e(format_cell('x', profile.get('execute_ms')))} ms per run, "
           f"{e(str(profile.get('delegate_calls_per_run')))} delegate call(s)</h3>"]  # fmt: skip
    if profile.get("undelegated_compute_ops"):
        out.append(
            f'<p class="fail">Compute outside the delegate: {e(", ".join(profile["undelegated_compute_ops"]))}</p>'
        )
    out.append("<table><thead><tr><th>operator</th><th>where</th><th>instances</th><th>median ms</th>"
               "<th>share</th></tr></thead><tbody>")  # fmt: skip
    for row in profile["ops"][:top]:
        where = row["where"]
        css = "t" if where == "delegate" else "t fail"  # portable (ExecuTorch) or builtin (LiteRT) kernels
        share = "n/a" if row.get("share") is None else f"{100 * row['share']:.1f} %"
        out.append(f'<tr><td class="t">{e(row["op"])}</td><td class="{css}">{e(where)}</td>'
                   f"<td>{row['instances']}</td><td>{row['median_ms']:.3f}</td><td>{e(share)}</td></tr>")  # fmt: skip
    out.append("</tbody></table>")
    layers = profile.get("layers") or {}
    if layers.get("rows"):
        execute = profile.get("execute_ms") or 0.0
        mapped = layers.get("mapped_share")
        out.append(f"<p>Time by layer inside the whole network (operators mapped to layers through the program's "
                   f"ETRecord; {e(format_cell('x', 100 * mapped if mapped is not None else None))} % of operator "
                   "time mapped, the rest layout copies):</p>")  # fmt: skip
        out.append("<table><thead><tr><th>layer</th><th>ms per run</th><th>share</th><th>operators</th></tr>"
                   "</thead><tbody>")  # fmt: skip
        for row in layers["rows"]:
            share = f"{100 * row['ms'] / execute:.1f} %" if execute else "n/a"
            ops = ", ".join(dict.fromkeys(row["ops"]))
            out.append(f'<tr><td class="t">{e(row["layer"])}</td><td>{row["ms"]:.3f}</td><td>{e(share)}</td>'
                       f'<td class="t">{e(ops)} ({len(row["ops"])})</td></tr>')  # fmt: skip
        out.append("</tbody></table>")
    return "".join(out)


def _network_ms(by_artifact: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per role, each layer's ms inside the whole network from the first fp32 profile mapped to layers."""
    out: dict[str, dict[str, float]] = {}
    for path, profile in sorted(by_artifact.items()):
        rows = (profile.get("layers") or {}).get("rows")
        if rows and profile.get("role") in ("teacher", "student") and "fp32" in path:
            out.setdefault(profile["role"], {r["layer"]: r["ms"] for r in rows})
    return out


def _network_cells(row: dict[str, Any], network: dict[str, dict[str, float]]) -> str:
    t, s = (network.get(role, {}).get(str(row["layer"])) for role in ("teacher", "student"))
    if t is None or s is None:  # a profiled 0.000 ms is a number, not a missing one
        return '<td class="na">n/a (run `mobilelwt bench DIR --profile`)</td>'
    ratio = f" ({t / s:.2f}×)" if s > 0 else ""
    return f"<td>{t:.3f} → {s:.3f} ms{ratio}</td>"  # numbers: no escaping


def _layer_table(rows: list[dict[str, Any]], network: dict[str, dict[str, float]] | None = None) -> str:
    e = html.escape
    network = network or {}
    if not rows:
        return '<p class="na">No replaced layers recorded.</p>'
    out = ["<table><thead><tr><th>layer</th><th>module</th><th>rank</th><th>teacher MACs</th><th>student MACs</th>"
           "<th>kept</th><th>latency predicted (plan's table)</th><th>latency measured (bench --layers)</th>"
           "<th>in the network (ETDump)</th></tr></thead><tbody>"]  # fmt: skip
    for r in rows:
        kept = r["student_macs"] / r["teacher_macs"] if r.get("teacher_macs") else math.nan
        out.append(
            f'<tr><td class="t">{e(str(r["layer"]))}</td><td class="t">{e(str(r["module"]))}</td>'
            f"<td>{e(str(r['rank']))}</td><td>{e(format_cell('macs', r['teacher_macs']))}</td>"
            f"<td>{e(format_cell('macs', r['student_macs']))}</td><td>{e(format_cell('realised_ratio', kept))}</td>"
            f"{_predicted_cells(r)}{_layer_latency_cells(r)}{_network_cells(r, network)}</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _predicted_cells(row: dict[str, Any]) -> str:
    if row.get("predicted_teacher_ms") is None or not row.get("predicted_ms"):
        return '<td class="na">n/a (MAC plan)</td>'
    t, s = row["predicted_teacher_ms"], row["predicted_ms"]
    return f"<td>{t:.3f} → {s:.3f} ms ({t / s:.2f}×)</td>"  # numbers: no escaping


def _layer_latency_cells(row: dict[str, Any]) -> str:
    if row.get("teacher_ms") is None or row.get("student_ms") is None:
        return '<td class="na">n/a (run `mobilelwt bench DIR --layers`)</td>'
    speedup = row["teacher_ms"] / row["student_ms"]
    return f"<td>{row['teacher_ms']:.3f} → {row['student_ms']:.3f} ms ({speedup:.2f}×)</td>"  # numbers: no escaping


def render(
    table: pd.DataFrame,
    fmt: str,
    *,
    builds: list[str],
    budget: dict[str, Any],
    layers: dict[str, list[dict]],
    profiles: dict[str, dict[str, Any]] | None = None,
    machines: dict[str, dict[str, Any]] | None = None,
    plans: list[str] | None = None,
    frontiers: dict[str, dict[str, Any]] | None = None,
) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown report format {fmt!r}.", f"Use some of: {', '.join(FORMATS)}.")
    meta = {"builds": builds, "budget": budget, "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "machines": machines or {}, "plans": plans or [], "frontiers": frontiers or {}}  # fmt: skip
    if fmt == "csv":
        return to_csv(table)
    if fmt == "json":
        return to_json(table, meta)
    if fmt == "md":
        return to_markdown(table, meta)
    return to_html(table, meta, layers, profiles)


def write_reports(
    table: pd.DataFrame,
    out: Path,
    formats: tuple[str, ...],
    *,
    builds: list[str],
    budget: dict[str, Any],
    layers: dict[str, list[dict]],
    profiles: dict[str, dict[str, Any]] | None = None,
    machines: dict[str, dict[str, Any]] | None = None,
    plans: list[str] | None = None,
    frontiers: dict[str, dict[str, Any]] | None = None,
) -> list[Path]:
    """Write ``out`` with each format's suffix (``report.html``, ``report.md``, ...), atomically."""
    written = []
    for fmt in formats:
        path = Path(out).with_suffix(f".{fmt}")
        text = render(table, fmt, builds=builds, budget=budget, layers=layers, profiles=profiles, machines=machines,
                      plans=plans, frontiers=frontiers)  # fmt: skip
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        written.append(path)
    return written
