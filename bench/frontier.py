"""Frontier benchmark: the fastest student within an accuracy budget, the curve it was chosen from, and its cost.

    python bench/frontier.py run --model alexnet --data digits --input-size 64 --teacher-epochs 8 --max-drop 1.0 \\
        --out runs/frontier-alexnet-digits --json bench/results/frontier-alexnet-digits.json

Each step is a ``mobilelwt`` command in its own process, so its wall time is what a user waits:

1. the teacher (``mobilelwt train-teacher``; reused when its checkpoint is there);
2. ``mobilelwt compress --max-drop D`` into ``OUT/search`` (timed);
3. ``mobilelwt compress --speedup 4`` with the same settings into ``OUT/single`` (timed: the cost baseline);
4. every fine-tuned point of the frontier timed again, *independently* of the planner: teacher and student lowered
   to the runtime and timed by the one protocol in a fresh process, cold and warm.

Goals (issue 23): the chosen point is within the budget; the independent cold interval of every fine-tuned point
overlaps the planner's; the search costs at most 2.5 one-compress runs. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fresh import add_timer, in_fresh_process, machine, write_result

ROOT = Path(__file__).resolve().parent.parent


def mobilelwt(*args: str, log: Path) -> float:
    """Run one ``mobilelwt`` command; its output goes to ``log``; returns its wall time."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mobilelwt", *args], capture_output=True, text=True, cwd=ROOT)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"`mobilelwt {' '.join(args[:1])}` failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - started


def time_point(point_dir: Path, cache: str, threads: int, cap: float) -> dict[str, Any]:
    """(In a fresh process) the point's teacher and student on ExecuTorch, timed by the protocol."""
    from device_bench.probe import make_probe
    from device_bench.protocol import TimingPolicy
    from mobilelwt.loading import load_build

    build = load_build(point_dir)
    size = build.manifest["teacher"]["input_size"]
    probe = make_probe("executorch", threads=threads, policy=TimingPolicy(cache=cache, max_seconds=cap))
    record = probe.compare(build.teacher.model, build.student, (1, 3, size, size))
    return {"speedup": record["speedup"], "ci95": record["speedup_ci95"], "converged": record.get("converged"),
            "teacher_ms": record["teacher_ms"], "student_ms": record["student_ms"]}  # fmt: skip


