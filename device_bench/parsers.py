"""Parse what the native benchmark tools print: ExecuTorch's ``executor_runner`` and TFLite's ``benchmark_model``.

Both tools exit 0 in situations where nothing was measured (and ``adb shell`` of old adb versions always exits 0),
so a parse that does not find the completion line raises :class:`RunnerOutputError` instead of guessing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mobilelwt.errors import MobileLWTError


class RunnerOutputError(MobileLWTError):
    """The runner's output does not show a completed run."""


MARKER = "MOBILELWT_RESULT "  # the Python runner's one result line (device_bench.runner prints it last)


def parse_result(output: str) -> dict[str, Any]:
    """The record a runner printed; a missing or broken marker line means the run did not complete."""
    lines = [line for line in output.splitlines() if line.startswith(MARKER)]
    if not lines:
        raise RunnerOutputError(
            "The Python runner printed no result line: the run did not complete.",
            "Run `python -m device_bench.runner` by hand on the device to see why.",
        )
    try:
        return json.loads(lines[-1][len(MARKER) :])
    except json.JSONDecodeError:
        raise RunnerOutputError("The Python runner's result line is cut short.", "Re-run the benchmark.") from None


_ET_TOTAL = re.compile(r"Model executed successfully\s+(\d+)\s+time\(s\)\s+in\s+([\d.]+)\s*ms")
_ET_DONE = re.compile(r"Model executed successfully\.?\s*$", re.MULTILINE)
_ET_COUNT = re.compile(r"Model executed successfully\s+(\d+)\s+time\(s\)\.?\s*$", re.MULTILINE)
# "Iteration 3 of 5: 0.46 ms" (1.x), "Iteration 3: 0.46 ms", "Run 3 took 0.46 ms"
_ET_ITERATION = re.compile(
    r"(?:Iteration|Run)\s+(\d+)(?:\s+of\s+\d+)?\s*[:,]?\s*(?:took\s+)?([\d.]+)\s*ms", re.IGNORECASE
)
_ET_LOADED = re.compile(r"Model loaded in\s+([\d.]+)\s*ms")
_ET_ETDUMP = re.compile(r"ETDump written to file '([^']+)'")
# executorch's log lines: "E 00:00:00.000696 executorch:method.cpp:85] Backend XnnpackBackend is not registered."
_ET_LOG_ERROR = re.compile(r"^[EF] [\d:.]+ [^\]]*\]\s*(.+)$", re.MULTILINE)
_ET_FAILED = re.compile(r"(Execution of method \S+ failed[^\n]*|Loading of method \S+ failed[^\n]*)")
_ET_FIXES = (
    (
        "is not registered",
        "This executor_runner was built without the backend the .pte was lowered for: rebuild "
        "it with that backend linked in (XNNPACK: -DEXECUTORCH_BUILD_XNNPACK=ON, whole-archive).",
    ),
    (
        "Missing operator",
        "The runner was built without a kernel this program needs: rebuild it with those kernels "
        "(e.g. the optimized or portable kernel library), or re-export so that the op is delegated.",
    ),
    ("Failed to open", "Check that the .pte was pushed to that path on the device."),
    ("too small", "The .pte on the device is cut short: push it again (mobilelwt re-pushes files whose hash differs)."),
    ("Failed to parse", "The file is not an ExecuTorch program for this runtime version: re-export it."),
    (
        "unknown command line flag",
        "This executor_runner does not take that flag: use a build of ExecuTorch 1.x "
        "with the event tracer (-DEXECUTORCH_ENABLE_EVENT_TRACER=ON).",
    ),
)


def parse_executor_runner(output: str) -> dict[str, Any]:
    """Iterations, per-run times, mean and load time (ms) from ``executor_runner`` (0.2 to 1.x builds).

    The mean of the total includes the first, cold execution; callers that want steady-state numbers use
    ``samples_ms`` (one per iteration, when the build prints them) and drop their warm-up runs."""
    total = _ET_TOTAL.search(output)
    counted = _ET_COUNT.search(output)
    if not (total or counted or _ET_DONE.search(output)):
        raise _executor_runner_failure(output)
    per_iteration = [float(ms) for _, ms in _ET_ITERATION.findall(output)]
    loaded = _ET_LOADED.search(output)
    etdump = _ET_ETDUMP.search(output)
    common = {
        "samples_ms": per_iteration,
        "load_ms": float(loaded.group(1)) if loaded else None,
        "etdump": etdump.group(1) if etdump else None,
    }
    if total:
        iterations, total_ms = int(total.group(1)), float(total.group(2))
        return {"iterations": iterations, "total_ms": total_ms,
                "mean_ms": total_ms / iterations if iterations else float("nan"), **common}  # fmt: skip
    iterations = int(counted.group(1)) if counted else 1  # completion without a total time (older builds)
    mean = sum(per_iteration) / len(per_iteration) if per_iteration else None
    total_ms = sum(per_iteration) if per_iteration else None
    return {"iterations": iterations, "total_ms": total_ms, "mean_ms": mean, **common}


