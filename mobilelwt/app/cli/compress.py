"""``mobilelwt compress`` and ``mobilelwt evaluate``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mobilelwt.app.cli._common import console, data_line, handle_user_errors, human, is_main_process, main_progress
from mobilelwt.app.cli._options import (
    CompressOptions,
    ModelOption,
    ParallelOptions,
    RunOptions,
    TimingOptions,
    TrustCodeOption,
    allow_model_code,
    with_groups,
)
from mobilelwt.app.cli._params import BUILD_DIR, CHECKPOINT, DATA, INPUT_FILE, OUTPUT_DIR


@handle_user_errors
@with_groups
def compress_command(
    model: ModelOption,
    out: Annotated[
        str, typer.Option(help="Build directory for plan.json, student.pt, metrics.json, manifest.json."), OUTPUT_DIR
    ],
    weights: Annotated[
        str, typer.Option(help="Teacher weights: a checkpoint path, imagenet, or none."), CHECKPOINT
    ] = "none",
    plan: Annotated[
        str | None,
        typer.Option(help="Replay this plan.json (e.g. one timed on the target runtime elsewhere)."),
        INPUT_FILE,
    ] = None,
    compress: CompressOptions = CompressOptions(),  # noqa: B008  (a group of options, expanded for Typer)
    timing: TimingOptions = TimingOptions(),  # noqa: B008
    run: RunOptions = RunOptions(),  # noqa: B008
    parallel: ParallelOptions = ParallelOptions(),  # noqa: B008
    trust_code: TrustCodeOption = False,
) -> None:
    """Compress a teacher into a student: plan, closed-form init, layer-wise training, distillation."""
    # lazy: imports torch (seconds); `--help` and option errors answer at once
    from mobilelwt.frontier import check_not_replaying, make_student
    from mobilelwt.plan import Plan

    allow_model_code(trust_code, model)
    config = compress.config(timing)
    replayed = Plan.load(plan) if plan else None
    check_not_replaying(config, replayed)
    parallel.relaunch()
    probe = compress.latency_probe(config)
    with main_progress() as on_progress:
        result = make_student(model, out=out, weights=weights, run=run.settings(), config=config, plan=replayed,
                              latency_probe=probe, on_progress=on_progress)  # fmt: skip
    if not is_main_process():
        return
    if result.frontier is not None:
        print_frontier(result.frontier)
    print_compress_summary(result.metrics)
    if "data_loader" in result.metrics:
        console.print(data_line(result.metrics))
    console.print(f"build directory: {result.out}")


def print_frontier(frontier: dict) -> None:
    """The points a --max-drop search tried, the one it chose, and why; with a build's timing of the points'
    files (``files``, see :func:`device_bench.report.table.with_files`), their fp32 and int8 files."""
    # lazy: pandas (the report package); `--help` and option errors answer at once
    from device_bench.report.table import shown_speedup
    from mobilelwt.frontier import training_words

    teacher = frontier["teacher"]
    table = Table(title=f"frontier: top-1 within {frontier['max_drop']:g} points of the teacher's "
                        f"{teacher['top1']:.2f} % ({teacher['images']} validation images)")  # fmt: skip
    files = frontier.get("files") or {}
    timed_files = bool(files) and not files.get("skipped")
    cache = (frontier.get("latency") or {}).get("cache") if frontier["speedup_kind"] == "measured speedup" else None
    kind = f"{frontier['speedup_kind']} ({cache})" if cache else frontier["speedup_kind"]  # warm or cold, named
    columns = ["target", kind, "95% CI", "MACs fewer", "top-1", "change"]
    if timed_files:
        columns += ["int8 file", "int8 change"]
    for column in (*columns, "trained", ""):
        table.add_column(column, justify="left" if column in ("trained", "") else "right")
    for point in frontier["points"]:
        if "same_as" in point:
            continue
        speedup, ci, source = shown_speedup(point)
        row = [
            f"{point['target']:g}×" + (" (between)" if point.get("between") else ""),  # tried inside a wide gap
            f"{speedup:.2f}×" + (" file" if source == "file" else " planned" if timed_files else ""),
            f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "",
            f"{point['mac_speedup']:.2f}×",
            f"{point['top1']:.2f}",
            f"{-point['drop'] + 0.0:+.2f}",
        ]
        if timed_files:
            int8 = (point.get("files") or {}).get("int8") or {}
            row += [f"{int8['speedup']:.2f}×" if int8.get("speedup") is not None else int8.get("status", ""),
                    f"{-int8['drop'] + 0.0:+.2f}" if int8.get("drop") is not None else ""]  # fmt: skip
        table.add_row(*row, training_words(point), "chosen" if point["target"] == frontier["chosen"] else "")
    console.print(table)
    where = (f"; files: {files['runtime']}, {files['threads']} threads, {files['cache']} cache, against the "
             "teacher's fp32 file" if timed_files
             else f"; files not timed: {files['skipped']}" if files else "")  # fmt: skip
    console.print(f"chosen: {frontier['why']} ({kind}{where}; all points: frontier.json)", highlight=False,
                  soft_wrap=True)  # fmt: skip


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
    # lazy: pandas (the report package); `--help` and option errors answer at once
    from device_bench.report.table import plan_sentence

    target = metrics.get("plan_target") or {}
    planned = f"planned for {plan_sentence(target)}; " if target else ""
    console.print(
        f"{planned}MACs {metrics['mac_speedup']:.2f}× fewer; top-1 change {-metrics['top1_drop'] + 0.0:+.2f} points "
        f"(PyTorch, {metrics['student'].get('images', '?')} validation images). The exported files' speedup: "
        "`mobilelwt export` then `mobilelwt bench` (or `mobilelwt build`).",
        highlight=False,
        soft_wrap=True,
    )


@handle_user_errors
@with_groups
def evaluate_command(
    build_dir: Annotated[str, typer.Argument(help="A build directory written by `mobilelwt compress`."), BUILD_DIR],
    data: Annotated[
        str, typer.Option(help="Labelled ImageFolder (or built-in name) with the teacher's classes."), DATA
    ],
) -> None:
    """Re-evaluate a build's teacher and student on any labelled set, with the build's preprocessing."""
    # lazy: imports torch (seconds); `--help` and option errors answer at once
    from mobilelwt.compress import evaluate_build

    result = evaluate_build(build_dir, data)
    table = Table(title=f"{build_dir} on {data} ({result['images']} images)")
    for column in ("model", "top-1", "top-5"):
        table.add_column(column)
    for name in ("teacher", "student"):
        table.add_row(name, f"{result[name]['top1']:.2f}", f"{result[name]['top5']:.2f}")
    console.print(table)
