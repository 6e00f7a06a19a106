"""``mobilelwt compress`` and ``mobilelwt evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mobilelwt.cli._common import console, handle_user_errors, human, progress_bars


@handle_user_errors
def compress_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Teacher name (see `mobilelwt models`).")],
    out: Annotated[Path, typer.Option(help="Build directory for plan.json, student.pt, metrics.json, manifest.json.")],
    weights: Annotated[str, typer.Option(help="Teacher weights: a checkpoint path, imagenet, or none.")] = "none",
    data: Annotated[str, typer.Option(help="ImageFolder directory or built-in dataset name.")] = "digits",
    val_data: Annotated[Path | None, typer.Option(help="Separate labelled ImageFolder for validation.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of --data held out for validation.")] = 0.1,
    input_size: Annotated[int | None, typer.Option(help="Square input side (default: the checkpoint's).")] = None,
    speedup: Annotated[float, typer.Option(help="Target reduction of the teacher's MACs.")] = 4.0,
    planner: Annotated[str, typer.Option(help="uniform, sensitivity or latency.")] = "uniform",
    conv_module: Annotated[
        str, typer.Option(help="lowrank_spatial, bottleneck, grouped or depthwise_separable.")
    ] = "lowrank_spatial",
    compress_fc: Annotated[bool, typer.Option(help="Also factorise the fully connected layers.")] = True,
    calib_images: Annotated[int, typer.Option(help="Calibration images for the sensitivity planner.")] = 64,
    latency_runtime: Annotated[
        str, typer.Option(help="Runtime the latency planner times on: executorch or litert.")
    ] = ("executorch"),
    layer_epochs: Annotated[float, typer.Option(help="Passes over the data per layer (0: closed form only).")] = 1.0,
    layer_max_steps: Annotated[int | None, typer.Option(help="Cap the steps per layer.")] = None,
    layer_input: Annotated[str, typer.Option(help="student (sequential) or teacher (independent).")] = "student",
    layer_lr: Annotated[float, typer.Option(help="Learning rate of layer-wise training (Adam).")] = 1e-3,
    layer_batch_size: Annotated[int, typer.Option(help="Images per layer-wise step.")] = 32,
    finetune_epochs: Annotated[int, typer.Option(help="Epochs of distillation fine-tune (0: none).")] = 2,
    finetune_lr: Annotated[float, typer.Option(help="Peak learning rate of the fine-tune (AdamW).")] = 1e-4,
    finetune_batch_size: Annotated[int, typer.Option(help="Images per fine-tune step.")] = 64,
    temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = 4.0,
    alpha: Annotated[float, typer.Option(help="Weight of the distillation term (1 - alpha: labels).")] = 0.7,
    seed: Annotated[int, typer.Option(help="Seed for split, sampling and training.")] = 0,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    device: Annotated[str, typer.Option(help="Where training runs: cpu, cuda, cuda:N or auto.")] = "cpu",
    plan: Annotated[
        Path | None, typer.Option(help="Replay this plan.json (e.g. one timed on the target runtime elsewhere).")
    ] = None,
) -> None:
    """Compress a teacher into a student: plan, closed-form init, layer-wise training, distillation."""
    options = dict(locals())
    from mobilelwt.compress import compress
    from mobilelwt.plan import Plan

    config = compress_config_from_options(**{k: v for k, v in options.items() if k in COMPRESS_OPTIONS})
    with progress_bars() as on_progress:
        result = compress(
            model,
            out=out,
            weights=weights,
            data=data,
            val_data=val_data,
            val_fraction=val_fraction,
            input_size=input_size,
            config=config,
            threads=threads,
            device=device,
            plan=Plan.load(plan) if plan else None,
            latency_probe=_latency_probe(latency_runtime, threads) if planner == "latency" else None,
            on_progress=on_progress,
        )
    print_compress_summary(result.metrics)
    console.print(f"build directory: {result.out}")


# the options `build` shares with `compress` (its signature reuses these parameters)
COMPRESS_OPTIONS = (
    "speedup", "planner", "conv_module", "compress_fc", "calib_images", "latency_runtime", "layer_epochs",
    "layer_max_steps", "layer_input", "layer_lr", "layer_batch_size", "finetune_epochs", "finetune_lr",
    "finetune_batch_size", "temperature", "alpha", "seed",
)  # fmt: skip


def compress_config_from_options(**options):
    """The :class:`CompressConfig` that the shared compress options describe."""
    from mobilelwt.compress import CompressConfig
    from mobilelwt.distill import DistillConfig
    from mobilelwt.layerwise import LayerwiseConfig

    o = options
    return CompressConfig(
        speedup=o["speedup"],
        planner=o["planner"],
        conv_module=o["conv_module"],
        compress_fc=o["compress_fc"],
        calib_images=o["calib_images"],
        layerwise=LayerwiseConfig(
            epochs=o["layer_epochs"],
            max_steps=o["layer_max_steps"],
            layer_input=o["layer_input"],
            lr=o["layer_lr"],
            batch_size=o["layer_batch_size"],
            seed=o["seed"],
        ),
        finetune=DistillConfig(
            epochs=o["finetune_epochs"],
            lr=o["finetune_lr"],
            batch_size=o["finetune_batch_size"],
            temperature=o["temperature"],
            alpha=o["alpha"],
            seed=o["seed"],
        ),
        seed=o["seed"],
    )


def _latency_probe(runtime: str, threads: int | None):
    from targets import RUNTIMES, TargetError, latency_probe

    if runtime not in RUNTIMES:
        raise TargetError(f"Unknown runtime {runtime!r}.", f"Use one of: {', '.join(RUNTIMES)}.")
    return lambda size: latency_probe(runtime, input_size=size, threads=threads or 2)


def print_compress_summary(metrics: dict) -> None:
    table = Table(title=f"{metrics['model']} at {metrics['input_size']}², {metrics['num_classes']} classes")
    for column in ("model", "MACs", "params", "top-1", "top-5"):
        table.add_column(column, justify="left" if column == "model" else "right")
    t, s = metrics["teacher"], metrics["student"]
    table.add_row("teacher", human(t["macs"]), human(t["params"]), f"{t['top1']:.2f}", f"{t['top5']:.2f}")
    for label, acc in (("student, closed form", s["closed_form"]), ("student, layer-wise", s["layerwise"])):
        table.add_row(label, human(s["macs"]), human(s["params"]), f"{acc['top1']:.2f}", f"{acc['top5']:.2f}")
    table.add_row("student, final", human(s["macs"]), human(s["params"]), f"{s['top1']:.2f}", f"{s['top5']:.2f}")
    console.print(table)
    layers = Table(title="per-layer reconstruction error (normalised MSE on val images)")
    for column in ("layer", "module", "rank", "MACs kept", "error init", "error final"):
        layers.add_column(column, justify="left" if column in ("layer", "module") else "right")
    for name, rec in metrics["layers"].items():
        layers.add_row(
            name,
            rec["module"],
            str(rec.get("rank")),
            f"{rec['student_macs'] / rec['teacher_macs']:.3f}",
            f"{rec.get('error_init', float('nan')):.4f}",
            f"{rec.get('error_final', float('nan')):.4f}",
        )
    console.print(layers)
    console.print(
        f"MAC speedup {metrics['mac_speedup']:.2f}×, top-1 change {-metrics['top1_drop']:+.2f} points "
        f"(MACs only: measure latency with the benchmarks)"
    )


@handle_user_errors
def evaluate_command(
    build_dir: Annotated[Path, typer.Argument(help="A build directory written by `mobilelwt compress`.")],
    data: Annotated[str, typer.Option(help="Labelled ImageFolder (or built-in name) with the teacher's classes.")],
) -> None:
    """Re-evaluate a build's teacher and student on any labelled set, with the build's preprocessing."""
    from mobilelwt.compress import evaluate_build

    result = evaluate_build(build_dir, data)
    table = Table(title=f"{build_dir} on {data} ({result['images']} images)")
    for column in ("model", "top-1", "top-5"):
        table.add_column(column)
    for name in ("teacher", "student"):
        table.add_row(name, f"{result[name]['top1']:.2f}", f"{result[name]['top5']:.2f}")
    console.print(table)
