"""Delivery benchmark: is the speedup a build promises the speedup its exported files deliver?

    python bench/delivery.py builds --count 5 --out runs/delivery-default
    python bench/delivery.py sweep --model alexnet --input-size 64 --data ../shared/data/cifar10-train \\
        --speedups 3 4 5 6 8 --out runs/delivery-alexnet64

``builds`` runs ``mobilelwt build`` (the README's default) ``--count`` times into fresh directories; ``sweep``
builds one model at several measured ``--speedup`` targets (random teacher weights, no training: timing does not
depend on the weights; a shared latency table). For every build, one row: the target; what the planner measured
before training (its interval); what the build's own bench measured on the exported ExecuTorch files (warm and
cold); and an *independent* timing of those two files in a fresh process, by the same protocol, warm and cold.

Goals (issue 22): the independent cold timing lies within ±5 % of the delivered interval and its interval reaches
the target in every row; no plan overshoots its target by more than its interval's width. Prints a table and
writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fresh import add_timer, build_runners, in_fresh_process

ROOT = Path(__file__).resolve().parent.parent


def run_build(out: Path, extra: list[str]) -> float:
    """One ``mobilelwt build`` into ``out`` in its own process; returns its wall time."""
    started = time.perf_counter()
    argv = [sys.executable, "-m", "mobilelwt", "build", "--out", str(out), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    (out.parent / f"{out.name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"build into {out} failed (exit {proc.returncode}); see {out.parent / (out.name + '.log')}")
    return time.perf_counter() - started


def independent(build: Path, cache: str, threads: int, cap: float) -> dict[str, Any]:
    """The build's ExecuTorch fp32 teacher and student timed in a fresh process by the protocol."""
    return in_fresh_process(__file__, build, cache, threads, cap)


def time_files(build: Path, cache: str, threads: int, cap: float) -> dict[str, Any]:
    from device_bench.protocol import TimingPolicy, measure_runners

    runners, example = build_runners(build, threads)
    record = measure_runners(runners, example, reference="teacher",
                             policy=TimingPolicy(cache=cache, max_seconds=cap))  # fmt: skip
    student = record["models"]["student"]
    return {"speedup": student["speedup"], "ci95": student["speedup_ci95"], "converged": record["converged"],
            "quiet": record["load"]["quiet"], "seconds": record["seconds"]}  # fmt: skip


