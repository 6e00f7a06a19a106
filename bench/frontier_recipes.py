"""Frontier recipes: at the plans of a ``--max-drop`` frontier, which training recipe moves the curve.

    python bench/frontier_recipes.py runs/frontier-gallop5/search --points 11.39,17.09,18.64 --seeds 0,1,2 \\
        --json bench/results/frontier-recipes-alexnet-digits.json

A point's plan fixes its architecture, so its measured speedup is the same whatever the training: only the accuracy
can move. Each recipe retrains every chosen point's plan from the closed-form init, once per seed:

- **default**: the point's own settings (student inputs, every layer the same steps, the point's fine-tune);
- **teacher-input**: each replacement learns from the teacher's activations (``--layer-input teacher``);
- **by-error**: the same layer-wise steps in all, shared by each layer's error before training
  (``--layer-budget by-error``);
- **2x-distill**: twice the distillation epochs (the lever "a longer distillation where the drop is largest").

Accuracy on the point's validation split: top-1, top-5, and two measures finer than one image's 0.56 point on
179 images: the teacher's top-1 agreement and the mean KL divergence from the teacher's softmax. Prints a table
(mean over seeds, and each recipe's change against the default with its range over the points' seeds) and
writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fresh import machine, write_result  # noqa: E402  (bench/fresh.py, beside this script)

RECIPES = ("default", "teacher-input", "by-error", "2x-distill")
SPEED = "the search's measured speedup (cold): a recipe keeps the point's plan, so its speed"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@torch.no_grad()
def scores(student: nn.Module, teacher: nn.Module, data: Any) -> dict[str, float]:
    """Top-1/top-5 against the labels, top-1 agreement with the teacher, mean KL(teacher ‖ student)."""
    student.eval()
    teacher.eval()
    n = top1 = top5 = agree = 0
    kl = 0.0
    for images, labels in data.val.chunks(torch.arange(len(data.val)), 128):
        x = data.normalize(images)
        s, t = student(x), teacher(x)
        top = s.topk(5, dim=1).indices
        top1 += int((top[:, 0] == labels).sum())
        top5 += int((top == labels[:, None]).any(dim=1).sum())
        agree += int((s.argmax(1) == t.argmax(1)).sum())
        kl += float(F.kl_div(F.log_softmax(s, 1), F.log_softmax(t, 1), reduction="sum", log_target=True))
        n += len(labels)
    return {"top1": 100 * top1 / n, "top5": 100 * top5 / n, "agreement": 100 * agree / n, "kl": kl / n, "images": n}


def recipe_configs(recipe: str, layerwise: Any, finetune: Any) -> tuple[Any, Any]:
    if recipe == "teacher-input":
        return replace(layerwise, layer_input="teacher"), finetune
    if recipe == "by-error":
        return replace(layerwise, budget="by-error"), finetune
    if recipe == "2x-distill":
        return layerwise, replace(finetune, epochs=2 * finetune.epochs)
    return layerwise, finetune


def train_recipe(build: Any, data: Any, settings: dict[str, Any], recipe: str, seed: int) -> dict[str, Any]:
    """``settings``: the search's compress settings (a point estimated by layer-wise training alone has no
    fine-tune of its own; every recipe here gets the search's)."""
    from mobilelwt.distill import DistillConfig, distill
    from mobilelwt.layerwise import LayerwiseConfig, train_layerwise
    from mobilelwt.plan import apply_plan

    layerwise = LayerwiseConfig(**{**settings["layerwise"], "seed": seed})
    finetune = DistillConfig(**{**settings["finetune"], "seed": seed})
    layerwise, finetune = recipe_configs(recipe, layerwise, finetune)
    teacher = build.teacher.model.cpu().eval()
    torch.manual_seed(seed)
    student = apply_plan(teacher, build.plan, init=True)
    started = time.perf_counter()
    records = train_layerwise(teacher, student, list(build.plan.layers), data, layerwise)
    layerwise_s = time.perf_counter() - started
    after_layerwise = scores(student, teacher, data)
    started = time.perf_counter()
    distill(student, teacher, data, finetune)
    finetune_s = time.perf_counter() - started
    final = scores(student, teacher, data)
    return {
        "recipe": recipe,
        "seed": seed,
        "layerwise": after_layerwise,
        "final": final,
        "layer_errors": {name: r["error_final"] for name, r in records.items()},
        "layer_steps": {name: r["steps"] for name, r in records.items()},
        "seconds": {"layerwise": layerwise_s, "finetune": finetune_s},
    }


