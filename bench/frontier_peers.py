"""Frontier peers: at each fully trained point of a ``--max-drop`` frontier, what two classic peers reach at the
same measured speedup with the same fine-tune budget.

    python bench/frontier_peers.py runs/frontier-gallop/search \\
        --json bench/results/frontier-peers-alexnet-digits.json --plot bench/results/frontier-peers-alexnet-digits.png

Per fine-tuned point (its plan, its teacher, its data split and its fine-tune settings, read from the point):

- **mobilelwt**: the point's student (closed-form init, layer-wise training, distillation fine-tune);
- **SVD peer**: the same plan (so the same architecture and speed) from the closed-form SVD init alone, then the
  same distillation fine-tune: what layer-wise training adds;
- **Torch-Pruning**: uniform L1 channel pruning of the teacher (the classifier head kept), its channel ratio
  bisected until the pruned model, timed by the protocol on ExecuTorch, is at least as fast as the point's
  student; then the same distillation fine-tune.

Speedups: teacher, student and pruned model timed in one interleaved run by the one protocol (ExecuTorch fp32,
cold unless ``--cache warm``), in this process. Accuracy: top-1/top-5 on the point's validation split. Prints a
table, writes JSON and a plot (top-1 against measured speedup, the three methods, the teacher and its budget).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fresh import machine, write_result  # noqa: E402  (bench/fresh.py, beside this script)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def accuracy(model: nn.Module, data: Any) -> dict[str, float]:
    from mobilelwt.evaluation import evaluate_set

    result = evaluate_set(model.eval(), data, data.val, 128)
    return {"top1": result["top1"], "top5": result["top5"]}


def fine_tune(student: nn.Module, teacher: nn.Module, data: Any, settings: dict[str, Any]) -> float:
    """The point's own distillation fine-tune (same epochs, steps, optimiser, seed); returns its seconds."""
    from mobilelwt.distill import DistillConfig, distill

    for parameter in student.parameters():  # a copy of the frozen teacher: the peer trains every weight
        parameter.requires_grad_(True)
    started = time.perf_counter()
    distill(student, teacher.eval(), data, DistillConfig(**settings))
    return time.perf_counter() - started


def pruned_at_speed(teacher: nn.Module, size: int, goal: float, probe: Any, head: str, rounds: int) -> dict[str, Any]:
    """The least-pruned uniform L1 model measured at least ``goal`` times faster than the teacher (bisection on
    the channel ratio; each candidate timed by the protocol)."""
    from peers import prune_l1  # bench/peers.py, beside this script

    shape = (1, 3, size, size)
    low, high, tried, best = 0.0, 0.95, [], None
    for _ in range(rounds):
        ratio = (low + high) / 2
        model = prune_l1(teacher, size, ratio, head=head)
        record = probe.compare(teacher, model, shape, target=goal)
        tried.append({"ratio": ratio, "speedup": record["speedup"], "ci95": record["speedup_ci95"]})
        log(f"  pruning ratio {ratio:.3f}: {record['speedup']:.2f}x (goal {goal:.2f}x)")
        if record["speedup"] >= goal:
            high, best = ratio, (ratio, model)
        else:
            low = ratio
    if best is None:  # even the most pruned candidate is slower: take the most pruned one, said so
        best = (high, prune_l1(teacher, size, high, head=head))
    return {"ratio": best[0], "model": best[1], "tried": tried}


