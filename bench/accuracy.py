"""Accuracy benchmark: what layer-wise transfer buys, on held-out images.

Compresses a trained teacher and reports top-1/top-5 on the validation split for: the teacher; the student with
closed-form init only; after layer-wise training; after the distillation fine-tune; and the same student
architecture trained from scratch (random init, labels only) for the same number of epochs as the fine-tune.

    python bench/accuracy.py --weights runs/alexnet-cifar112.pt --data ../shared/data/cifar10-train \\
        --speedup 4 --layer-max-steps 300 --finetune-epochs 1 --out bench/results/accuracy-alexnet.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mobilelwt.compress import CompressConfig, LatencyTarget, compress
from mobilelwt.data import load_data
from mobilelwt.devices import resolve_device
from mobilelwt.distill import DistillConfig
from mobilelwt.layerwise import LayerwiseConfig
from mobilelwt.manifest import environment
from mobilelwt.plan import Plan, apply_plan
from mobilelwt.settings import RunSettings
from mobilelwt.teachers import build_teacher
from mobilelwt.train import TrainConfig, fit_classifier


def log(event) -> None:
    if event.done == event.total or event.done % 100 == 0:
        print(f"[{time.strftime('%H:%M:%S')}] {event.stage} {event.done}/{event.total} {event.info}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--speedup", type=float, help="measured speedup on --runtime (planners latency*)")
    parser.add_argument("--mac-speedup", type=float, help="MAC reduction (planners uniform, sensitivity)")
    parser.add_argument("--planner", default=None, help="latency (default), latency-uniform, uniform, sensitivity")
    parser.add_argument("--runtime", default="executorch", help="runtime the measured speedup is timed on")
    parser.add_argument("--rank-grid", type=int, default=8)
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--layer-max-steps", type=int, default=300)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--scratch", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--pruning-peer",
        action="store_true",
        help="also Torch-Pruning's uniform L1 pruning at the student's MAC ratio, distilled for the same epochs",
    )
    parser.add_argument("--plan", help="replay this plan.json instead of planning (e.g. one timed elsewhere)")
    parser.add_argument("--layer-batch-size", type=int, default=32)
    parser.add_argument("--finetune-batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--build-dir", default="runs/bench-accuracy")
    parser.add_argument("--out", default="bench/results/accuracy.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = CompressConfig(
        speedup=args.speedup,
        mac_speedup=args.mac_speedup,
        planner=args.planner,
        calib_images=args.calib_images,
        latency=LatencyTarget(runtime=args.runtime, threads=args.threads, grid_points=args.rank_grid),
        layerwise=LayerwiseConfig(epochs=1.0, max_steps=args.layer_max_steps, batch_size=args.layer_batch_size),
        finetune=DistillConfig(epochs=args.finetune_epochs, batch_size=args.finetune_batch_size),
    )

    def probe(target):
        from device_bench.probe import make_probe

        return make_probe(target.runtime, precision=target.precision, threads=target.threads)

    result = compress(
        args.model,
        out=Path(args.build_dir),
        weights=args.weights,
        run=RunSettings(data=args.data, device=args.device),
        config=config,
        plan=Plan.load(Path(args.plan)) if args.plan else None,
        latency_probe=probe,
        on_progress=log,
    )
    m = result.metrics
    rows = {
        "teacher": {"top1": m["teacher"]["top1"], "top5": m["teacher"]["top5"]},
        "student, closed-form init only": {k: m["student"]["closed_form"][k] for k in ("top1", "top5")},
        "student, layer-wise, no fine-tune": {k: m["student"]["layerwise"][k] for k in ("top1", "top5")},
        "student, layer-wise + distillation": {"top1": m["student"]["top1"], "top5": m["student"]["top5"]},
    }
    if args.scratch and args.finetune_epochs > 0:
        data = load_data(args.data, m["input_size"], seed=0)
        torch.manual_seed(0)
        skeleton = build_teacher(args.model, num_classes=m["num_classes"], input_size=m["input_size"]).model
        scratch = apply_plan(skeleton, result.plan, init=False, inplace=True)
        for module in scratch.modules():  # fresh default init for the replacements too
            if hasattr(module, "reset_parameters") and module is not scratch:
                module.reset_parameters()
        scratch.to(resolve_device(args.device))
        started = time.perf_counter()
        history = fit_classifier(
            scratch,
            data,
            TrainConfig(epochs=args.finetune_epochs, batch_size=args.finetune_batch_size, seed=0),
            on_progress=log,
        )
        rows[f"student, from scratch ({args.finetune_epochs} epochs)"] = {
            "top1": history[-1]["val_top1"],
            "top5": history[-1]["val_top5"],
            "seconds": time.perf_counter() - started,
        }
    if args.pruning_peer:
        rows.update(pruning_peer(args, result, m))
    report = {
        "benchmark": "accuracy",
        "model": args.model,
        "data": args.data,
        "input_size": m["input_size"],
        "train_images": m["settings"]["data"]["train_images"],
        "val_images": m["settings"]["data"]["val_images"],
        "mac_speedup": m["mac_speedup"],
        "rows": rows,
        "top1_drop": m["top1_drop"],
        "compress_seconds": m["seconds"],
        "layers": m["layers"],
        "settings": vars(args),
        "device": m.get("device", "cpu"),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "environment": environment(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"{args.model} at {m['input_size']}², MAC speedup {m['mac_speedup']:.2f}x, val images {report['val_images']}")
    print(f"{'variant':42} {'top-1':>7} {'top-5':>7} {'Δ top-1':>8}")
    for name, row in rows.items():
        print(f"{name:42} {row['top1']:7.2f} {row['top5']:7.2f} {row['top1'] - rows['teacher']['top1']:+8.2f}")
    print(f"compress wall time: {m['seconds']['total']:.0f} s ({m['seconds']})")


def pruning_peer(args, result, m) -> dict:
    """The pruned teacher, then the same distillation fine-tune as the student (same epochs, batch, seed)."""
    from peers import pruned_for  # bench/peers.py, beside this script

    from mobilelwt.distill import distill
    from mobilelwt.evaluation import evaluate
    from mobilelwt.profile import count_macs
    from mobilelwt.teachers import find_head

    data = load_data(args.data, m["input_size"], seed=0)
    teacher = result.teacher.model.cpu().eval()
    started = time.perf_counter()
    pruned, ratio = pruned_for(teacher, m["input_size"], m["mac_speedup"], head=find_head(teacher, m["input_size"]))
    for parameter in pruned.parameters():  # the teacher it was cut from is frozen: the peer trains
        parameter.requires_grad_(True)
    device = resolve_device(args.device)
    before = evaluate(pruned.to(device), data.eval_batches(data.val, 128))
    config = DistillConfig(epochs=args.finetune_epochs, batch_size=args.finetune_batch_size)
    distill(pruned, teacher.to(device), data, config, on_progress=log)
    after = evaluate(pruned, data.eval_batches(data.val, 128))
    macs = count_macs(pruned.cpu(), m["input_size"])
    label = f"torch-pruning L1 (ratio {ratio:.2f}, {m['teacher']['macs'] / macs:.2f}x MACs)"
    return {
        f"{label}, no fine-tune": {"top1": before["top1"], "top5": before["top5"]},
        f"{label} + distillation": {
            "top1": after["top1"],
            "top5": after["top5"],
            "seconds": time.perf_counter() - started,
        },  # fmt: skip
    }


if __name__ == "__main__":
    main()
