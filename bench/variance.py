"""Where a speedup's spread comes from: the same two files timed by the protocol in several fresh processes, and
several times within each process.

If the repeats inside one process agree (their intervals overlap) while the processes disagree, the spread is a
property of the process (memory placement, thread placement), and one process's interval, however narrow, does
not cover the next process's number; if the repeats disagree as much, it is the machine drifting over time.

    python bench/variance.py runs/delivery-default/default-1 --processes 4 --repeats 3 --cap 30 \
        --json bench/results/variance-default-1.json

The state analysis asks whether the teacher's own latency (a memory-bound model: AlexNet's fc6 reads 151 MB per
cold call) tells the machine's state: every run's speedup against its teacher latency (Pearson r), and the runs
split at the widest gap between teacher latencies, when that gap is wider than 15 % (two states: the speedup in
each).

``--alternate-env NAME=VALUE`` runs every second process with that environment variable set (process 1 without,
2 with, 3 without, ...), so a setting that may steady the processes (huge pages, an allocator) is judged
interleaved against the plain processes of the same run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from fresh import build_runners

ROOT = Path(__file__).resolve().parent.parent


def repeats_in_this_process(build: Path, cache: str, threads: int, cap: float, repeats: int) -> list[dict[str, Any]]:
    from device_bench.protocol import TimingPolicy, measure_runners

    runners, example = build_runners(build, threads)
    out = []
    for _ in range(repeats):
        record = measure_runners(runners, example, reference="teacher",
                                 policy=TimingPolicy(cache=cache, max_seconds=cap))  # fmt: skip
        student = record["models"]["student"]
        out.append({"speedup": student["speedup"], "ci95": student["speedup_ci95"],
                    "teacher_ms": record["models"]["teacher"]["median_ms"], "student_ms": student["median_ms"],
                    "converged": record["converged"], "quiet": record["load"]["quiet"]})  # fmt: skip
    return out


def spread(values: list[float]) -> float:
    """(max - min) / median, as a share."""
    return (max(values) - min(values)) / statistics.median(values) if values else float("nan")


STATE_GAP = 0.15  # teacher latencies this far apart (share of the lower) are two machine states, not noise


def states(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """How the speedup moves with the teacher's latency over ``runs`` (each with teacher_ms and speedup)."""
    teacher = [r["teacher_ms"] for r in runs]
    speedup = [r["speedup"] for r in runs]
    result: dict[str, Any] = {"runs": len(runs), "teacher_ms_range": [min(teacher), max(teacher)],
                              "r_teacher_speedup": statistics.correlation(teacher, speedup) if len(runs) > 2 else None,
                              "split": None}  # fmt: skip
    ordered = sorted(runs, key=lambda r: r["teacher_ms"])
    gaps = [(b["teacher_ms"] / a["teacher_ms"] - 1, i) for i, (a, b) in enumerate(itertools.pairwise(ordered))]
    if gaps and max(gaps)[0] > STATE_GAP:
        cut = max(gaps)[1] + 1
        fast, slow = ordered[:cut], ordered[cut:]
        result["split"] = {
            "gap": max(gaps)[0],
            "fast": {"runs": len(fast), "teacher_ms": statistics.median(r["teacher_ms"] for r in fast),
                     "student_ms": statistics.median(r["student_ms"] for r in fast),
                     "speedup": statistics.median(r["speedup"] for r in fast)},
            "slow": {"runs": len(slow), "teacher_ms": statistics.median(r["teacher_ms"] for r in slow),
                     "student_ms": statistics.median(r["student_ms"] for r in slow),
                     "speedup": statistics.median(r["speedup"] for r in slow)},
        }  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", default="cold")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cap", type=float, default=30.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--alternate-env", metavar="NAME=VALUE", help="set in every second process")
    parser.add_argument("--inside", action="store_true", help="(internal) the repeats of one process")
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(repeats_in_this_process(args.build, args.cache, args.threads, args.cap, args.repeats)))
        return
    alternate = dict([args.alternate_env.split("=", 1)]) if args.alternate_env else {}
    processes, groups = [], []
    for index in range(args.processes):
        argv = [sys.executable, str(Path(__file__).resolve()), str(args.build), "--inside",
                "--repeats", str(args.repeats), "--cache", args.cache, "--threads", str(args.threads),
                "--cap", str(args.cap)]  # fmt: skip
        group = args.alternate_env if alternate and index % 2 else "plain"
        env = {**os.environ, **(alternate if group != "plain" else {})}
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=True, env=env)
        processes.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        groups.append(group)
        print(
            f"process {index + 1} ({group}): "
            + ", ".join(f"{r['speedup']:.2f}× ({r['ci95'][0]:.2f}–{r['ci95'][1]:.2f})" for r in processes[-1]),
            flush=True,
        )
    medians = [statistics.median(r["speedup"] for r in runs) for runs in processes]
    width = statistics.median((r["ci95"][1] - r["ci95"][0]) / r["speedup"] for runs in processes for r in runs)
    print(f"\n{'':>10} {'':>12} {'median speedup':>15} {'repeats (spread)':>18}")
    for index, runs in enumerate(processes):
        print(f"process {index + 1:>2} {groups[index]:>12.12} {medians[index]:>15.2f} "
              f"{spread([r['speedup'] for r in runs]):>17.1%}")  # fmt: skip
    by_group = {}
    for group in dict.fromkeys(groups):
        mine = [i for i, g in enumerate(groups) if g == group]
        by_group[group] = {
            "processes": [i + 1 for i in mine],
            "process_medians": [medians[i] for i in mine],
            "median": statistics.median(medians[i] for i in mine),
            "within_process_spread": statistics.median(spread([r["speedup"] for r in processes[i]]) for i in mine),
            "between_process_spread": spread([medians[i] for i in mine]),
        }
        print(
            f"\n{group}: within a process {by_group[group]['within_process_spread']:.1%} spread; between processes "
            f"{by_group[group]['between_process_spread']:.1%}; median {by_group[group]['median']:.2f}×"
        )
    print(f"one run's interval: ±{width / 2:.1%}")
    state = states([r for runs in processes for r in runs])
    r_text = "n/a" if state["r_teacher_speedup"] is None else f"{state['r_teacher_speedup']:+.2f}"
    print(f"teacher {state['teacher_ms_range'][0]:.2f}–{state['teacher_ms_range'][1]:.2f} ms over the runs; "
          f"r(teacher ms, speedup) = {r_text}")  # fmt: skip
    if state["split"]:
        for name in ("fast", "slow"):
            part = state["split"][name]
            print(f"  {name} machine state: {part['runs']} runs, teacher {part['teacher_ms']:.2f} ms, "
                  f"student {part['student_ms']:.2f} ms, speedup {part['speedup']:.2f}×")  # fmt: skip
    else:
        print(f"  one machine state (no gap between teacher latencies over {STATE_GAP:.0%})")
    within = statistics.median(spread([r["speedup"] for r in runs]) for runs in processes)
    between = spread(medians)
    report = {
        "benchmark": "variance",
        "build": str(args.build),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
        "runtime": "executorch fp32 (XNNPACK), host",
        "threads": args.threads,
        "cache": args.cache,
        "cap_s": args.cap,
        "processes": processes,
        "process_groups": groups,
        "groups": by_group,
        "process_medians": medians,
        "within_process_spread": within,
        "between_process_spread": between,
        "interval_half_width": width / 2,
        "states": state,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
