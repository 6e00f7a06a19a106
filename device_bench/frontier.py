"""The frontier's students as files: every fully trained point exported fp32 and int8 for the latency runtime,
its accuracy measured on the artifact, and its speedup over the teacher's fp32 file timed by the one protocol,
warm and cold.

The search (``mobilelwt.frontier``) ranks points by the planner's timing of what export will produce; a build
then times the files themselves, as it does for its own student. The chosen point's fp32 file *is* the build's
student, timed by the build's bench: it is not timed a second time here (one number per question). All other
files run interleaved with the teacher in one protocol run per cache state, so their ratios share its drift.

The result, ``DIR/frontier-bench.json``, is keyed by the teacher's file and every point file's bytes; a run with
the same inputs is reused, and the report shows it only while its points are the current frontier's.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from device_bench.apart import measure_files
from device_bench.protocol import TimingPolicy, cache_order
from device_bench.stats import artifact_accuracy
from mobilelwt.builddir import FRONTIER_BENCH, BuildDir
from mobilelwt.hashing import digest
from mobilelwt.io import write_json
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from targets.build_export import ExportOptions, export_build
from targets.formats import TARGET_FORMATS, by_runtime

FRONTIER_BENCH_FORMAT = "mobilelwt.frontier-bench/1"
PRECISIONS = ("fp32", "int8")


def bench_frontier(
    build_dir: Path,
    frontier: dict[str, Any],
    *,
    options: ExportOptions,
    threads: int = 2,
    policy: TimingPolicy | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> dict[str, Any]:
    """Export, validate and time the fine-tuned points of ``frontier`` (a build's current ``frontier.json``);
    returns (and writes) the ``frontier-bench.json`` record."""
    policy = policy or TimingPolicy()
    directory = BuildDir(build_dir)
    runtime = (frontier.get("latency") or {}).get("runtime") or "executorch"
    # keyed by the files, not by the search: another budget with the same points times nothing again
    base = {"format": FRONTIER_BENCH_FORMAT, "chosen": frontier["chosen"], "compress_key": directory.compress_key(),
            "runtime": runtime, "threads": threads, "cache": policy.cache}  # fmt: skip
    fmt = by_runtime(runtime)
    teacher = _teacher_file(directory, runtime)
    why_not = (f"{runtime} does not run on this host" if not fmt.host_runtime
               else f"the build has no validated fp32 teacher file for {runtime} (build with --target android)"
               if teacher is None else None)  # fmt: skip
    if why_not is not None:
        record = {**base, "skipped": why_not, "points": []}
        write_json(directory / FRONTIER_BENCH, record)
        return record
    target = next(t for t, formats in TARGET_FORMATS.items() if fmt.name in formats)
    export_options = replace(options, et_bundled=0, et_coreml_delegate=False)
    points = [p for p in frontier["points"] if p.get("trained") == "fine-tuned" and "same_as" not in p]
    files: dict[str, dict[str, Any]] = {}  # runner name -> the artifact's record
    for index, point in enumerate(points):
        on_progress(ProgressEvent("frontier files", index, len(points), {"point": f"{point['target']:g}×"}))
        chosen = point["target"] == frontier["chosen"]  # its fp32 file is the build's student, timed by its bench
        precisions = tuple(p for p in PRECISIONS if not (chosen and p == "fp32"))
        listing = export_build(directory / point["dir"], target=target, formats=(fmt.name,), roles=("student",),
                               options=replace(export_options, precisions=precisions))  # fmt: skip
        for artifact in listing["artifacts"]:
            if (artifact.get("format"), artifact.get("role")) != (fmt.ext, "student") or artifact["precision"] not in (
                precisions
            ):  # fmt: skip
                continue
            files[_name(point, artifact["precision"])] = {**artifact, "path": f"{point['dir']}/{artifact['path']}"}
    on_progress(ProgressEvent("frontier files", len(points), len(points), {}))
    key = digest({**base, "teacher": teacher["sha256"], "policy": policy.describe(),
                  "files": {name: a.get("sha256") for name, a in sorted(files.items())}})  # fmt: skip
    previous = directory.frontier_bench()
    if previous is not None and previous.get("key") == key:
        return previous
    timed = _time(directory, teacher, files, runtime, threads, policy)
    record = {
        **base,
        "key": key,
        "teacher": {"artifact": teacher["path"], "sha256": teacher["sha256"], **artifact_accuracy(teacher, None)},
        "input": [1, 3, teacher["input_size"], teacher["input_size"]],
        "timing": {
            cache: {
                k: got.get(k)
                for k in ("batches", "quiet_batches", "seconds", "converged", "stopped", "load", "processes")
            }
            for cache, got in timed.items()
        },  # fmt: skip
        "points": [_point_record(point, files, teacher, timed, policy.cache) for point in points],
    }
    write_json(directory / FRONTIER_BENCH, record)
    return record


def _teacher_file(directory: BuildDir, runtime: str) -> dict[str, Any] | None:
    """The build's validated fp32 teacher file for ``runtime`` (the reference every point is timed against)."""
    for artifact in directory.artifacts()["artifacts"]:
        if (artifact.get("role"), artifact.get("runtime"), artifact.get("precision"), artifact.get("status")) == (
            "teacher", runtime, "fp32", "ok"
        ) and artifact.get("backend") in (None, "xnnpack") and directory.current_artifact(artifact):  # fmt: skip
            return artifact
    return None


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
            record[precision] = {"build_student": True}  # the chosen point's fp32 file: the build's bench has it
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
