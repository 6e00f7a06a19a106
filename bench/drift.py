"""How a speedup moves with the machine's state over minutes: one process, the teacher and student files
alternating call by call (cold: a cache flush before each), medians per window of a few seconds.

On a shared host the memory bandwidth a VM gets changes for seconds to minutes at a time; the memory-bound teacher
gains more from it than its student, so the ratio moves with the teacher's own latency. This script shows the
windows, the correlation between the teacher's latency and the ratio, and the windows the protocol's state check
(:func:`device_bench.load.prevalent_state`, 20 %) would set aside.

    python bench/drift.py runs/some-build --seconds 240 --window 5 --json bench/results/drift-alexnet64.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from fresh import build_runners, machine, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, help="a build directory (its ExecuTorch fp32 teacher and student)")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from device_bench.load import prevalent_state
    from device_bench.timing import CacheFlusher

    runners, example = build_runners(args.build, args.threads)
    teacher, student = runners["teacher"], runners["student"]
    flush = CacheFlusher()
    for run in (teacher, student):
        for _ in range(3):
            run(example)
    windows = []
    started = time.monotonic()
    while time.monotonic() - started < args.seconds:
        times: dict[str, list[float]] = {"teacher": [], "student": [], "flush": []}
        opened = time.monotonic()
        while time.monotonic() - opened < args.window:
            for name, run in (("teacher", teacher), ("student", student)):
                before = time.perf_counter()
                flush()
                between = time.perf_counter()
                run(example)
                times["flush"].append((between - before) * 1e3)
                times[name].append((time.perf_counter() - between) * 1e3)
        window = {"at_s": time.monotonic() - started, **{f"{k}_ms": statistics.median(v) for k, v in times.items()}}
        window["speedup"] = window["teacher_ms"] / window["student_ms"]
        windows.append(window)
        print(f"{window['at_s']:6.0f} s  teacher {window['teacher_ms']:6.2f} ms  student {window['student_ms']:6.2f} "
              f"ms  speedup {window['speedup']:5.2f}×  flush {window['flush_ms']:5.2f} ms", flush=True)  # fmt: skip
    teacher_ms = [w["teacher_ms"] for w in windows]
    speedups = [w["speedup"] for w in windows]
    centre, members = prevalent_state(teacher_ms)
    others = [w for i, w in enumerate(windows) if i not in members]
    r = statistics.correlation(teacher_ms, speedups) if len(windows) > 2 else None
    summary = {
        "windows": len(windows),
        "speedup_range": [min(speedups), max(speedups)],
        "speedup_median": statistics.median(speedups),
        "teacher_ms_range": [min(teacher_ms), max(teacher_ms)],
        "r_teacher_speedup": r,
        "prevalent_teacher_ms": centre,
        "prevalent_speedup": statistics.median(speedups[i] for i in members),
        "other_state_windows": len(others),
        "other_state_speedup": statistics.median(w["speedup"] for w in others) if others else None,
    }
    print(f"\n{len(windows)} windows: speedup {min(speedups):.2f}–{max(speedups):.2f}× (median "
          f"{summary['speedup_median']:.2f}×); teacher {min(teacher_ms):.2f}–{max(teacher_ms):.2f} ms; "
          f"r(teacher ms, speedup) = {'n/a' if r is None else f'{r:+.2f}'}")  # fmt: skip
    print(f"prevalent state: teacher {centre:.2f} ms, speedup {summary['prevalent_speedup']:.2f}×; "
          f"{len(others)} window(s) at another speed"
          + (f" (speedup {summary['other_state_speedup']:.2f}×)" if others else ""))  # fmt: skip
    write_result(args.json, {
        "benchmark": "drift",
        "build": str(args.build),
        "machine": {**machine(), "platform": platform.platform()},
        "runtime": "executorch fp32 (XNNPACK), host",
        "threads": args.threads,
        "cache": "cold (a flush before every call; teacher and student alternate call by call)",
        "window_s": args.window,
        "summary": summary,
        "series": windows,
    })  # fmt: skip


if __name__ == "__main__":
    main()
