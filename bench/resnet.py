"""ResNet benchmark: mobilelwt students vs Torch-Pruning's uniform L1 channel pruning at the same MAC ratio.

For each model and MAC target (2×, 3×): a uniform plan of low-rank replacements (closed-form init; latency does
not depend on weight values, so weights are random and seeded) and a Torch-Pruning model pruned with one
channel ratio in every prunable conv (L1 magnitude, the classifier kept) chosen by bisection to cut the same MACs.
With ``--bn-fold``, the 2× student is also timed with each batch norm folded into its replacement's last conv, to
decide whether folding before export buys anything. All variants of one model are lowered for each runtime and
timed interleaved in one process (warm-up, rounds of a few runs each); speedups carry a bootstrap 95% interval.

    python bench/resnet.py --models resnet18 resnet50 --runtimes executorch litert --bn-fold \\
        --out bench/results/resnet.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from device_bench.protocol import TimingPolicy, measure_runners
from device_bench.stats import summarize
from mobilelwt.manifest import environment
from mobilelwt.plan import Plan, apply_plan, default_candidates
from mobilelwt.planners import PlanningContext, plan_uniform
from mobilelwt.profile import count_macs
from mobilelwt.teachers import build_teacher, get_teacher_spec
from targets import host_runner


def student_for(teacher: nn.Module, name: str, size: int, speedup: float) -> tuple[nn.Module, Plan]:
    candidates = default_candidates(teacher, size, get_teacher_spec(name).head)
    ctx = PlanningContext(name, teacher, size, 1000, candidates, count_macs(teacher, size))
    plan = plan_uniform(ctx, speedup)
    return apply_plan(teacher, plan, init=True).eval(), plan


def fold_batch_norms(student: nn.Module, plan: Plan) -> nn.Module:
    """Fold the batch norm after each replaced ResNet conv into the replacement's last conv (eval statistics)."""
    folded = copy.deepcopy(student).eval()
    last: dict[str, nn.Conv2d] = {}  # the conv each replacement runs last (its output feeds the batch norm)
    hooks = [
        conv.register_forward_hook(lambda m, i, o, name=name: last.__setitem__(name, m))
        for name in plan.layers
        for conv in folded.get_submodule(name).modules()
        if isinstance(conv, nn.Conv2d)
    ]
    with torch.no_grad():
        folded(torch.zeros(1, 3, plan.input_size, plan.input_size))
    for hook in hooks:
        hook.remove()
    for name in plan.layers:
        bn_name = name.replace("downsample.0", "downsample.1") if "downsample" in name else name.replace("conv", "bn")
        bn, conv = folded.get_submodule(bn_name), last[name]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        with torch.no_grad():
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
        folded.set_submodule(bn_name, nn.Identity())
    return folded


def bench_model(name: str, args) -> dict:
    size = args.input_size
    teacher = build_teacher(name, num_classes=1000, input_size=size, seed=0).model.eval()
    with torch.no_grad():  # realistic batch-norm statistics, so folding is not a no-op
        for module in teacher.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    teacher_macs = count_macs(teacher, size)
    variants: dict[str, nn.Module] = {"teacher": teacher}
    facts: dict[str, dict] = {"teacher": {"macs": teacher_macs, "mac_speedup": 1.0}}
    for speedup in args.speedups:
        student, plan = student_for(teacher, name, size, speedup)
        variants[f"mobilelwt {speedup:g}x"] = student
        facts[f"mobilelwt {speedup:g}x"] = {"macs": plan.student_macs, "mac_speedup": plan.mac_speedup,
                                            "layers": len(plan.layers)}  # fmt: skip
        if args.bn_fold and speedup == args.speedups[0]:
            variants[f"mobilelwt {speedup:g}x bn-folded"] = fold_batch_norms(student, plan)
            facts[f"mobilelwt {speedup:g}x bn-folded"] = dict(facts[f"mobilelwt {speedup:g}x"])
        if not args.no_pruning:
            from peers import pruned_for  # bench/peers.py, beside this script

            pruned, ratio = pruned_for(teacher, size, plan.mac_speedup, head="fc")
            macs = count_macs(pruned, size)
            variants[f"torch-pruning {speedup:g}x"] = pruned
            facts[f"torch-pruning {speedup:g}x"] = {"macs": macs, "mac_speedup": teacher_macs / macs,
                                                    "channel_ratio": ratio}  # fmt: skip
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        references = {k: m(example) for k, m in variants.items()}
    result = {"model": name, "input_size": size, "variants": facts, "runtimes": {}}
    for runtime in args.runtimes:
        t0 = time.perf_counter()
        runners = {k: host_runner(runtime, m, (example,), args.threads) for k, m in variants.items()}
        lowering = time.perf_counter() - t0
        parity = {k: float((runners[k](example) - references[k]).abs().max()) for k in variants}
        measured = measure_runners(runners, example, reference="teacher",
                                   policy=TimingPolicy(cache=args.cache, warmup=args.warmup))  # fmt: skip
        rows = {}
        for k in variants:
            model = measured["models"][k]
            speedup = model.get("speedup", 1.0)
            rows[k] = {
                **summarize(model["samples_ms"]),
                "cache": args.cache,
                "converged": measured["converged"],
                "speedup": speedup,
                "speedup_ci95": model.get("speedup_ci95", [1.0, 1.0]),
                "realised_over_mac": speedup / facts[k]["mac_speedup"],
                "max_abs_diff_vs_pytorch": parity[k],
            }
        result["runtimes"][runtime] = {"lowering_seconds": lowering, "variants": rows}
        print(f"{name} {runtime}: done", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--speedups", nargs="+", type=float, default=[2.0, 3.0])
    parser.add_argument("--runtimes", nargs="+", default=["executorch", "litert"])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", choices=("cold", "warm"), default="cold", help="the timing protocol's cache state")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bn-fold", action="store_true", help="also time the first student with batch norm folded")
    parser.add_argument("--no-pruning", action="store_true", help="skip the Torch-Pruning peer")
    parser.add_argument("--out", default="bench/results/resnet.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [bench_model(name, args) for name in args.models]
    report = {
        "benchmark": "resnet",
        "machine": {"threads": torch.get_num_threads(), "platform": platform.platform()},
        "environment": environment(),
        "settings": vars(args),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"{'model':9} {'runtime':10} {'variant':28} {'ms':>8} {'speedup':>8} {'95% CI':>13} {'MAC x':>6} "
          f"{'real/MAC':>8} {'max|diff|':>9}")  # fmt: skip
    for r in results:
        for runtime, m in r["runtimes"].items():
            for k, row in m["variants"].items():
                low, high = row["speedup_ci95"]
                print(
                    f"{r['model']:9} {runtime:10} {k:28} {row['median_ms']:8.2f} {row['speedup']:7.2f}× "
                    f"{low:6.2f}–{high:<6.2f} {r['variants'][k]['mac_speedup']:6.2f} "
                    f"{row['realised_over_mac']:8.2f} {row['max_abs_diff_vs_pytorch']:9.2e}"
                )


if __name__ == "__main__":
    main()
