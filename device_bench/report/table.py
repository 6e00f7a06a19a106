"""One row per (build, model, role, format, precision, device): size, latency, speedup, accuracy, parity.

Inputs are what the other stages wrote into a build directory, read through :mod:`mobilelwt.builddir`:
``metrics.json`` (compress), ``artifacts.json`` (export) and ``bench.jsonl`` (host and device benchmarks), only
what is current for the build's student. Missing measurements stay missing (NaN with a note), never zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from device_bench.stats import artifact_accuracy
from mobilelwt.builddir import ARTIFACTS, METRICS, BuildDir
from mobilelwt.errors import ConfigError
from mobilelwt.frontier import choice_sentence, explain, training_words

COLUMNS = [
    "build", "model", "role", "target", "format", "runtime", "precision", "device",
    "params", "macs", "bytes", "latency_median_ms", "latency_p90_ms", "latency_p99_ms", "latency_trimmed_mean_ms",
    "latency_cv", "p99_over_p50", "stable", "load_ms", "first_run_ms", "peak_rss_mb", "model_rss_mb",
    "pss_mb", "speedup", "speedup_ci_low", "speedup_ci_high", "cache", "timing_converged", "timing_quiet",
    "timing_processes", "timing_steady", "timing_shifted",
    "target_speedup", "planned_speedup", "mac_ratio", "realised_ratio",
    "top1", "top5", "top1_delta", "top5_delta", "accuracy_source", "max_abs_diff", "sqnr_db",
    "status", "note", "meets_budget",
]  # fmt: skip


# report column -> bench record field, copied as measured (missing stays NaN)
_RECORD_FIELDS = {
    "latency_p99_ms": "p99_ms",
    "latency_trimmed_mean_ms": "trimmed_mean_ms",
    "p99_over_p50": "p99_over_p50",
    "load_ms": "load_ms",
    "first_run_ms": "first_run_ms",
    "peak_rss_mb": "peak_rss_mb",
    "model_rss_mb": "model_rss_mb",
    "pss_mb": "pss_mb",
}


@dataclass(frozen=True)
class Budget:
    """An app's constraints: latency at most ``max_ms`` and top-1 at most ``max_drop`` points below the teacher."""

    max_ms: float | None = None
    max_drop: float | None = None

    def check(self, row: dict[str, Any]) -> bool | None:
        if self.max_ms is None and self.max_drop is None:
            return None
        if self.max_ms is not None and not (row["latency_median_ms"] <= self.max_ms):  # NaN: not measured
            return False
        if self.max_drop is not None and not (-row["top1_delta"] <= self.max_drop):
            return False
        return bool(row["status"] == "ok")


def build_rows(build_dir: Path) -> list[dict[str, Any]]:
    """The rows of one build directory, before speedups and deltas (which need the teacher rows)."""
    directory = BuildDir(build_dir)
    build_dir = directory.path
    metrics = directory.metrics()
    if directory.is_compressed() and metrics["inputs"]["key"] != directory.compress_key():
        raise ConfigError(
            f"{directory / METRICS} does not belong to this build's student.", "Re-run `mobilelwt build`."
        )
    listing = directory.artifacts()  # only what was exported from the current student
    bench = directory.bench_records()  # only what was measured on the listed bytes
    rows = []
    name = build_dir.name
    if not listing["artifacts"]:  # compressed but not exported: the PyTorch models alone
        for role in ("teacher", "student"):
            rows.append(_row(name, metrics, role, {"path": "", "status": "ok"}, None, "PyTorch model (not exported)"))
    for artifact in listing["artifacts"]:
        role = artifact["role"]
        measured = [r for r in bench if r.get("artifact") == artifact["path"]]
        if artifact["status"] in ("failed", "skipped"):
            rows.append(_row(name, metrics, role, artifact, None, artifact.get("reason", artifact["status"])))
            continue
        if not measured:
            note = (artifact.get("validation") or {}).get("numeric") or "latency not measured yet (`mobilelwt bench`)"
            if artifact.get("runtime") == "coreml":
                note = "latency needs an Apple device or macOS: not measured"
            rows.append(_row(name, metrics, role, artifact, None, note))
        for record in measured:
            rows.append(_row(name, metrics, role, artifact, record, record.get("reason", "")))
    return rows


