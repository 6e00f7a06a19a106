"""Data-parallel compress: ``--nproc 2`` (torchrun, gloo, 1 thread per rank) vs one process (2 threads).

Each case runs ``mobilelwt compress`` from scratch into a fresh directory as a subprocess; the pair is run
``--repeats`` times, alternating which goes first, so drift on this shared machine hits both. Reported: wall
time (the command, start to exit), the stage seconds the build records, training images/s, and the final top-1
(and its spread over the repeats, which is the noise the two are compared against).

    python bench/distributed.py --case digits --repeats 3 --out bench/results/distributed-digits.json
    python bench/distributed.py --case cifar10 --repeats 1 --out bench/results/distributed-cifar10.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = {
    # a teacher trained by the default `mobilelwt build` (digits, AlexNet at 64²)
    "digits": {"weights": "runs/alexnet-digits-ios/teacher/alexnet.pt", "data": "digits",
               "extra": ["--layer-max-steps", "100", "--finetune-epochs", "2"]},
    # the CIFAR-10 teacher of bench/planner.py (AlexNet at 64², 6 epochs)
    "cifar10": {"weights": "runs/alexnet-cifar64.pt", "data": "../shared/data/cifar10-train",
                "extra": ["--layer-max-steps", "100", "--finetune-epochs", "1", "--finetune-max-steps", "150"]},
}  # fmt: skip


def run_case(case: dict, ranks: int, out: Path) -> dict:
    args = [sys.executable, "-m", "mobilelwt", "compress", "--model", "alexnet", "--weights", case["weights"],
            "--data", case["data"], "--out", str(out), "--mac-speedup", "3", *case["extra"]]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMP_NUM_THREADS")}
    args += ["--nproc", str(ranks)] if ranks > 1 else ["--threads", "2"]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"compress failed ({ranks} ranks):\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    loader = metrics["data_loader"]
    return {
        "ranks": ranks,
        "wall_s": wall,
        "stage_s": metrics["seconds"],
        "top1": metrics["student"]["top1"],
        "teacher_top1": metrics["teacher"]["top1"],
        "layerwise_top1": metrics["student"]["layerwise"]["top1"],
        "layerwise_images_per_s": loader["layerwise_images_per_s"],
        "finetune_images_per_s": loader["finetune"]["images_per_s"],
        "distributed": metrics["distributed"],
        "threads_per_rank": metrics["threads"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), default="digits")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    case = CASES[args.case]

    from mobilelwt.manifest import environment

    runs: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    try:
        for r in range(args.repeats):
            for ranks in (1, 2) if r % 2 == 0 else (2, 1):
                out = work / f"r{r}-n{ranks}"
                runs.append({"repeat": r, **run_case(case, ranks, out)})
                last = runs[-1]
                print(f"repeat {r + 1}/{args.repeats}, {ranks} rank(s): {last['wall_s']:.0f} s, top-1 "
                      f"{last['top1']:.2f} (teacher {last['teacher_top1']:.2f})", flush=True)  # fmt: skip
                shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for ranks in (1, 2):
        mine = [x for x in runs if x["ranks"] == ranks]
        rows.append({
            "ranks": ranks,
            "wall_s_median": float(np.median([x["wall_s"] for x in mine])),
            "layerwise_s_median": float(np.median([x["stage_s"]["layerwise"] for x in mine])),
            "finetune_s_median": float(np.median([x["stage_s"]["finetune"] for x in mine])),
            "top1": [x["top1"] for x in mine],
            "layerwise_images_per_s_median": float(np.median([x["layerwise_images_per_s"] for x in mine])),
            "finetune_images_per_s_median": float(np.median([x["finetune_images_per_s"] for x in mine])),
        })  # fmt: skip
    pairs = [
        (a["wall_s"] / b["wall_s"]) for r in range(args.repeats)
        for a in runs if a["repeat"] == r and a["ranks"] == 1 for b in runs if b["repeat"] == r and b["ranks"] == 2
    ]  # fmt: skip
    print(f"\ncase {args.case}, {args.repeats} interleaved repeat(s), {os.cpu_count()} cores")
    print(f"{'ranks':>5} {'wall s':>8} {'layer-wise s':>13} {'fine-tune s':>12} {'LW img/s':>9} {'FT img/s':>9}  top-1")
    for row in rows:
        print(f"{row['ranks']:>5} {row['wall_s_median']:8.1f} {row['layerwise_s_median']:13.1f} "
              f"{row['finetune_s_median']:12.1f} {row['layerwise_images_per_s_median']:9.0f} "
              f"{row['finetune_images_per_s_median']:9.0f}  {', '.join(f'{t:.2f}' for t in row['top1'])}")  # fmt: skip
    print(f"wall-time ratio 1 process / 2 ranks per repeat: {', '.join(f'{p:.2f}' for p in pairs)}")
    result = {
        "benchmark": "distributed",
        "case": args.case,
        "settings": case,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "environment": environment(),
        "rows": rows,
        "wall_ratio_one_over_two": pairs,
        "runs": runs,
    }
    out = Path(args.out or f"bench/results/distributed-{args.case}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
