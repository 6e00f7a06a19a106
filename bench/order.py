"""Does the order of calls change a speedup? The same teacher and student files timed in every call order the
protocol could use, interleaved round by round in one process.

Modes (each a teacher-vs-student ratio of medians per round):

- ``warm-blocks``: each model's calls back to back, in blocks sized as the protocol sizes them (warm);
- ``warm-alternating``: teacher, student, teacher, ... one call each;
- ``cold-blocks``: the protocol's cold state: a cache flush before every call, each model's calls in blocks;
- ``cold-alternating``: a flush before every call, the models alternating call by call;
- ``cold-all-cores``: as ``cold-alternating``, the flush run on every CPU of the process in turn (the protocol
  flushes from the calling thread only, and a 2-thread runtime also works from the other core's private caches).

Every round runs every mode once, in an order rotated round by round. The table gives each mode's median ratio,
its bootstrap 95 % interval over rounds, and its ratio to ``cold-blocks`` (paired by round). The cache flush's own
time per round is the machine's gauge (memory bandwidth; README, "It is the machine's speed").

    python bench/order.py --rounds 40 --json bench/results/order-alexnet64.json
    python bench/order.py --build runs/some-build --rounds 40      # a build's ExecuTorch fp32 files instead
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fresh import build_runners, machine, write_result

MODES = ("warm-blocks", "warm-alternating", "cold-blocks", "cold-alternating", "cold-all-cores")
BASELINE = "cold-blocks"


def alexnet_pair(size: int) -> tuple[Any, Any, str]:
    """A random-weight AlexNet (10 classes) and its student with fc6/fc7 factorised at ranks 320/256 (the plan
    `compress --speedup 4` chose on the CIFAR-10 teacher at 64²), in memory, and their description."""
    import torch
    from torch import nn
    from torchvision.models import alexnet

    torch.manual_seed(0)
    teacher = alexnet(num_classes=10).eval()
    student = alexnet(num_classes=10).eval()
    student.load_state_dict(teacher.state_dict())
    for index, rank in ((1, 320), (4, 256)):
        dense = student.classifier[index]
        student.classifier[index] = nn.Sequential(
            nn.Linear(dense.in_features, rank, bias=False), nn.Linear(rank, dense.out_features)
        )
    return teacher, student, f"random-weight AlexNet {size}², student fc6/fc7 at ranks 320/256"


def synthetic_runners(threads: int, size: int) -> tuple[dict[str, Any], Any, str]:
    """:func:`alexnet_pair` exported to .pte files and loaded from them (what ships)."""
    import torch

    from targets import load_artifact
    from targets.executorch import ExecuTorchConfig, lower

    teacher, student, what = alexnet_pair(size)
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    folder = Path(tempfile.mkdtemp(prefix="order-"))
    runners = {}
    for role, model in (("teacher", teacher), ("student", student)):
        path = folder / f"{role}.pte"
        path.write_bytes(lower(model, (example,), ExecuTorchConfig("fp32"))[0])
        runners[role] = load_artifact("executorch", path, threads=threads)
    return runners, example, what


def all_cores(flush: Callable[[], None]) -> Callable[[], None]:
    """``flush`` run on every CPU of this process in turn (the calling thread moved there and back)."""
    cpus = sorted(os.sched_getaffinity(0))

    def flush_everywhere() -> None:
        home = os.sched_getaffinity(0)
        try:
            for cpu in cpus:
                os.sched_setaffinity(0, {cpu})
                flush()
        finally:
            os.sched_setaffinity(0, home)

    return flush_everywhere


def one_mode(mode: str, runners: dict[str, Any], example: Any, calls: dict[str, int], pairs: int,
             flushes: dict[str, Callable[[], None] | None]) -> dict[str, list[float]]:  # fmt: skip
    """``pairs`` calls of each model in ``mode``: ms per call."""
    flush = flushes[mode]
    samples: dict[str, list[float]] = {name: [] for name in runners}

    def call(name: str) -> None:
        if flush is not None:
            flush()
        started = time.perf_counter()
        runners[name](example)
        samples[name].append((time.perf_counter() - started) * 1000.0)

    if mode.endswith("blocks"):
        while min(len(v) for v in samples.values()) < pairs:
            for name in runners:
                for _ in range(calls[name]):
                    call(name)
    else:
        for _ in range(pairs):
            for name in runners:
                call(name)
    return samples


def bootstrap(values: list[float], *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 95 % percentile interval of the median of ``values``."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, help="a build directory (its ExecuTorch fp32 teacher and student)")
    parser.add_argument("--input-size", type=int, default=64, help="the synthetic pair's input (without --build)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=10, help="calls of each model per mode and round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from device_bench.timing import CacheFlusher, calls_per_block

    if args.build is not None:
        runners, example = build_runners(args.build, args.threads)
        what = f"the ExecuTorch fp32 files of {args.build}"
    else:
        runners, example, what = synthetic_runners(args.threads, args.input_size)
    flush = CacheFlusher()
    flushes = {"warm-blocks": None, "warm-alternating": None, "cold-blocks": flush, "cold-alternating": flush,
               "cold-all-cores": all_cores(flush)}  # fmt: skip
    first = {}
    for name, run in runners.items():  # warm-up, and the protocol's block sizes
        for _ in range(3):
            started = time.perf_counter()
            run(example)
            first[name] = (time.perf_counter() - started) * 1000.0
    block = {"warm": calls_per_block(first, least=3, min_block_ms=20.0, most=200),
             "cold": calls_per_block(first, least=1, min_block_ms=20.0, most=10)}  # fmt: skip
    ratios: dict[str, list[float]] = {mode: [] for mode in MODES}
    latency: dict[str, dict[str, list[float]]] = {mode: {name: [] for name in runners} for mode in MODES}
    gauge: list[float] = []
    for index in range(args.rounds):
        order = MODES[index % len(MODES) :] + MODES[: index % len(MODES)]
        for mode in order:
            got = one_mode(mode, runners, example, block[mode.split("-")[0]], args.pairs, flushes)
            ratios[mode].append(statistics.median(got["teacher"]) / statistics.median(got["student"]))
            for name, values in got.items():
                latency[mode][name].append(statistics.median(values))
        started = time.perf_counter()
        flush()
        gauge.append((time.perf_counter() - started) * 1000.0)
        print(f"round {index + 1:3d}: " + "  ".join(f"{m} {ratios[m][-1]:.2f}×" for m in MODES)
              + f"  flush {gauge[-1]:.2f} ms", flush=True)  # fmt: skip

    rows = []
    print(f"\n{what}; executorch fp32 (XNNPACK), {args.threads} threads, batch 1; {args.rounds} rounds of "
          f"{args.pairs} calls per model and mode\n")  # fmt: skip
    print(f"{'mode':18s} {'speedup':>8s} {'95% CI':>13s} {'teacher ms':>11s} {'student ms':>11s} "
          f"{'vs ' + BASELINE:>16s} {'95% CI':>13s}")  # fmt: skip
    for mode in MODES:
        paired = [a / b for a, b in zip(ratios[mode], ratios[BASELINE], strict=True)]
        row = {
            "mode": mode,
            "speedup": statistics.median(ratios[mode]),
            "speedup_ci95": list(bootstrap(ratios[mode])),
            "teacher_ms": statistics.median(latency[mode]["teacher"]),
            "student_ms": statistics.median(latency[mode]["student"]),
            "vs_baseline": statistics.median(paired),
            "vs_baseline_ci95": list(bootstrap(paired)),
            "per_round": ratios[mode],
        }
        rows.append(row)
        low, high = row["speedup_ci95"]
        vlow, vhigh = row["vs_baseline_ci95"]
        print(f"{mode:18s} {row['speedup']:7.2f}× {low:5.2f}–{high:5.2f}× {row['teacher_ms']:11.2f} "
              f"{row['student_ms']:11.2f} {row['vs_baseline']:15.3f}× {vlow:5.3f}–{vhigh:5.3f}×")  # fmt: skip
    print(f"\ncache flush (the machine's gauge): {min(gauge):.2f}–{max(gauge):.2f} ms, median "
          f"{statistics.median(gauge):.2f} ms")  # fmt: skip
    write_result(args.json, {
        "benchmark": "order",
        "files": what,
        "machine": {**machine(), "platform": platform.platform()},
        "runtime": "executorch fp32 (XNNPACK), host",
        "threads": args.threads,
        "rounds": args.rounds,
        "pairs": args.pairs,
        "blocks": block,
        "baseline": BASELINE,
        "rows": rows,
        "flush_ms": gauge,
    })  # fmt: skip


if __name__ == "__main__":
    main()
