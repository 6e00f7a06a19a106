"""How much a planner's rounds move: the same teacher and student compared again and again by two host probes,
one judging the machine's speed over the teacher's earlier batches (the protocol's ``history``, what a planner's
probe does since PROTOCOL_RULES 3) and one judging each timing alone (before), interleaved compare by compare.

Every compare lowers the student afresh (as a planner's round does) and reuses the lowered teacher. The table
gives, per probe, the compares' speedups (median, interquartile range, range) and how many compares ran while the
teacher's latency lay more than 20 % from its median over the whole run (the machine at another speed).

    python bench/rounds.py --compares 30 --json bench/results/rounds-alexnet64.json
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
from pathlib import Path
from typing import Any

from fresh import machine, write_result
from order import alexnet_pair


def spread(values: list[float]) -> dict[str, float]:
    quartiles = statistics.quantiles(values, n=4)
    return {"median": statistics.median(values), "iqr": quartiles[2] - quartiles[0], "min": min(values),
            "max": max(values), "iqr_share": (quartiles[2] - quartiles[0]) / statistics.median(values)}  # fmt: skip


def bootstrap_ratio(a: list[float], b: list[float], *, resamples: int = 2000, seed: int = 0) -> list[float]:
    """95 % interval of IQR(a) / IQR(b), resampling compares."""
    rng = random.Random(seed)

    def iqr(values: list[float]) -> float:
        q = statistics.quantiles(values, n=4)
        return q[2] - q[0]

    ratios = sorted(iqr(rng.choices(a, k=len(a))) / max(iqr(rng.choices(b, k=len(b))), 1e-9) for _ in range(resamples))
    return [ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compares", type=int, default=30, help="compares per probe")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cap", type=float, default=20.0, help="each compare's time cap, s")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from device_bench.load import STATE_SHIFT
    from device_bench.probe import HostProbe
    from device_bench.protocol import TimingPolicy

    teacher, student, what = alexnet_pair(args.input_size)
    shape = (1, 3, args.input_size, args.input_size)
    policy = TimingPolicy(max_seconds=args.cap)
    probes = {"history": HostProbe("executorch", threads=args.threads, policy=policy),
              "alone": HostProbe("executorch", threads=args.threads, policy=policy)}  # fmt: skip
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in probes}
    for index in range(args.compares):
        order = list(probes) if index % 2 == 0 else list(reversed(probes))
        for name in order:
            if name == "alone":
                probes[name]._history.clear()  # each timing judged alone, as before PROTOCOL_RULES 3
            record = probes[name].compare(teacher, student, shape)
            got[name].append(record)
        print(f"compare {index + 1:3d}: " + "  ".join(
            f"{name} {got[name][-1]['speedup']:.2f}× (teacher {got[name][-1]['teacher_ms']:.2f} ms, "
            f"{got[name][-1]['state']['shifted_batches']} set aside)" for name in probes), flush=True)  # fmt: skip

    everything = [r["teacher_ms"] for records in got.values() for r in records]
    centre = statistics.median(everything)
    rows = []
    for name, records in got.items():
        speedups = [r["speedup"] for r in records]
        off = sum(abs(r["teacher_ms"] - centre) > STATE_SHIFT * centre for r in records)
        rows.append({"probe": name, "speedup": spread(speedups), "off_state_compares": off,
                     "seconds": statistics.fmean(r["seconds"] for r in records),
                     "capped": sum(r["stopped"] == "time cap" for r in records),
                     "compares": [{k: r[k] for k in ("speedup", "speedup_ci95", "teacher_ms", "student_ms", "seconds",
                                                     "stopped", "state")} for r in records]})  # fmt: skip
    ratio_ci = bootstrap_ratio([r["speedup"] for r in got["history"]], [r["speedup"] for r in got["alone"]])
    print(f"\n{what}; executorch fp32 (XNNPACK), {args.threads} threads, batch 1, cold; {args.compares} compares per "
          f"probe, interleaved; teacher median {centre:.2f} ms over all\n")  # fmt: skip
    print(f"{'probe':8s} {'median':>7s} {'IQR':>6s} {'range':>13s} {'off-state':>10s} {'mean s':>7s} {'capped':>7s}")
    for row in rows:
        s = row["speedup"]
        print(f"{row['probe']:8s} {s['median']:6.2f}× {s['iqr']:6.2f} {s['min']:5.2f}–{s['max']:5.2f}× "
              f"{row['off_state_compares']:10d} {row['seconds']:7.1f} {row['capped']:7d}")  # fmt: skip
    print(f"\nIQR with history / IQR alone: 95% CI {ratio_ci[0]:.2f}–{ratio_ci[1]:.2f}")
    write_result(args.json, {
        "benchmark": "rounds",
        "models": what,
        "machine": {**machine(), "platform": platform.platform()},
        "runtime": "executorch fp32 (XNNPACK), host, in memory (the planner's probe)",
        "threads": args.threads,
        "cache": "cold",
        "cap_s": args.cap,
        "teacher_median_ms": centre,
        "rows": rows,
        "iqr_ratio_ci95": ratio_ci,
    })  # fmt: skip


if __name__ == "__main__":
    main()