def summarise(rows: list[dict[str, Any]], teacher_top1: float) -> dict[str, Any]:
    """Per recipe: mean final top-1/agreement/KL over points and seeds, and its change against the default on the
    same (point, seed), with the range of those changes."""
    default = {(r["target"], r["seed"]): r for r in rows if r["recipe"] == "default"}
    summary: dict[str, Any] = {}
    for recipe in RECIPES:
        mine = [r for r in rows if r["recipe"] == recipe]
        if not mine:
            continue
        changes = [r["final"]["top1"] - default[(r["target"], r["seed"])]["final"]["top1"] for r in mine]
        kl_changes = [r["final"]["kl"] - default[(r["target"], r["seed"])]["final"]["kl"] for r in mine]
        summary[recipe] = {
            "runs": len(mine),
            "drop_mean": statistics.fmean(r["final"]["top1"] for r in mine) - teacher_top1,
            "top1_change_mean": statistics.fmean(changes),
            "top1_change_range": [min(changes), max(changes)],
            "top1_better_worse": [sum(c > 0 for c in changes), sum(c < 0 for c in changes)],
            "kl_mean": statistics.fmean(r["final"]["kl"] for r in mine),
            "kl_change_mean": statistics.fmean(kl_changes),
            "kl_lower_higher": [sum(c < 0 for c in kl_changes), sum(c > 0 for c in kl_changes)],
            "seconds_mean": statistics.fmean(sum(r["seconds"].values()) for r in mine),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("search", type=Path, help="a --max-drop build directory (with frontier.json)")
    parser.add_argument("--points", help="comma-separated rung targets (default: every point with a plan)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from mobilelwt.loading import load_build, load_build_data

    frontier = json.loads((args.search / "frontier.json").read_text())
    settings = json.loads((args.search / "manifest.json").read_text())["settings"]["compress"]
    wanted = {float(t) for t in args.points.split(",")} if args.points else None
    points = [p for p in frontier["points"] if "same_as" not in p and (args.search / p["dir"] / "plan.json").is_file()]
    points = [p for p in points if wanted is None or p["target"] in wanted]
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown or "default" not in recipes:
        parser.error(f"--recipes: known are {', '.join(RECIPES)}, and 'default' is needed (got {unknown or recipes})")
    started = time.perf_counter()
    rows, teacher_top1 = [], None
    for point in sorted(points, key=lambda p: p["speedup"]):
        build = load_build(args.search / point["dir"])
        data = load_build_data(build)
        teacher = scores(build.teacher.model.cpu().eval(), build.teacher.model, data)
        teacher_top1 = teacher["top1"]
        for seed in seeds:
            for recipe in recipes:
                row = train_recipe(build, data, settings, recipe, seed)
                row |= {"target": point["target"], "speedup": point["speedup"], "speedup_ci95": point["speedup_ci95"]}
                rows.append(row)
                f = row["final"]
                log(f"{point['target']:g}x seed {seed} {recipe}: layer-wise {row['layerwise']['top1']:.2f} -> "
                    f"top-1 {f['top1']:.2f} ({f['top1'] - teacher_top1:+.2f}), agreement {f['agreement']:.1f}, "
                    f"KL {f['kl']:.4f}, {sum(row['seconds'].values()):.0f} s")  # fmt: skip
    summary = summarise(rows, teacher_top1)
    result = {
        "machine": machine(),
        "command": " ".join(sys.argv),
        "model": frontier["model"],
        "input_size": frontier["input_size"],
        "data": json.loads((args.search / "manifest.json").read_text())["settings"]["data"]["source"],
        "teacher_top1": teacher_top1,
        "seeds": seeds,
        "points": [{**{k: p[k] for k in ("target", "speedup", "speedup_ci95")}, "speedup_kind": SPEED} for p in points],
        "rows": rows,
        "summary": summary,
        "seconds": time.perf_counter() - started,
    }
    print(f"{result['model']} at {result['input_size']}² on {result['data']}, teacher top-1 {teacher_top1:.2f}; "
          f"seeds {args.seeds}")  # fmt: skip
    print("point | recipe | top-1 (mean over seeds) | change vs teacher | KL from the teacher")
    for point in sorted(points, key=lambda p: p["speedup"]):
        for recipe in recipes:
            mine = [r for r in rows if r["target"] == point["target"] and r["recipe"] == recipe]
            top1 = statistics.fmean(r["final"]["top1"] for r in mine)
            kl = statistics.fmean(r["final"]["kl"] for r in mine)
            print(f"{point['target']:g}x ({point['speedup']:.2f}x) | {recipe} | {top1:.2f} | "
                  f"{top1 - teacher_top1:+.2f} | {kl:.4f}")  # fmt: skip
    print("recipe | top-1 change vs default: mean (range), better/worse | KL change, lower/higher | s per run")
    for recipe, s in summary.items():
        low, high = s["top1_change_range"]
        print(f"{recipe} | {s['top1_change_mean']:+.2f} ({low:+.2f} to {high:+.2f}), "
              f"{s['top1_better_worse'][0]}/{s['top1_better_worse'][1]} | {s['kl_change_mean']:+.4f}, "
              f"{s['kl_lower_higher'][0]}/{s['kl_lower_higher'][1]} | {s['seconds_mean']:.0f}")  # fmt: skip
    write_result(args.json, result)


if __name__ == "__main__":
    main()
