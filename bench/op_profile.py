"""Operator profiles of alexnet and vgg16 (teacher and student, 224²) on the host: ExecuTorch through ETDump,
LiteRT through its own profiler, with the delegation each runtime achieved.

Uses the files that ``bench/export.py`` wrote (like ``bench/host_latency.py``); prints, per artifact, the profiled
time per run, delegate calls, the three heaviest operator types with their share, and what ran outside the delegate.

    python bench/op_profile.py --workdir runs/bench-export --threads 2 --out bench/results/op-profile.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from host_latency import listing

from device_bench.profile import etdump_profile
from mobilelwt.manifest import environment
from targets.litert_profiler import parse_op_profile, profile_summary_apart


def profile(workdir: Path, artifact: dict, *, runs: int, threads: int) -> dict:
    path = workdir / artifact["path"]
    if artifact["runtime"] == "litert":
        result = parse_op_profile(profile_summary_apart(path, runs=runs), runs=runs)
        result.pop("nodes")
        return {**result, "threads": "LiteRT default"}
    return {**etdump_profile(path, input_size=artifact["input_size"], threads=threads, runs=runs), "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/bench-export")
    parser.add_argument("--models", nargs="+", default=["alexnet", "vgg16"])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", default="bench/results/op-profile.json")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    artifacts = listing(workdir, args.models, args.input_size)["artifacts"]
    if not artifacts:
        raise SystemExit(f"no artifacts in {workdir}: run `python bench/export.py` first")
    rows = []
    print("| artifact | runtime | ms per run (profiled) | delegate calls | heaviest operators | outside the delegate |")
    print("|---|---|---|---|---|---|")
    for artifact in artifacts:
        result = profile(workdir, artifact, runs=args.runs, threads=args.threads)
        top = ", ".join(f"{op['op']} {100 * (op['share'] or 0):.0f} %" for op in result["ops"][:3])
        outside = ", ".join(result["undelegated_ops"]) or "nothing"
        print(f"| {artifact['path']} | {artifact['runtime']} | {result['execute_ms']:.2f} | "
              f"{result['delegate_calls_per_run']} | {top} | {outside} |")  # fmt: skip
        rows.append({"artifact": artifact["path"], "runtime": artifact["runtime"], "precision": artifact["precision"],
                     "role": artifact["role"], "model": artifact["model"], **result})  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"environment": environment(), "input": [1, 3, args.input_size, args.input_size],
              "threads_executorch": args.threads, "runs": args.runs, "rows": rows}  # fmt: skip
    out.write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
