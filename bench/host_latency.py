"""Host latency benchmark: every host-runnable artifact of alexnet and vgg16 (teacher and student), measured twice.

Uses the files that ``bench/export.py`` wrote (224², 1000 classes; ExecuTorch and TFLite, fp32 and int8), runs
``device_bench``'s bench on the host twice (each time teacher and student interleaved, warm-up, rounds) and
reports medians, CV, the speedup of each student, and how much every median moved between the two repeats.

    python bench/host_latency.py --workdir runs/bench-export --threads 2 --out bench/results/host-latency.json
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from device_bench.bench import bench_build
from mobilelwt.hashing import tree_sha256
from mobilelwt.manifest import environment
from targets.formats import FORMATS


def listing(workdir: Path, models: list[str], size: int) -> dict:
    artifacts = []
    for model in models:
        for role in ("teacher", "student"):
            for precision in ("fp32", "int8"):
                for spec in (FORMATS.get(name) for name in FORMATS if FORMATS.get(name).host_runtime):
                    runtime, fmt = spec.runtime, spec.ext
                    path = workdir / f"{model}-{role}-{precision}.{spec.ext}"
                    if path.is_file():
                        artifacts.append({"target": model, "role": role, "model": model, "format": fmt,
                                          "runtime": runtime, "precision": precision, "path": path.name,
                                          "input_size": size, "status": "ok", "sha256": tree_sha256(path),
                                          "backend": "xnnpack" if fmt == "pte" else None})  # fmt: skip
    return {"artifacts": artifacts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/bench-export")
    parser.add_argument("--models", nargs="+", default=["alexnet", "vgg16"])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", default="bench/results/host-latency.json")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    (workdir / "artifacts.json").write_text(json.dumps(listing(workdir, args.models, args.input_size)))
    repeats = []
    for repeat in range(2):
        (workdir / "bench.jsonl").unlink(missing_ok=True)
        records = bench_build(workdir, runs=args.runs, warmup=5, threads=args.threads, rounds=args.rounds)
        shutil.copyfile(workdir / "bench.jsonl", workdir / f"bench-repeat{repeat + 1}.jsonl")
        repeats.append({r["artifact"]: r for r in records})
    rows = []
    for name, first in repeats[0].items():
        second = repeats[1][name]
        both = (first, second)
        rows.append({
            "artifact": name, "runtime": first["runtime"], "precision": first["precision"], "role": first["role"],
            "median_ms": [r["median_ms"] for r in both], "cv": [r["cv"] for r in both],
            "p90_ms": [r["p90_ms"] for r in both], "trimmed_mean_ms": [r["trimmed_mean_ms"] for r in both],
            "p99_over_p50": [r["p99_over_p50"] for r in both], "stable": [r["stable"] for r in both],
            "load_ms": [r["load_ms"] for r in both], "first_run_ms": [r["first_run_ms"] for r in both],
            "peak_rss_mb": [r.get("peak_rss_mb") for r in both], "model_rss_mb": [r.get("model_rss_mb") for r in both],
            "median_moved_pct": 100.0 * (second["median_ms"] - first["median_ms"]) / first["median_ms"],
        })  # fmt: skip
        if first["role"] == "student":
            rows[-1]["speedup"] = [r["speedup"] for r in both]
            rows[-1]["speedup_ci95"] = [r["speedup_ci95"] for r in both]
    report = {"benchmark": "host-latency", "input_size": args.input_size, "threads": args.threads,
              "runs": args.runs, "rounds": args.rounds, "rows": rows, "environment": environment()}  # fmt: skip
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'artifact':30} {'median ms (1, 2)':>18} {'moved':>7} {'CV (1, 2)':>12} {'load ms':>8} "
          f"{'model MB':>9} {'speedup [95% CI] (1 | 2)':>34}")  # fmt: skip
    for r in sorted(rows, key=lambda r: r["artifact"]):
        speed = ""
        if "speedup" in r:
            speed = " | ".join(
                f"{s:.2f} [{lo:.2f}, {hi:.2f}]" for s, (lo, hi) in zip(r["speedup"], r["speedup_ci95"], strict=True)
            )
        memory = r["model_rss_mb"][0]
        print(f"{r['artifact']:30} {r['median_ms'][0]:8.2f}, {r['median_ms'][1]:8.2f} {r['median_moved_pct']:+6.1f}% "
              f"{r['cv'][0]:5.3f}, {r['cv'][1]:5.3f} {r['load_ms'][0]:8.1f} "
              f"{memory if memory is None else round(memory, 1)!s:>9} {speed:>34}")  # fmt: skip


if __name__ == "__main__":
    main()