def _executor_runner_failure(output: str) -> RunnerOutputError:
    """The runner's own first error line, and the fix for the usual causes."""
    failed = _ET_FAILED.search(output)
    errors = [m.strip() for m in _ET_LOG_ERROR.findall(output)]
    flag = re.search(r"ERROR: unknown command line flag '[^']+'", output)
    fatal = [e for e in errors[1:] if "assert failed" in e][:1]  # the abort after the first error says which step
    cause = (
        flag.group(0) if flag else ("; ".join(errors[:1] + fatal) if errors else (failed.group(1) if failed else None))
    )
    if cause is None:
        return RunnerOutputError(
            "executor_runner printed no 'Model executed successfully' line: the run did not complete.",
            "Run it by hand on the device to see why (missing .pte, wrong ABI, out of memory).",
        )
    fix = next((f for key, f in _ET_FIXES if key in cause), "Check the .pte and the runner build.")
    return RunnerOutputError(f"executor_runner failed: {cause}", fix)


_TFL_TIMINGS = re.compile(
    r"Inference timings in us:\s*Init:\s*([\d.]+),\s*First inference:\s*([\d.]+),\s*"
    r"Warmup \(avg\):\s*([\d.eE+-]+|nan),\s*Inference \(avg\):\s*([\d.eE+-]+)"
)
_TFL_COUNT = re.compile(
    r"count=(\d+)\s+first=(\d+)\s+curr=(\d+)\s+min=(\d+)\s+max=(\d+)\s+avg=([\d.eE+-]+)\s+std=(\d+)"
    r"(?:\s+p5=(\d+)\s+median=(\d+)\s+p95=(\d+))?"
)
_TFL_MEMORY_DELTA = re.compile(r"Memory footprint delta[^:]*:\s*init=([\d.]+)\s+overall=([\d.]+)")
_TFL_PEAK = re.compile(r"Overall peak memory footprint \(MB\)[^:]*:\s*([\d.]+)")
_TFL_ERROR = re.compile(r"^(?:ERROR: |E )?(.*(?:Failed to|Could not|Error).*)$", re.MULTILINE)


def parse_benchmark_model(output: str) -> dict[str, Any]:
    """Timings (ms) and memory footprint from ``benchmark_model``; the last ``count=`` line is the timed run."""
    timings = _TFL_TIMINGS.search(output)
    if not timings:
        error = _TFL_ERROR.search(output)
        detail = f": {error.group(1).strip()}" if error else ""
        raise RunnerOutputError(
            f"benchmark_model printed no 'Inference timings' line{detail}.",
            "Check the .tflite path and that the runner matches the phone's ABI.",
        )
    init_us, first_us, warmup_us, inference_us = timings.groups()
    result: dict[str, Any] = {
        "init_ms": float(init_us) / 1000,
        "first_inference_ms": float(first_us) / 1000,
        "warmup_mean_ms": float(warmup_us) / 1000,
        "mean_ms": float(inference_us) / 1000,
    }
    counts = _TFL_COUNT.findall(output)
    if counts:
        count, _first, _curr, low, high, _avg, std, _p5, median, _p95 = counts[-1]
        result.update(
            runs=int(count),
            min_ms=int(low) / 1000,
            max_ms=int(high) / 1000,
            stdev_ms=int(std) / 1000,
            median_ms=int(median) / 1000 if median else None,
        )
    delta = _TFL_MEMORY_DELTA.search(output)
    if delta:
        result.update(memory_init_mb=float(delta.group(1)), memory_overall_mb=float(delta.group(2)))
    peak = _TFL_PEAK.search(output)
    if peak:
        result["memory_peak_mb"] = float(peak.group(1))
    return result
