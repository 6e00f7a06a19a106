"""Latency planner benchmark: how well per-layer tables predict a whole student, and what the allocation buys.

    python bench/planner.py prediction --models alexnet vgg16 --runtimes executorch litert --threads 2
    python bench/planner.py compare --weights runs/alexnet-cifar64.pt --data ../shared/data/cifar10-train --speedup 4

``prediction`` (random weights, 224², batch 1): plans each model at its target on each host runtime and records
the table-summed prediction of the first student against its measured speedup (the raw table), the prediction
after the planner's correction against the final student, planning time (table, proxy, checks), and an
independent interleaved timing of the final student.

``compare`` (a trained teacher): the latency planner against the uniform latency planner at the same measured
target: closed-form reconstruction error per layer, and top-1 after the same layer-wise training and fine-tune.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from device_bench.probe import HostProbe
from device_bench.protocol import TimingPolicy
from mobilelwt.manifest import environment
from mobilelwt.plan import apply_plan, default_candidates
from mobilelwt.planners import PlanningContext
from mobilelwt.planners.measured import plan_measured
from mobilelwt.profile import count_macs
from mobilelwt.settings import RunSettings
from mobilelwt.teachers import build_teacher, get_teacher_spec

TARGETS = {"alexnet": 4.0, "vgg16": 6.0}


def context(name: str, teacher, size: int, classes: int) -> PlanningContext:
    candidates = default_candidates(teacher, size, get_teacher_spec(name).head)
    return PlanningContext(name, teacher, size, classes, candidates, count_macs(teacher, size))


def timed_log(stage_times: dict[str, float]):
    started = time.perf_counter()

    def log(event) -> None:
        stage_times[event.stage] = time.perf_counter() - started
        if event.done == event.total:
            print(f"[{time.strftime('%H:%M:%S')}] {event.stage} {event.done}/{event.total} {event.info}", flush=True)

    return log


def prediction(args) -> list[dict]:
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        teacher = build_teacher(name, num_classes=args.num_classes, input_size=args.input_size, seed=0).model
        ctx = context(name, teacher, args.input_size, args.num_classes)
        calibration = torch.randn(args.calib_images, 3, args.input_size, args.input_size)
        for runtime in args.runtimes:
            probe = HostProbe(runtime, threads=args.threads)
            stages: dict[str, float] = {}
            started = time.perf_counter()
            table = Path(args.tables) / f"{runtime}.json"
            plan = plan_measured(ctx, TARGETS[name], calibration, probe=probe, grid_points=args.rank_grid,
                                 table_path=table, on_progress=timed_log(stages))  # fmt: skip
            seconds = time.perf_counter() - started
            student = apply_plan(teacher, plan, init=False)
            check = HostProbe(runtime, threads=args.threads, policy=TimingPolicy(rel_width=0.03))
            independent = check.compare(teacher, student, (1, 3, args.input_size, args.input_size))
            d = plan.details
            first = next(r for r in d["rounds"] if r.get("feasible"))
            last = next(r for r in reversed(d["rounds"]) if r.get("feasible") and r["speedup"] == d["measured_speedup"])
            row = {
                "model": name,
                "runtime": runtime,
                "target": TARGETS[name],
                "mac_speedup": plan.mac_speedup,
                "raw_table_predicted": first["predicted_speedup"],
                "raw_table_measured": first["speedup"],
                "raw_table_error": first["predicted_speedup"] / first["speedup"] - 1,
                "corrected_predicted": last["predicted_speedup"],
                "final_measured": d["measured_speedup"],
                "final_ci95": d["measured_ci95"],
                "corrected_error": last["predicted_speedup"] / d["measured_speedup"] - 1,
                "independent": independent["speedup"],
                "independent_ci95": independent["speedup_ci95"],
                "rounds": len(d["rounds"]),
                "table_entries": d["table"]["entries"],
                "timed_now": d["table"]["timed_now"],
                "planning_seconds": seconds,
                "table_seconds": stages.get("latency table"),
                "proxy_seconds": stages.get("accuracy proxy"),
                "layers": {n: {"module": c.module, **c.params, **c.notes} for n, c in plan.layers.items()},
                "round_records": d["rounds"],
            }
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("layers", "round_records")}), flush=True)
    return rows


def compare(args) -> dict:
    """The two latency planners at the same measured target on a trained teacher, trained the same way."""
    from mobilelwt.compress import CompressConfig, LatencyTarget, compress
    from mobilelwt.distill import DistillConfig
    from mobilelwt.layerwise import LayerwiseConfig
    from mobilelwt.planners.sensitivity import capture_io, normalized_error

    results = {}
    for planner in ("latency", "latency-uniform"):
        config = CompressConfig(
            speedup=args.speedup,
            planner=planner,
            calib_images=args.calib_images,
            latency=LatencyTarget(threads=args.threads, grid_points=args.rank_grid),
            layerwise=LayerwiseConfig(epochs=1.0, max_steps=args.layer_max_steps),
            finetune=DistillConfig(epochs=args.finetune_epochs, max_steps_per_epoch=args.finetune_max_steps),
        )
        stages: dict[str, float] = {}
        started = time.perf_counter()
        result = compress(
            args.model,
            out=Path(args.build_dir) / planner,
            weights=args.weights,
            run=RunSettings(data=args.data, threads=args.threads),
            config=config,
            latency_probe=lambda t: HostProbe(t.runtime, threads=t.threads),
            on_progress=timed_log(stages),
        )
        m = result.metrics
        teacher = result.teacher.model.eval()
        # closed-form error of every replaced layer on held-out images (teacher inputs), both plans alike
        held_out = torch.stack([img for img, _ in zip(_val_images(result), range(args.calib_images), strict=False)])
        io = capture_io(teacher, list(result.plan.layers), held_out)
        closed = apply_plan(teacher, result.plan, init=True).eval()
        with torch.no_grad():
            errors = {n: normalized_error(closed.get_submodule(n)(io[n][0]), io[n][1]) for n in result.plan.layers}
        d = result.plan.details
        results[planner] = {
            "measured_speedup": d["measured_speedup"],
            "measured_ci95": d["measured_ci95"],
            "mac_speedup": m["mac_speedup"],
            "teacher_top1": m["teacher"]["top1"],
            "closed_form_top1": m["student"]["closed_form"]["top1"],
            "layerwise_top1": m["student"]["layerwise"]["top1"],
            "final_top1": m["student"]["top1"],
            "top1_drop": m["top1_drop"],
            "closed_form_errors": errors,
            "closed_form_error_sum": sum(errors.values()),
            "plan_seconds": m["seconds"]["plan"],
            "seconds": time.perf_counter() - started,
            "layers": {n: {"module": c.module, **c.params} for n, c in result.plan.layers.items()},
        }
        print(json.dumps({k: v for k, v in results[planner].items() if k != "layers"}), flush=True)
    return results


def _val_images(result):
    from mobilelwt.loading import load_build, load_build_data

    data = load_build_data(load_build(result.out))
    index = torch.arange(len(data.val))
    return data.normalize(data.val.load(index))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("prediction", "compare"))
    parser.add_argument("--models", nargs="+", default=["alexnet", "vgg16"])
    parser.add_argument("--runtimes", nargs="+", default=["executorch", "litert"])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rank-grid", type=int, default=8)
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--tables", default="runs/bench-planner-tables")
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--weights")
    parser.add_argument("--data")
    parser.add_argument("--speedup", type=float, default=4.0)
    parser.add_argument("--layer-max-steps", type=int, default=150)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-max-steps", type=int, default=200)
    parser.add_argument("--build-dir", default="runs/bench-planner")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.tables).mkdir(parents=True, exist_ok=True)
    result = prediction(args) if args.mode == "prediction" else compare(args)
    out = Path(args.out or f"bench/results/planner-{args.mode}.json")
    out.write_text(json.dumps({"benchmark": f"planner-{args.mode}", "args": vars(args), "environment": environment(),
                               "results": result}, indent=2, default=str))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