def bench_point(point: dict[str, Any], search_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import copy

    from device_bench.probe import make_probe
    from device_bench.protocol import TimingPolicy
    from mobilelwt.loading import load_build, load_build_data
    from mobilelwt.plan import apply_plan
    from mobilelwt.profile import count_macs
    from mobilelwt.teachers import find_head

    build = load_build(search_dir / point["dir"])
    data = load_build_data(build)
    size = build.manifest["teacher"]["input_size"]
    finetune = build.manifest["settings"]["compress"]["finetune"]
    teacher = build.teacher.model.cpu().eval()
    probe = make_probe("executorch", threads=args.threads, policy=TimingPolicy(cache=args.cache, max_seconds=args.cap))
    goal = point["speedup"]
    log(f"point {point['target']:g}x (planned {goal:.2f}x, top-1 {point['top1']:.2f})")

    svd = apply_plan(teacher, build.plan, init=True)
    svd_closed = accuracy(svd, data)
    svd_s = fine_tune(svd, teacher, data, finetune)
    svd_tuned = accuracy(svd, data)
    log(f"  SVD peer: closed form {svd_closed['top1']:.2f} -> fine-tuned {svd_tuned['top1']:.2f} ({svd_s:.0f} s)")

    pruned = pruned_at_speed(teacher, size, goal, probe, find_head(teacher, size), args.rounds)
    model = pruned["model"]
    pruned_before = accuracy(model, data)
    pruned_s = fine_tune(model, teacher, data, finetune)
    pruned_after = accuracy(model, data)
    log(f"  Torch-Pruning ratio {pruned['ratio']:.3f}: {pruned_before['top1']:.2f} -> {pruned_after['top1']:.2f}")

    # the one timing that counts: teacher, student and pruned model interleaved in one run
    models = {"teacher": teacher, "student": build.student.eval(), "pruned": copy.deepcopy(model).eval()}
    record = probe.measure(models, (1, 3, size, size), reference="teacher")
    timed = {name: {"speedup": record["models"][name]["speedup"], "ci95": record["models"][name]["speedup_ci95"]}
             for name in ("student", "pruned")}  # fmt: skip
    teacher_macs = count_macs(teacher, size)
    return {
        "target": point["target"],
        "chosen": point.get("chosen", False),
        "teacher": accuracy(teacher, data),
        "timing": {"cache": args.cache, "converged": record.get("converged"), "seconds": record.get("seconds")},
        "mobilelwt": {
            **timed["student"],
            **accuracy(build.student, data),
            "planned_speedup": goal,
            "mac_speedup": teacher_macs / count_macs(build.student, size),
        },  # fmt: skip
        "svd": {
            **timed["student"],
            **svd_tuned,
            "closed_form": svd_closed,
            "finetune_s": svd_s,
            "note": "the point's plan and architecture: the student's timing",
        },  # fmt: skip
        "pruning": {
            **timed["pruned"],
            **pruned_after,
            "before_finetune": pruned_before,
            "ratio": pruned["ratio"],
            "mac_speedup": teacher_macs / count_macs(model, size),
            "bisection": pruned["tried"],
            "finetune_s": pruned_s,
        },  # fmt: skip
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"mobilelwt": ("o", "layer-wise + distillation (mobilelwt)"),
              "svd": ("s", "SVD init + distillation (no layer-wise)"),
              "pruning": ("^", "Torch-Pruning L1 + distillation")}  # fmt: skip
    for method, (marker, label) in styles.items():
        rows = sorted(result["points"], key=lambda r: r[method]["speedup"])
        xs = [r[method]["speedup"] for r in rows]
        ys = [r[method]["top1"] for r in rows]
        err = [[r[method]["speedup"] - r[method]["ci95"][0] for r in rows],
               [r[method]["ci95"][1] - r[method]["speedup"] for r in rows]]  # fmt: skip
        ax.errorbar(xs, ys, xerr=err, marker=marker, capsize=3, label=label, linestyle="-")
    teacher = result["points"][0]["teacher"]["top1"]
    ax.axhline(teacher, color="black", linewidth=0.8, label=f"teacher {teacher:.2f} %")
    ax.axhline(teacher - result["max_drop"], color="grey", linestyle="--", linewidth=0.8,
               label=f"budget: {result['max_drop']:g} point(s) below the teacher")  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _pos: f"{x:g}×"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda x, _pos: f"{x:g}×"))
    ax.set_xlabel(f"measured speedup over the teacher ({result['runtime']})")
    ax.set_ylabel("top-1 on the validation split (%)")
    ax.set_title(f"{result['model']} at {result['input_size']}² on {result['data']}: the frontier and its peers")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("search", type=Path, help="a --max-drop build directory (with frontier.json)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default="cold", choices=("cold", "warm"))
    parser.add_argument("--cap", type=float, default=30.0, help="the protocol's time cap per timing (s)")
    parser.add_argument("--rounds", type=int, default=6, help="bisection rounds of the pruning ratio")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--replot", type=Path, help="only draw --plot again from this JSON result")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.plot)
        return
    torch.set_num_threads(args.threads)
    frontier = json.loads((args.search / "frontier.json").read_text())
    points = [{**p, "chosen": p["target"] == frontier["chosen"]} for p in frontier["points"]
              if p.get("trained") == "fine-tuned"]  # fmt: skip
    started = time.perf_counter()
    result = {
        "machine": machine(),
        "runtime": f"executorch fp32, {args.threads} threads, batch 1, {args.cache}",
        "command": " ".join(sys.argv),
        "model": frontier["model"],
        "input_size": frontier["input_size"],
        "data": json.loads((args.search / "manifest.json").read_text())["settings"]["data"]["source"],
        "max_drop": frontier["max_drop"],
        "points": [],
    }
    # the chosen point first, then the rest by speed; the JSON is rewritten after each point (a CIFAR-10 point
    # is two fine-tunes and a bisection: an interrupted run keeps what it finished, marked partial)
    for point in sorted(points, key=lambda p: (not p["chosen"], p["speedup"])):
        result["points"].append(bench_point(point, args.search, args))
        result["points"].sort(key=lambda r: r["mobilelwt"]["planned_speedup"])
        result["seconds"] = time.perf_counter() - started
        result["partial"] = len(result["points"]) < len(points)
        write_result(args.json, result)
    rows = result["points"]
    print(f"{result['model']} at {result['input_size']}²; {result['runtime']}; budget {result['max_drop']:g} points")
    print("point | method | measured speedup (95% CI) | MACs fewer | top-1 | change")
    for r in rows:
        for method in ("mobilelwt", "svd", "pruning"):
            m = r[method]
            macs = m.get("mac_speedup") or r["mobilelwt"]["mac_speedup"]
            print(f"{r['target']:g}x{' *' if r['chosen'] else ''} | {method} | {m['speedup']:.2f} "
                  f"({m['ci95'][0]:.2f}-{m['ci95'][1]:.2f}) | {macs:.2f}x | {m['top1']:.2f} | "
                  f"{m['top1'] - r['teacher']['top1']:+.2f}")  # fmt: skip
    write_result(args.json, result)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
