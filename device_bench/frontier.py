"""The frontier's students as files: every fully trained point exported fp32 and int8 for the latency runtime,
its accuracy measured on the artifact, and its speedup over the teacher's fp32 file timed by the one protocol,
warm and cold; and the build's choice made on those files.

The search (``mobilelwt.frontier``) ranks points by the planner's timing of what export will produce; in a build
the files decide (:func:`files_choice`): every point's fp32 file runs interleaved with the teacher's in one
protocol run per cache state, so their ratios share its drift, and the fastest file within the budget is the
student the build ships. The planner's timing of the same plans can disagree by a factor (AlexNet 64² on CIFAR-10:
a point planned at 5.85× ran 9.05× as a file, the planner's choice 8.31× → 8.49×), so the files' order is the one
that counts. The teacher's file is exported in one point's directory (every point has the same teacher).

The result, ``DIR/frontier-bench.json``, is keyed by the teacher's file and every point file's bytes; a run with
the same inputs is reused (another budget with the same points times nothing again), and the report shows it only
while its points are the current frontier's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from device_bench.apart import measure_files
from device_bench.protocol import TimingPolicy, cache_order
from device_bench.stats import artifact_accuracy
from mobilelwt.builddir import FRONTIER_BENCH, FRONTIER_BENCH_FORMAT, BuildDir
from mobilelwt.frontier import within_budget
from mobilelwt.hashing import digest
from mobilelwt.io import write_json
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from targets.build_export import ExportOptions, export_build
from targets.formats import TARGET_FORMATS, Format, by_runtime

PRECISIONS = ("fp32", "int8")


def files_choice(
    *,
    options: ExportOptions,
    threads: int = 2,
    policy: TimingPolicy | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> Callable[[Path, dict[str, Any]], dict[str, Any]]:
    """The hook a build hands the frontier search: time the points' files (:func:`bench_frontier`) and choose
    among them (:func:`choose_by_files`)."""

    def choose(build_dir: Path, frontier: dict[str, Any]) -> dict[str, Any]:
        bench = bench_frontier(build_dir, frontier, options=options, threads=threads, policy=policy,
                               on_progress=on_progress)  # fmt: skip
        return choose_by_files(frontier, bench)

    return choose


def choose_by_files(frontier: dict[str, Any], bench: dict[str, Any]) -> dict[str, Any]:
    """The point to ship: the fine-tuned point within the budget whose file (in the precision the search planned
    for) ran fastest against the teacher's fp32 file, reaching the ``--speedup`` floor when one is set; the
    planner's choice stands when no such file was timed.

    Returns ``{"files": True, "chosen", "planner_chose", "reason", "speeds"}``, ``speeds`` holding each timed
    point's file speedup and interval (what the build's sentence quotes)."""
    planner = frontier["chosen"]
    precision = (frontier.get("latency") or {}).get("precision") or "fp32"  # the precision the search planned
    speeds: dict[str, list[Any]] = {}
    candidates: dict[float, float] = {}
    timed_within: list[float] = []
    by_target = {p["target"]: p for p in frontier["points"] if "same_as" not in p}
    floor = frontier.get("floor")
    for entry in bench.get("points", []):
        file = entry.get(precision) or {}
        point = by_target.get(entry["target"])
        if file.get("speedup") is None or point is None:
            continue
        speeds[f"{entry['target']:g}"] = [file["speedup"], file.get("speedup_ci95")]
        reaches = floor is None or (file.get("speedup_ci95") or [0.0, file["speedup"]])[1] >= floor
        if point["trained"] == "fine-tuned" and within_budget(point, frontier["max_drop"]):
            timed_within.append(entry["target"])
            if reaches:
                candidates[entry["target"]] = file["speedup"]
    base = {"files": True, "planner_chose": planner, "speeds": speeds}
    if bench.get("skipped"):
        return {**base, "chosen": planner, "reason": f"files not timed ({bench['skipped']}): the planner's choice"}
    if not candidates:
        missed = f"no file within the budget reached {floor:g}×" if floor is not None and timed_within else (
            "no file within the budget was timed"
        )  # fmt: skip
        return {**base, "chosen": planner, "reason": f"{missed}: the planner's choice"}
    best = max(candidates, key=lambda target: candidates[target])
    if best == planner:
        return {**base, "chosen": best, "reason": "its file ran fastest too"}
    ran = speeds.get(f"{planner:g}")
    planner_words = f", whose file ran {ran[0]:.2f}×" if ran else ""
    return {**base, "chosen": best,
            "reason": f"its file ran fastest; the planner's timing ranked the {planner:g}× point first"
                      f"{planner_words}"}  # fmt: skip


def bench_frontier(
    build_dir: Path,
    frontier: dict[str, Any],
    *,
    options: ExportOptions,
    threads: int = 2,
    policy: TimingPolicy | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> dict[str, Any]:
    """Export, validate and time the fine-tuned points of ``frontier`` (a build's frontier record) against the
    teacher's fp32 file; returns (and writes) the ``frontier-bench.json`` record."""
    policy = policy or TimingPolicy()
    directory = BuildDir(build_dir)
    runtime = (frontier.get("latency") or {}).get("runtime") or "executorch"
    base = {"format": FRONTIER_BENCH_FORMAT, "runtime": runtime, "threads": threads, "cache": policy.cache}
    fmt = by_runtime(runtime)
    points = sorted((p for p in frontier["points"] if p.get("trained") == "fine-tuned" and "same_as" not in p),
                    key=lambda p: p["target"])  # fmt: skip
    target = next(t for t, formats in TARGET_FORMATS.items() if fmt.name in formats)
    export_options = replace(options, et_bundled=0, et_coreml_delegate=False)
    teacher = _teacher_file(directory, points, fmt, target, export_options) if fmt.host_runtime else None
    why_not = (f"{runtime} does not run on this host" if not fmt.host_runtime
               else f"the teacher's fp32 {runtime} file did not export and validate" if teacher is None
               else None)  # fmt: skip
    if why_not is not None:
        record = {**base, "skipped": why_not, "points": []}
        write_json(directory / FRONTIER_BENCH, record)
        return record
    files: dict[str, dict[str, Any]] = {}  # runner name -> the artifact's record
    for index, point in enumerate(points):
        on_progress(ProgressEvent("frontier files", index, len(points), {"point": f"{point['target']:g}×"}))
        listing = export_build(directory / point["dir"], target=target, formats=(fmt.name,), roles=("student",),
                               options=replace(export_options, precisions=PRECISIONS))  # fmt: skip
        for artifact in listing["artifacts"]:
            if (artifact.get("format"), artifact.get("role")) == (fmt.ext, "student") and (
                artifact["precision"] in PRECISIONS
            ):  # fmt: skip
                files[_name(point, artifact["precision"])] = {**artifact, "path": f"{point['dir']}/{artifact['path']}"}
    on_progress(ProgressEvent("frontier files", len(points), len(points), {}))
    key = digest({**base, "teacher": teacher["sha256"], "policy": policy.describe(),
                  "files": {name: a.get("sha256") for name, a in sorted(files.items())}})  # fmt: skip
    previous = directory.frontier_bench_record()
    if previous is not None and previous.get("key") == key:
        return previous
    timed = _time(directory, teacher, files, runtime, threads, policy)
    record = {
        **base,
        "key": key,
        "teacher": {
            "artifact": teacher["path"],
            "dir": teacher["dir"],
            "sha256": teacher["sha256"],
            **artifact_accuracy(teacher, None),
        },  # fmt: skip
        "input": [1, 3, teacher["input_size"], teacher["input_size"]],
        "timing": {
            cache: {
                k: got.get(k)
                for k in ("batches", "quiet_batches", "seconds", "converged", "stopped", "load", "state", "processes")
            }
            for cache, got in timed.items()
        },  # fmt: skip
        "points": [_point_record(point, files, teacher, timed, policy.cache) for point in points],
    }
    write_json(directory / FRONTIER_BENCH, record)
    return record


def _teacher_file(
    directory: BuildDir, points: list[dict[str, Any]], fmt: Format, target: str, options: ExportOptions
) -> dict[str, Any] | None:
    """The teacher's validated fp32 file in ``fmt`` (the reference every point is timed against), exported in the
    first point's directory unless a point already has it; its path relative to the build directory."""
    if not points:
        return None
    home = next((p for p in points if _has_teacher(directory / p["dir"], fmt)), points[0])
    listing = export_build(directory / home["dir"], target=target, formats=(fmt.name,), roles=("teacher",),
                           options=replace(options, precisions=("fp32",)))  # reused when it is current  # fmt: skip
    found = next((a for a in listing["artifacts"] if _is_teacher_file(a, fmt) and a["status"] == "ok"), None)
    return {**found, "path": f"{home['dir']}/{found['path']}", "dir": home["dir"]} if found else None


def _has_teacher(point_dir: Path, fmt: Format) -> bool:
    # listed is enough: export_build checks the file's bytes (and re-exports a stale one) right after
    return any(_is_teacher_file(a, fmt) for a in BuildDir(point_dir).artifacts()["artifacts"])


def _is_teacher_file(artifact: dict[str, Any], fmt: Format) -> bool:
    fields = (artifact.get("role"), artifact.get("precision"), artifact.get("format"))
    return fields == ("teacher", "fp32", fmt.ext) and artifact.get("backend") in (None, "xnnpack")


def _name(point: dict[str, Any], precision: str) -> str:
    return f"x{point['target']:g} {precision}"


def _time(
    directory: BuildDir,
    teacher: dict[str, Any],
    files: dict[str, dict[str, Any]],
    runtime: str,
    threads: int,
    policy: TimingPolicy,
) -> dict[str, dict[str, Any]]:
    """Every point file against the teacher's, interleaved, in both cache states (the policy's first)."""
    timeable = {name: a for name, a in files.items() if a.get("status") in ("ok", "mismatch")}
    if not timeable:
        return {}
    files = {"teacher": directory / teacher["path"], **{n: directory / a["path"] for n, a in timeable.items()}}
    return measure_files(files, runtime=runtime, threads=threads, input_size=teacher["input_size"],
                         reference="teacher", policy=policy, caches=cache_order(policy))  # fmt: skip


def _point_record(
    point: dict[str, Any],
    files: dict[str, dict[str, Any]],
    teacher: dict[str, Any],
    timed: dict[str, dict[str, Any]],
    headline: str,
) -> dict[str, Any]:
    record: dict[str, Any] = {"target": point["target"], "compress_key": point["compress_key"]}
    for precision in PRECISIONS:
        name = _name(point, precision)
        artifact = files.get(name)
        if artifact is None:
            record[precision] = {"status": "missing", "reason": f"no {precision} file was exported"}
            continue
        entry: dict[str, Any] = {"artifact": artifact["path"], "sha256": artifact.get("sha256"),
                                 "status": artifact["status"]}  # fmt: skip
        if artifact["status"] == "failed":
            record[precision] = {**entry, "reason": artifact.get("reason")}
            continue
        entry.update(artifact_accuracy(artifact, teacher))
        caches = {cache: got["models"][name] for cache, got in timed.items() if name in got["models"]}
        if headline in caches:
            entry.update(speedup=caches[headline]["speedup"], speedup_ci95=caches[headline]["speedup_ci95"],
                         cache=headline)  # fmt: skip
        entry["caches"] = {
            cache: {"speedup": m["speedup"], "speedup_ci95": m["speedup_ci95"], "median_ms": m["median_ms"],
                    "converged": timed[cache]["converged"], "quiet": timed[cache]["load"]["quiet"]}
            for cache, m in caches.items()
        }  # fmt: skip
        record[precision] = entry
    return record