def overlaps(a: list[float] | None, b: list[float] | None) -> bool | None:
    if not a or not b:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def fmt(entry: dict[str, Any] | None, key: str = "speedup", ci: str = "ci95") -> str:
    if not entry or entry.get(key) is None:
        return "n/a"
    interval = entry.get(ci)
    return f"{entry[key]:.2f}" + (f" ({interval[0]:.2f}-{interval[1]:.2f})" if interval else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run", help="teacher, search, baseline compress, independent timing")
    run.add_argument("--model", default="alexnet")
    run.add_argument("--data", default="digits")
    run.add_argument("--input-size", type=int, default=64)
    run.add_argument("--teacher-epochs", type=int, default=8)
    run.add_argument("--max-drop", type=float, default=1.0)
    run.add_argument("--baseline-speedup", type=float, default=4.0)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--cap", type=float, default=60.0, help="the protocol's time cap of the independent timing")
    run.add_argument("--json", type=Path)
    run.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `mobilelwt compress` options")
    add_timer(sub, "point", "(internal) time one point in this fresh process")
    args = parser.parse_args()
    if args.mode == "time":
        print(json.dumps(time_point(args.point, args.cache, args.threads, args.cap)))
        return

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = ["--data", args.data, "--input-size", str(args.input_size), "--threads", str(args.threads)]
    teacher = out / f"{args.model}-teacher.pt"
    teacher_s = None
    if not teacher.is_file():
        teacher_s = mobilelwt("train-teacher", "--model", args.model, "--out", str(teacher), "--epochs",
                              str(args.teacher_epochs), *data, log=out / "teacher.log")  # fmt: skip
    common = ["--model", args.model, "--weights", str(teacher), *data, *args.extra]
    # a search finished by an earlier run is reused in seconds: its wall time then is not this run's to report
    search_reused = (out / "search" / "frontier.json").is_file()
    search_s = mobilelwt("compress", *common, "--out", str(out / "search"), "--max-drop", str(args.max_drop),
                         log=out / "search.log")  # fmt: skip
    single_s = mobilelwt("compress", *common, "--out", str(out / "single"), "--speedup", str(args.baseline_speedup),
                         log=out / "single.log")  # fmt: skip
    frontier = json.loads((out / "search" / "frontier.json").read_text())
    rows = []
    for point in sorted((p for p in frontier["points"] if "same_as" not in p), key=lambda p: p["speedup"]):
        row = {key: point[key] for key in ("target", "speedup", "speedup_ci95", "mac_speedup", "top1", "top5", "drop",
                                           "estimate_drop", "trained")}  # fmt: skip
        row["chosen"] = point["target"] == frontier["chosen"]
        row["between"] = point.get("between")  # a point tried halfway between two others (None: a rung)
        if point["trained"] == "fine-tuned":
            fresh = {c: in_fresh_process(__file__, out / "search" / point["dir"], c, args.threads, args.cap)
                     for c in ("cold", "warm")}  # fmt: skip
            row["independent"] = fresh
            row["overlaps_planner"] = overlaps(fresh["cold"]["ci95"], point["speedup_ci95"])
        rows.append(row)
    chosen = next((r for r in rows if r["chosen"]), None)
    result = {
        "machine": machine(),
        "runtime": f"executorch fp32, {args.threads} threads, batch 1, {args.input_size}² input",
        "command": " ".join(sys.argv),
        "teacher": {**frontier["teacher"], "trained_here_s": teacher_s},
        "max_drop": args.max_drop,
        "rows": rows,
        "chosen": chosen,
        "stopped": frontier["stopped"],
        "why": frontier["why"],
        "cost": {
            "search_s": None if search_reused else search_s,
            "single_s": single_s,
            "ratio": None if search_reused else search_s / single_s,
            "search_reused": search_reused,
            # where the search's own time went (its process's wall time also holds loading and the teacher's
            # evaluation), and how many whole-student plans it timed
            "search_phases_s": frontier.get("seconds_by_phase"),
            "planning": frontier.get("planning"),
        },  # fmt: skip
        "goals": {
            "chosen_within_budget": chosen is not None and chosen["drop"] <= args.max_drop,
            "independent_overlaps_planner": all(r.get("overlaps_planner") is not False for r in rows),
            "cost_at_most_2.5x": None if search_reused else search_s / single_s <= 2.5,
        },
    }
    print(f"{args.model} at {args.input_size}² on {args.data}; teacher top-1 {frontier['teacher']['top1']:.2f} %; "
          f"budget {args.max_drop:g} points; {result['runtime']}")  # fmt: skip
    print("target | planner speedup (cold) | fresh cold | fresh warm | MACs | top-1 | change | trained")
    for r in rows:
        fresh = r.get("independent") or {}
        print(" | ".join([f"{r['target']:g}x" + (" *" if r["chosen"] else "") + (" (between)" if r["between"] else ""),
                          fmt({"speedup": r["speedup"], "ci95": r["speedup_ci95"]}), fmt(fresh.get("cold")),
                          fmt(fresh.get("warm")), f"{r['mac_speedup']:.2f}x", f"{r['top1']:.2f}",
                          f"{-r['drop'] + 0.0:+.2f}", r["trained"]]))  # fmt: skip
    print(f"chosen: {frontier['why']}")
    if search_reused:
        print(f"cost: the search was finished by an earlier run (reused here in {search_s:.0f} s); --speedup "
              f"{args.baseline_speedup:g} {single_s:.0f} s; goals: {result['goals']}")  # fmt: skip
    else:
        print(f"cost: --max-drop {search_s:.0f} s vs --speedup {args.baseline_speedup:g} {single_s:.0f} s "
              f"({search_s / single_s:.2f}x); goals: {result['goals']}")  # fmt: skip
    phases = frontier.get("seconds_by_phase") or {}
    if phases:
        print("search time by phase: " + ", ".join(f"{name} {s:.0f} s" for name, s in phases.items())
              + f"; planning: {frontier.get('planning')}")  # fmt: skip
    write_result(args.json, result)


if __name__ == "__main__":
    main()