def _row(
    build: str,
    metrics: dict[str, Any],
    role: str,
    artifact: dict[str, Any],
    record: dict[str, Any] | None,
    note: str,
) -> dict[str, Any]:
    model_metrics = metrics[role]
    validation = artifact.get("validation") or {}
    note = "; ".join(part for part in (note, *validation.get("warnings", [])) if part)
    numeric = validation.get("kind") == "numeric"
    ok_record = record is not None and record.get("status", "ok") == "ok"
    status = artifact.get("status", "ok")
    if record is not None and record.get("status") == "failed":
        status = "failed"
    return {
        "build": build,
        "model": metrics["model"],
        "role": role,
        "target": artifact.get("target", ""),
        "format": artifact.get("format", "pytorch"),
        "runtime": artifact.get("runtime", "pytorch"),
        "precision": artifact.get("precision", "fp32"),
        "device": record.get("device", "host") if record and record.get("status") != "unavailable" else "not run",
        "params": model_metrics["params"],
        "macs": model_metrics["macs"],
        "bytes": artifact.get("bytes", math.nan),
        "latency_median_ms": record["median_ms"] if ok_record else math.nan,
        "latency_p90_ms": record["p90_ms"] if ok_record else math.nan,
        "latency_cv": record.get("cv", math.nan) if ok_record else math.nan,
        **{column: record.get(key, math.nan) if ok_record else math.nan for column, key in _RECORD_FIELDS.items()},
        "stable": record.get("stable") if ok_record else None,
        # the protocol's own speedup (over processes: not the ratio of pooled medians); else the medians' ratio
        "speedup": record.get("speedup", math.nan) if ok_record else math.nan,
        "speedup_ci_low": record.get("speedup_ci95", [math.nan, math.nan])[0] if ok_record else math.nan,
        "speedup_ci_high": record.get("speedup_ci95", [math.nan, math.nan])[1] if ok_record else math.nan,
        **_timing_cells(record if ok_record else None, metrics.get("plan_target") or {}),
        "top1": validation["top1"] if numeric else model_metrics["top1"],
        "top5": validation["top5"] if numeric else model_metrics["top5"],
        "accuracy_source": (
            f"artifact, {validation['images']} val images"
            if numeric
            else f"PyTorch model, {model_metrics['images']} val images"
        ),
        "mac_ratio": metrics["teacher"]["macs"] / model_metrics["macs"],
        # PyTorch accuracy compares with the PyTorch teacher; an artifact's with the teacher's artifact (later)
        "top1_delta": math.nan if numeric else model_metrics["top1"] - metrics["teacher"]["top1"],
        "top5_delta": math.nan if numeric else model_metrics["top5"] - metrics["teacher"]["top5"],
        "max_abs_diff": validation.get("max_abs_diff", math.nan) if numeric else math.nan,
        "sqnr_db": validation.get("sqnr_db", math.nan) if numeric else math.nan,
        "status": status,
        "note": note,
    }


def _shifted(state: dict[str, Any] | None) -> float:
    if not state:
        return math.nan
    return float(state.get("shifted_processes") or state.get("shifted_batches") or 0)


def _timing_cells(record: dict[str, Any] | None, target: dict[str, Any]) -> dict[str, Any]:
    """How a record was timed (cache state, converged, quiet) and what its build's plan promised."""
    timing = (record or {}).get("timing") or {}
    measured = target.get("kind") == "measured speedup"
    return {
        "cache": (record or {}).get("cache"),
        "timing_converged": timing.get("converged"),
        "timing_quiet": (timing.get("load") or {}).get("quiet"),
        "timing_processes": timing.get("processes", math.nan),
        # the reference's own latency: did the machine hold one speed (None: not recorded), and how many batches
        # or processes at another speed were set aside
        "timing_steady": (timing.get("state") or {}).get("steady"),
        "timing_shifted": _shifted(timing.get("state")),
        "target_speedup": target.get("value", math.nan) if measured else math.nan,
        "planned_speedup": target.get("measured_speedup") or math.nan if measured else math.nan,
    }


def _teacher_lookup(frame: pd.DataFrame) -> dict[tuple, pd.Series]:
    teachers = frame[frame["role"] == "teacher"]
    return {(r.build, r.format, r.runtime, r.precision, r.device): r for r in teachers.itertuples(index=False)}  # type: ignore[misc]