def row_for(build: Path, threads: int, cap: float) -> dict[str, Any]:
    metrics = json.loads((build / "metrics.json").read_text())
    target = metrics["plan_target"]
    bench = [json.loads(line) for line in (build / "bench.jsonl").read_text().splitlines()]
    student = next(r for r in bench if r["role"] == "student" and r["runtime"] == "executorch"
                   and r["precision"] == "fp32" and r["device"] == "host")  # fmt: skip
    delivered = {cache: {"speedup": c["speedup"], "ci95": c["speedup_ci95"], "converged": c["converged"],
                         "quiet": c["quiet"]} for cache, c in student["caches"].items()}  # fmt: skip
    fresh = {cache: independent(build, cache, threads, cap) for cache in ("cold", "warm")}
    low, high = delivered["cold"]["ci95"]
    width = high - low
    cold = fresh["cold"]
    return {
        "build": str(build),
        "target": target["value"],
        "planner": {
            "speedup": target.get("measured_speedup"),
            "ci95": target.get("measured_ci95"),
            "cache": target.get("cache"),
            "overshoot": target.get("overshoot"),
        },  # fmt: skip
        "mac_speedup": metrics["mac_speedup"],
        "top1_drop": metrics["top1_drop"],
        "delivered": delivered,
        "independent": fresh,
        "goals": {
            "independent_within_5pct_of_delivered": low * 0.95 <= cold["speedup"] <= high * 1.05,
            "meets_target": cold["ci95"][1] >= target["value"] and high >= target["value"],
            "overshoot_within_interval_width": delivered["cold"]["speedup"] - target["value"] <= width,
        },
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    def fmt(entry: dict[str, Any] | None) -> str:
        if not entry or entry.get("speedup") is None:
            return "n/a"
        low, high = entry["ci95"]
        return f"{entry['speedup']:.2f} ({low:.2f}-{high:.2f})"

    header = ["target", "planner (cold)", "delivered cold", "delivered warm", "fresh cold", "fresh warm", "MACs",
              "goals"]  # fmt: skip
    print(" | ".join(header))
    for r in rows:
        goals = "".join("Y" if ok else "n" for ok in r["goals"].values())
        print(" | ".join([f"{r['target']:g}x", fmt(r["planner"]), fmt(r["delivered"]["cold"]),
                          fmt(r["delivered"]["warm"]), fmt(r["independent"]["cold"]), fmt(r["independent"]["warm"]),
                          f"{r['mac_speedup']:.2f}x", goals]))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    builds = sub.add_parser("builds", help="fresh default `mobilelwt build` runs")
    builds.add_argument("--count", type=int, default=5)
    sweep = sub.add_parser("sweep", help="one model at several measured --speedup targets")
    sweep.add_argument("--model", default="alexnet")
    sweep.add_argument("--input-size", type=int, default=64)
    sweep.add_argument("--data", default="digits")
    sweep.add_argument("--speedups", type=float, nargs="+", default=[3, 4, 5, 6, 8])
    for p in (builds, sweep):
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--cap", type=float, default=60.0, help="the protocol's time cap of the independent timing")
        p.add_argument("--json", type=Path)
        p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `mobilelwt build` options")
    add_timer(sub, "build", "(internal) time one build's ExecuTorch files in this fresh process")
    args = parser.parse_args()
    if args.mode == "time":
        print(json.dumps(time_files(args.build, args.cache, args.threads, args.cap)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows, seconds = [], []
    if args.mode == "builds":
        plans = [(args.out / f"default-{i + 1}", list(args.extra)) for i in range(args.count)]
    else:
        table = args.out / "latency-table.json"
        common = ["--model", args.model, "--weights", "none", "--data", args.data, "--input-size",
                  str(args.input_size), "--target", "android", "--precision", "fp32", "--layer-epochs", "0",
                  "--finetune-epochs", "0", "--latency-table", str(table), *args.extra]  # fmt: skip
        plans = [(args.out / f"{args.model}-{args.input_size}-x{s:g}", [*common, "--speedup", str(s)])
                 for s in args.speedups]  # fmt: skip
    for out, extra in plans:
        seconds.append(run_build(out, extra))
        rows.append({**row_for(out, args.threads, args.cap), "build_seconds": seconds[-1]})
        print(f"{out}: {seconds[-1]:.0f} s", flush=True)
        if args.json:  # after every row: a run cut short keeps what it measured
            write_report(args, rows, complete=len(rows) == len(plans))
    print_table(rows)
    print(f"goals met in {sum(all(r['goals'].values()) for r in rows)} of {len(rows)} rows")


def write_report(args: argparse.Namespace, rows: list[dict[str, Any]], *, complete: bool) -> None:
    report = {
        "benchmark": "delivery",
        "mode": args.mode,
        "machine": machine(args.threads),
        "runtime": "executorch fp32 (XNNPACK), host",
        "threads": args.threads,
        "complete": complete,
        "rows": rows,
        "all_goals_met": all(all(r["goals"].values()) for r in rows),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    partial = args.json.with_name(args.json.name + ".part")
    partial.write_text(json.dumps(report, indent=1))
    partial.replace(args.json)


def machine(threads: int) -> dict[str, Any]:
    """The facts a timing depends on: the bench records' host facts, and the last-level cache a cold flush follows."""
    from device_bench.bench import host_facts
    from device_bench.timing import last_level_cache_bytes

    return {**host_facts(threads), "last_level_cache_mib": last_level_cache_bytes() / 2**20,
            "python": sys.version.split()[0]}  # fmt: skip


if __name__ == "__main__":
    main()
