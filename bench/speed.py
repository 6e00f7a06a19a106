"""Speed benchmark: teacher vs student, whole network, batch 1, fp32, ExecuTorch-XNNPACK and LiteRT on this host.

The student comes from the latency planner (per-layer tables on ExecuTorch) with closed-form init from randomly
initialised weights: latency does not depend on weight values. Teacher and student run interleaved in one
process (rounds of a few runs each, after warm-up) so drift hits both; medians are reported.

    python bench/speed.py --models alexnet vgg16 --threads 2 --out bench/results/speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from device_bench.protocol import TimingPolicy, measure_runners
from device_bench.stats import summarize
from mobilelwt.manifest import environment
from mobilelwt.plan import apply_plan, default_candidates
from mobilelwt.planners import PlanningContext
from mobilelwt.planners.latency import plan_latency_uniform
from mobilelwt.planners.measured import plan_measured
from mobilelwt.profile import count_macs
from mobilelwt.teachers import build_teacher, get_teacher_spec
from targets import host_runner

TARGETS = {"alexnet": 4.0, "vgg16": 6.0}


def bench_model(name: str, target: float, args) -> dict:
    torch.manual_seed(0)
    teacher = build_teacher(name, num_classes=args.num_classes, input_size=args.input_size)
    candidates = default_candidates(teacher.model, args.input_size, get_teacher_spec(name).head)
    ctx = PlanningContext(
        name, teacher.model, args.input_size, args.num_classes, candidates, count_macs(teacher.model, args.input_size)
    )
    from device_bench.probe import HostProbe

    probe = HostProbe("executorch", threads=args.threads)
    started = time.perf_counter()
    if args.planner == "latency-uniform":
        plan = plan_latency_uniform(ctx, target, probe=probe)
    else:
        calibration = torch.randn(16, 3, args.input_size, args.input_size, generator=torch.Generator().manual_seed(0))
        plan = plan_measured(ctx, target, calibration, probe=probe, table_path=Path(args.table))
    planning_seconds = time.perf_counter() - started
    student = apply_plan(teacher.model, plan, init=True)
    return measure_pair(name, target, teacher.model, student, plan, args, planning_seconds=planning_seconds)


def bench_build(build_dir: Path, target: float, args) -> dict:
    """Time the trained teacher and student of a ``mobilelwt compress`` build at the build's input size."""
    from mobilelwt.loading import load_build

    build = load_build(build_dir)
    args.input_size = build.plan.input_size
    result = measure_pair(build.plan.model, target, build.teacher.model, build.student, build.plan, args)
    result["build"] = str(build_dir)
    return result


def measure_pair(name: str, target: float, teacher_model, student, plan, args, planning_seconds: float = 0.0) -> dict:
    example = (torch.randn(1, 3, args.input_size, args.input_size),)
    result = {
        "model": name,
        "target_speedup": target,
        "mac_speedup": plan.mac_speedup,
        "teacher_macs": plan.teacher_macs,
        "student_macs": plan.student_macs,
        "input_size": args.input_size,
        "planning_seconds": planning_seconds,
        "plan": {k: {"module": v.module, **v.params} for k, v in plan.layers.items()},
        "latency_search": plan.details.get("rounds"),
        "runtimes": {},
    }
    for runtime in ("executorch", "litert"):
        t0 = time.perf_counter()
        runners = {
            "teacher": host_runner(runtime, teacher_model, example, args.threads),
            "student": host_runner(runtime, student, example, args.threads),
        }
        lower_seconds = time.perf_counter() - t0
        with torch.no_grad():
            reference = student(*example)
        parity = float((runners["student"](*example) - reference).abs().max())
        measured = measure_runners(runners, example[0], reference="teacher",
                                   policy=TimingPolicy(cache=args.cache, warmup=args.warmup))  # fmt: skip
        t_stats = summarize(measured["models"]["teacher"]["samples_ms"])
        s_stats = summarize(measured["models"]["student"]["samples_ms"])
        speedup = measured["models"]["student"]["speedup"]
        result["runtimes"][runtime] = {
            "teacher": t_stats,
            "student": s_stats,
            "cache": args.cache,
            "converged": measured["converged"],
            "speedup": speedup,
            "speedup_ci95": measured["models"]["student"]["speedup_ci95"],
            "realised_over_mac": speedup / plan.mac_speedup,
            "student_max_abs_diff_vs_pytorch": parity,
            "lowering_seconds": lower_seconds,
            "meets_target": speedup >= target,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(TARGETS))
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", choices=("cold", "warm"), default="cold", help="the timing protocol's cache state")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--table", default="runs/latency-table-host.json", help="the latency planner's table (cache)")
    parser.add_argument("--planner", default="latency", help="latency or latency-uniform")
    parser.add_argument("--build", type=Path, help="time a compress build's trained teacher and student instead")
    parser.add_argument("--out", default="bench/results/speed.json")
    args = parser.parse_args()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    results = []
    if args.build:
        results.append(bench_build(args.build, 4.0, args))
    for name in [] if args.build else args.models:
        results.append(bench_model(name, TARGETS.get(name, 4.0), args))
        print(f"{name}: done", flush=True)
    report = {
        "benchmark": "speed",
        "machine": {"cpu_count": torch.get_num_threads(), "platform": platform.platform()},
        "environment": environment(),
        "settings": vars(args),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    header = (
        f"{'model':8} {'runtime':10} {'teacher ms':>10} {'student ms':>10} {'speedup':>8} {'MAC x':>7} "
        f"{'real/MAC':>8} {'CV t/s':>11} target"
    )
    print(header)
    for r in results:
        for runtime, m in r["runtimes"].items():
            print(
                f"{r['model']:8} {runtime:10} {m['teacher']['median_ms']:10.2f} {m['student']['median_ms']:10.2f} "
                f"{m['speedup']:8.2f} {r['mac_speedup']:7.2f} {m['realised_over_mac']:8.2f} "
                f"{m['teacher']['cv']:5.2f}/{m['student']['cv']:5.2f} {'met' if m['meets_target'] else 'MISSED'} "
                f"(≥{r['target_speedup']})"
            )


if __name__ == "__main__":
    main()