def add_comparisons(frame: pd.DataFrame, budget: Budget | None = None) -> pd.DataFrame:
    """Speedup, MAC ratio, realised ratio and accuracy deltas against the teacher on the same runtime/device."""
    teachers = _teacher_lookup(frame)
    speedup, realised = [], []
    d1, d5 = list(frame["top1_delta"]), list(frame["top5_delta"])
    for i, r in enumerate(frame.itertuples(index=False)):
        t = teachers.get((r.build, r.format, r.runtime, r.precision, r.device))
        s = (
            r.speedup
            if r.speedup is not None and not math.isnan(r.speedup)
            else (t.latency_median_ms / r.latency_median_ms if t is not None and r.latency_median_ms > 0 else math.nan)
        )
        speedup.append(s)
        realised.append(s / r.mac_ratio)
        if t is not None and r.accuracy_source.startswith("artifact") and t.accuracy_source.startswith("artifact"):
            d1[i], d5[i] = r.top1 - t.top1, r.top5 - t.top5
    frame = frame.assign(speedup=speedup, realised_ratio=realised, top1_delta=d1, top5_delta=d5)
    budget = budget or Budget()
    frame["meets_budget"] = [budget.check(row) for row in frame.to_dict("records")]
    return frame[COLUMNS]


def load_report_table(build_dirs: list[Path], budget: Budget | None = None) -> pd.DataFrame:
    """The comparison table of every build directory (one row per artifact and device)."""
    rows: list[dict[str, Any]] = []
    for build_dir in build_dirs:
        if not Path(build_dir).is_dir():
            raise ConfigError(
                f"{build_dir} is not a directory.", "Pass build directories written by `mobilelwt build`."
            )
        rows.extend(build_rows(Path(build_dir)))
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = math.nan
    return add_comparisons(frame, budget)


def headline_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Per (device, runtime, precision): the fastest student measured beside its teacher, with what an app team
    decides on (speedup and its interval, top-1 change, size, load time, memory)."""
    students = table[(table["role"] == "student") & table["speedup"].notna()]
    rows = []
    for _, group in students.groupby(["device", "runtime", "precision"], sort=True):
        best = group.loc[group["speedup"].idxmax()]
        rows.append({key: best[key] for key in ("build", "model", "device", "runtime", "precision", "speedup",
                                                 "speedup_ci_low", "speedup_ci_high", "cache", "timing_converged",
                                                 "timing_quiet", "timing_processes", "timing_steady",
                                                 "timing_shifted", "target_speedup", "planned_speedup", "mac_ratio",
                                                 "top1_delta", "bytes",
                                                 "latency_median_ms", "load_ms", "peak_rss_mb", "model_rss_mb",
                                                 "stable")})  # fmt: skip
    return rows


def machines(build_dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """What each device of the report's records is (host CPU and runtime versions, phone model and SoC)."""
    found: dict[str, dict[str, Any]] = {}
    for build_dir in build_dirs:
        for record in BuildDir(build_dir).bench_records():
            environment = record.get("environment") or {}
            if record.get("status") == "ok" and environment:
                found.setdefault(record["device"], {**environment, "threads": record.get("threads")})
    return found


def plan_sentence(target: dict[str, Any]) -> str:
    """What a plan was made to meet and what the planner measured for it, in one sentence."""
    if target["kind"] != "measured speedup":
        return (f"{target['value']:g}× fewer MACs ({target['planner']} planner); latency is what the bench "
                "measured, not a target")  # fmt: skip
    cache = f", {target['cache']}" if target.get("cache") else ""
    line = f"a measured {target['value']:g}× speedup on {target['probe']}{cache} ({target['planner']} planner)"
    band = target.get("band")
    if band is not None and band > 0.1:  # only a frontier point's band is this wide (a rung, or a point between two)
        line += f" (a frontier point: anything from {target['value']:g}× to {target['value'] * (1 + band):.3g}× met it)"
    if target.get("verified") is False:
        return line + ", predicted from another device's table (not timed there)"
    if target.get("measured_speedup"):
        low, high = target["measured_ci95"]
        line += f"; the planner measured {target['measured_speedup']:.2f}× ({low:.2f}–{high:.2f}×) before training"
        if target.get("overshoot"):
            line += (f", above the {target['value']:g}× target's band: no plan landed nearer, the nearest faster "
                     "one was taken")  # fmt: skip
        load = target.get("load") or {}
        if load.get("quiet") is False:
            line += ", measured under load"
    if target.get("predicted_speedup"):
        line += f"; its table predicted {target['predicted_speedup']:.2f}×"
    return line


def plan_lines(build_dirs: list[Path]) -> list[str]:
    """Per build: the target its plan was made for and what the planner measured, with the proxy it timed on when
    a target format (Core ML) cannot be timed here."""
    lines = []
    for build_dir in build_dirs:
        directory = BuildDir(build_dir)
        if not (directory / METRICS).is_file():
            continue
        target = directory.metrics().get("plan_target") or {}
        if not target:
            continue
        line = f"{Path(build_dir).name}: {plan_sentence(target)}"
        runtimes = {a.get("runtime") for a in directory.artifacts()["artifacts"]} if (directory / ARTIFACTS).is_file() \
            else set()  # fmt: skip
        if target["kind"] == "measured speedup" and "coreml" in runtimes:
            line += f"; Core ML is not timed on this host, so {target['probe']} stood in for it (proxy)"
        lines.append(line)
    return lines


def op_profiles(build_dir: Path) -> dict[str, Any]:
    """Per-operator profiles of the build's current artifacts (``bench --profile``)."""
    return BuildDir(build_dir).op_profiles()


def frontiers(build_dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """Per build that was chosen by a --max-drop search: its current frontier (every point tried, the choice),
    each fine-tuned point with its exported files' measurements when the build timed them (:func:`with_files`)."""
    found = {}
    for build_dir in build_dirs:
        directory = BuildDir(build_dir)
        frontier = directory.frontier()
        if frontier is not None:
            found[Path(build_dir).name] = with_files(directory, frontier)
    return found


def with_files(directory: BuildDir, frontier: dict[str, Any]) -> dict[str, Any]:
    """``frontier`` with ``files`` on each point timed as exported files (``{"fp32": ..., "int8": ...}``, from
    ``frontier-bench.json``; the chosen point's fp32 from the build's own bench, the number its headline shows) and
    ``files`` on the record (the runtime, threads and cache, or why the files were not timed)."""
    bench = directory.frontier_bench()
    if bench is None:
        return frontier
    student = _build_student(directory, bench["runtime"])
    points = []
    for point in frontier["points"]:
        files = next((f for f in bench["points"] if f["target"] == point["target"]), None)
        if files is not None and point["target"] == frontier["chosen"] and student is not None:
            files = {**files, "fp32": student}  # the shipped file: one number, its own bench's
        points.append({**point, "files": files} if files else point)
    about = {k: bench.get(k) for k in ("runtime", "threads", "cache", "skipped", "input", "teacher")}
    real = [p for p in points if "same_as" not in p]
    chosen = next((p for p in real if p["target"] == frontier["chosen"]), None)
    # the sentence quotes each point as the table shows it: its file's speedup once timed
    why = explain(real, chosen, max_drop=frontier["max_drop"], floor=frontier.get("floor"),
                  stopped=frontier.get("stopped", ""), speed=lambda p: shown_speedup(p)[:2])["why"]  # fmt: skip
    return {**frontier, "points": points, "files": about, "why": choice_sentence(why, frontier)}


def _build_student(directory: BuildDir, runtime: str) -> dict[str, Any] | None:
    """The build's own fp32 student file for ``runtime`` as a frontier entry: its host bench speedup and its
    accuracy on the artifact (the chosen point, measured once)."""
    listed = [a for a in directory.artifacts()["artifacts"] if a.get("runtime") == runtime
              and a.get("precision") == "fp32" and a.get("status") in ("ok", "mismatch")]  # fmt: skip
    student = next((a for a in listed if a["role"] == "student"), None)
    teacher = next((a for a in listed if a["role"] == "teacher" and a.get("target") == (student or {}).get("target")),
                   None)  # fmt: skip
    record = next((r for r in directory.bench_records() if student and r["artifact"] == student["path"]
                   and r["device"] == "host" and r.get("speedup") is not None), None)  # fmt: skip
    if student is None or record is None:
        return None
    return {"artifact": student["path"], "sha256": student.get("sha256"), "status": student["status"],
            **artifact_accuracy(student, teacher), "speedup": record["speedup"],
            "speedup_ci95": record.get("speedup_ci95"), "cache": record.get("cache"),
            "caches": record.get("caches") or {}, "build_student": True}  # fmt: skip


def shown_speedup(point: dict[str, Any]) -> tuple[float, list[float] | None, str]:
    """The one speedup a frontier point is shown with: its exported fp32 file's when timed, else the planner's
    timing of what export will produce (a layer-wise-only point is never exported). Also its interval and which."""
    fp32 = (point.get("files") or {}).get("fp32") or {}
    if fp32.get("speedup") is not None:
        return fp32["speedup"], fp32.get("speedup_ci95"), "file"
    return point["speedup"], point.get("speedup_ci95"), "planned"


def frontier_lines(name: str, frontier: dict[str, Any]) -> list[str]:
    """The frontier as sentences: one per point (speedup with its interval, accuracy, how far trained; the int8
    file beside it when the build timed the points' files)."""
    teacher = frontier["teacher"]
    files = frontier.get("files") or {}
    timing = (f"files timed against the teacher's fp32 file: {files['runtime']}, {files['threads']} threads, "
              f"{files['cache']} cache" if files and not files.get("skipped")
              else f"files not timed: {files['skipped']}" if files else "")  # fmt: skip
    lines = [f"{name}: {frontier['model']} at {frontier['input_size']}², teacher top-1 {teacher['top1']:.2f} %, "
             f"budget {frontier['max_drop']:g} points ({frontier['speedup_kind']}, {_latency_words(frontier)}"
             f"{'; ' + timing if timing else ''}); {frontier['why']}"]  # fmt: skip
    for point in sorted((p for p in frontier["points"] if "same_as" not in p), key=lambda p: shown_speedup(p)[0]):
        speedup, ci, source = shown_speedup(point)
        interval = f" (95% CI {ci[0]:.2f}–{ci[1]:.2f})" if ci else ""
        mark = " ← chosen" if point["target"] == frontier["chosen"] else ""
        where = (f"fp32 file (planned {point['speedup']:.2f}×)" if source == "file"
                 else "planned" if point.get("timed") else "")  # fmt: skip
        lines.append(f"{speedup:.2f}×{interval}{' ' + where if where else ''}: top-1 {point['top1']:.2f} % "
                     f"({-point['drop'] + 0.0:+.2f}), top-5 {point['top5']:.2f} %, MACs {point['mac_speedup']:.2f}× "
                     f"fewer, {training_words(point)}{_int8_words(point)}{mark}")  # fmt: skip
    return lines


def _int8_words(point: dict[str, Any]) -> str:
    int8 = (point.get("files") or {}).get("int8")
    if not int8:
        return ""
    if int8.get("status") == "failed":
        return f"; int8 file failed: {int8.get('reason')}"
    ci = int8.get("speedup_ci95")
    speed = (f"{int8['speedup']:.2f}×" + (f" (95% CI {ci[0]:.2f}–{ci[1]:.2f})" if ci else "")
             if int8.get("speedup") is not None else "not timed")  # fmt: skip
    accuracy = f"top-1 {int8['top1']:.2f} %" if int8.get("top1") is not None else "top-1 unknown"
    if int8.get("drop") is not None:
        low, high = int8["drop_ci95"]
        accuracy += f" ({-int8['drop'] + 0.0:+.2f}, 95% CI {-high + 0.0:+.2f} to {-low + 0.0:+.2f})"
    mismatch = ", outside the int8 parity limits" if int8.get("status") == "mismatch" else ""
    return f"; int8 file {speed}, {accuracy} on {int8.get('images')} images{mismatch}"


def _latency_words(frontier: dict[str, Any]) -> str:
    latency = frontier.get("latency") or {}
    if frontier["speedup_kind"] != "measured speedup":
        return "MACs, not timed"
    return (f"{latency.get('runtime')} {latency.get('precision')} on {latency.get('device')}, "
            f"{latency.get('threads')} threads, {latency.get('cache')} cache")  # fmt: skip


def layer_breakdown(build_dir: Path) -> list[dict[str, Any]]:
    """Per replaced layer: teacher and student MACs, module and rank (latency per layer needs an op profile)."""
    directory = BuildDir(build_dir)
    metrics = directory.metrics() if (directory / METRICS).is_file() else {}
    timed = {r["layer"]: r for r in (directory.layer_latency() or {}).get("layers", [])}
    return [
        {
            "layer": name,
            "module": rec.get("module"),
            "rank": rec.get("rank"),
            "teacher_macs": rec.get("teacher_macs"),
            "student_macs": rec.get("student_macs"),
            "error_final": rec.get("error_final"),
            "teacher_ms": timed.get(name, {}).get("teacher_ms"),
            "student_ms": timed.get(name, {}).get("student_ms"),
            "predicted_teacher_ms": rec.get("predicted_teacher_ms"),
            "predicted_ms": rec.get("predicted_ms"),
        }
        for name, rec in metrics.get("layers", {}).items()
    ]
