"""``mobilelwt export`` and ``mobilelwt build``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mobilelwt.app.cli._common import (
    console,
    data_line,
    err_console,
    handle_user_errors,
    human,
    main_progress,
    progress_bars,
)
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
from mobilelwt.app.cli._params import (
    BUILD_DIR,
    CHECKPOINT,
    COUNT,
    COUNT_OPTIONAL,
    COUNT_OR_ZERO,
    HOST_THREADS,
    OUTPUT_DIR_OPTIONAL,
    POSITIVE_OPTIONAL,
    PROCESSES,
    names,
    one_of,
)

TargetOption = Annotated[
    str,
    typer.Option(help="ios (Core ML + ExecuTorch), android (TFLite + ExecuTorch) or all."),
    one_of(("ios", "android", "all")),
]
PrecisionOption = Annotated[
    str | None,
    typer.Option(help="Comma-separated fp32, fp16, int8 (default: fp32; Core ML fp16)."),
    names(("fp32", "fp16", "int8")),
]


def _precisions(value: str | None) -> tuple[str, ...] | None:
    return tuple(p.strip() for p in value.split(",") if p.strip()) if value else None


@handle_user_errors
@with_groups
def export_command(
    build_dir: Annotated[str, typer.Argument(help="A build directory written by `mobilelwt compress`."), BUILD_DIR],
    target: TargetOption = "android",
    precision: PrecisionOption = None,
    validation_images: Annotated[
        int | None,
        typer.Option(help="Validation images run through every artifact (default: the whole split, at most 5000)."),
        COUNT_OPTIONAL,
    ] = None,
    calibration_images: Annotated[int, typer.Option(help="Training images that calibrate int8."), COUNT] = 64,
    tflite_quantization: Annotated[
        str, typer.Option(help="TFLite int8: static or dynamic."), one_of(("static", "dynamic"))
    ] = "static",
    coreml_weights: Annotated[
        str | None,
        typer.Option(help="Core ML weight compression: none, int8, palettize4, palettize6."),
        one_of(("none", "int8", "palettize4", "palettize6"), optional=True),
    ] = None,
    coreml_target: Annotated[
        str, typer.Option(help="Core ML minimum deployment target."), one_of(("iOS16", "iOS17", "iOS18"))
    ] = "iOS16",
    et_coreml: Annotated[bool, typer.Option(help="For ios, also an ExecuTorch .pte delegated to Core ML.")] = False,
    et_bundled: Annotated[
        int,
        typer.Option(help="Also a BundledProgram .bpte with N validation images (golden checks on devices)."),
        COUNT_OR_ZERO,
    ] = 0,
    threads: Annotated[int, typer.Option(help="Threads of the host runtimes that validate."), HOST_THREADS] = 2,
) -> None:
    """Export a build's teacher and student for a target, validate each file against PyTorch, list them."""
    # lazy: imports torch (seconds); `--help` and option errors answer at once
    from targets.build_export import ExportOptions, check_listing, export_build

    options = ExportOptions(
        precisions=_precisions(precision),
        validation_images=validation_images,
        calibration_images=calibration_images,
        threads=threads,
        tflite_quantization=tflite_quantization,
        coreml_weights=coreml_weights,
        coreml_deployment_target=coreml_target,
        et_coreml_delegate=et_coreml,
        et_bundled=et_bundled,
    )
    with progress_bars() as on_progress:
        listing = export_build(build_dir, target=target, options=options, on_progress=on_progress)
    print_artifacts(listing)
    console.print(f"listing: {Path(build_dir) / 'artifacts.json'}")
    check_listing(listing)


def print_artifacts(listing: dict[str, Any]) -> None:
    table = Table(title="artifacts (validated on the host runtime against PyTorch)")
    for column in ("file", "size", "export s", "status", "max |Δ|", "SQNR dB", "top-1 agree", "note"):
        table.add_column(column, justify="left" if column in ("file", "status", "note") else "right")
    for a in listing["artifacts"]:
        v = a.get("validation") or {}
        numeric = v.get("kind") == "numeric"
        if a["status"] == "skipped":
            note = a.get("reason", "")
        elif v.get("kind") == "structural":
            note = "structural check only"
        else:
            note = a.get("reason") or ", ".join(v.get("failures", []))
        table.add_row(
            a["path"],
            human(a["bytes"]) + "B" if a.get("bytes") else "",
            f"{a['export_seconds']:.1f}" if a.get("export_seconds") else "",
            a["status"],
            f"{v['max_abs_diff']:.2g}" if numeric else "",
            f"{v['sqnr_db']:.1f}" if numeric else "",
            f"{v['top1_agreement']:.3f}" if numeric else "",
            note or "",
        )
    console.print(table)
    structural = [a["path"] for a in listing["artifacts"] if (a.get("validation") or {}).get("kind") == "structural"]
    if structural:
        console.print(
            f"{len(structural)} Core ML package(s) checked structurally (interface, labels, ops, weights); "
            "the numeric check needs macOS: run `mobilelwt export` there to compare outputs."
        )


@handle_user_errors
@with_groups
def build_command(
    model: ModelOption = "alexnet",
    trust_code: TrustCodeOption = False,
    out: Annotated[
        str | None, typer.Option(help="Build directory (default: runs/<model>-<data>-<target>)."), OUTPUT_DIR_OPTIONAL
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(help="Teacher weights (checkpoint or imagenet); default: train one on --data."),
        CHECKPOINT,
    ] = None,
    target: TargetOption = "ios",
    precision: PrecisionOption = None,
    teacher_epochs: Annotated[int, typer.Option(help="Epochs when the teacher is trained here."), COUNT_OR_ZERO] = 10,
    validation_images: Annotated[
        int | None,
        typer.Option(help="Validation images run through every artifact (default: the whole split, at most 5000)."),
        COUNT_OPTIONAL,
    ] = None,
    bench: Annotated[bool, typer.Option(help="Time teacher and student artifacts on the host runtimes.")] = True,
    bench_threads: Annotated[int, typer.Option(help="Threads of the host runtimes."), HOST_THREADS] = 2,
    bench_processes: Annotated[
        int,
        typer.Option(help="Time the files in at least this many fresh processes (1: in the build's own)."),
        PROCESSES,
    ] = 3,
    budget_ms: Annotated[
        float | None, typer.Option(help="Report: mark variants at most this slow (ms)."), POSITIVE_OPTIONAL
    ] = None,
    compress: CompressOptions = CompressOptions(),  # noqa: B008  (a group of options, expanded for Typer)
    timing: TimingOptions = TimingOptions(),  # noqa: B008
    run: RunOptions = RunOptions(),  # noqa: B008
    parallel: ParallelOptions = ParallelOptions(),  # noqa: B008
) -> None:
    """Compress, export, validate and benchmark in one command; offline on the built-in digits by default."""
    # lazy: imports torch (seconds); `--help` and option errors answer at once
    from mobilelwt.app.pipeline import BuildConfig, build
    from mobilelwt.teachers import model_slug
    from mobilelwt.train import TrainConfig

    allow_model_code(trust_code, model)
    name = Path(str(run.data)).name or "data"
    out = out or Path("runs") / f"{model_slug(model)}-{name}-{target}"
    compress_config = compress.config(timing)
    config = BuildConfig(
        target=target,
        precisions=_precisions(precision),
        teacher=TrainConfig(epochs=teacher_epochs, seed=compress.seed),
        compress=compress_config,
        validation_images=validation_images,
        bench=bench,
        bench_threads=bench_threads,
        bench_processes=bench_processes,
        budget_ms=budget_ms,
    )
    parallel.relaunch()
    probe = compress.latency_probe(compress_config)
    with main_progress() as on_progress:
        summary = build(
            model,
            out=out,
            weights=weights,
            run=run.settings(),
            config=config,
            latency_probe=probe,
            on_progress=on_progress,
        )
    if summary is None:
        return  # a rank other than 0: rank 0 exports, times and reports
    print_build_summary(summary)
    broken = len(summary["failures"]) + len(summary["artifacts"]["mismatch"])
    if broken:
        err_console.print(
            f"[bold red]error:[/] {broken} artifact(s) failed to export or validate (see above); the others are "
            "kept and reported.",
            highlight=False,
        )
        raise typer.Exit(1)


def accuracy_line(accuracy: dict[str, Any]) -> str:
    """'top-1 on the same 179 validation images: PyTorch 98.88 → 99.44 % (+0.56 points, 95% CI …); …'"""
    parts = []
    for row in accuracy["rows"]:
        change = -row["top1_drop"] + 0.0  # + 0.0: never "-0.00"
        ci = row.get("top1_drop_ci95")
        interval = f", 95% CI {-ci[1] + 0.0:+.2f} to {-ci[0] + 0.0:+.2f}" if ci else ""
        parts.append(f"{row['source']} {row['teacher_top1']:.2f} → {row['student_top1']:.2f} % "
                     f"({change:+.2f} points{interval})")  # fmt: skip
    images = f"{accuracy['images']} " if accuracy.get("images") else ""
    return f"top-1, teacher → student on the same {images}validation images: " + "; ".join(parts)


def print_build_summary(summary: dict[str, Any]) -> None:
    """The build in a few lines: the frontier a --max-drop search chose from, the speedup the files deliver against
    the target (once per runtime), the one accuracy line, and where everything is."""
    if summary.get("frontier"):
        # lazy: the compress command's module (its table printer) and pandas; `--help` answers at once
        from device_bench.report.table import with_files
        from mobilelwt.app.cli.compress import print_frontier
        from mobilelwt.builddir import BuildDir

        directory = BuildDir(summary["out"])
        frontier = directory.frontier()
        if frontier is not None:
            print_frontier(with_files(directory, frontier))
    if summary["latency"]:
        for line in summary.get("delivered") or []:
            console.print(line, highlight=False, soft_wrap=True)
    elif summary.get("plan"):  # nothing timed from the files (--no-bench): what the plan was made to meet
        # lazy: pandas (the report package); `--help` and option errors answer at once
        from device_bench.report.table import plan_sentence

        console.print(f"planned for {plan_sentence(summary['plan'])}; the files are not timed (--no-bench)",
                      highlight=False, soft_wrap=True)  # fmt: skip
    console.print(accuracy_line(summary["accuracy"]), highlight=False, soft_wrap=True)
    training = summary.get("training") or {}
    if training.get("data_loader"):
        console.print(data_line(training))
    ok = summary["artifacts"]["ok"]
    console.print(f"{len(ok)} artifact(s) validated in {summary['out']}: {', '.join(ok)}")
    for path, reason in summary["failures"].items():
        console.print(f"[red]failed[/] {path}: {reason}")
    for path in summary["artifacts"]["mismatch"]:
        console.print(f"[red]mismatch[/] {path}: see {path}.validation.json")
    console.print(f"report: {', '.join(summary['report'])}")
    console.print(f"summary: {Path(summary['out']) / 'build.json'} ({summary['seconds']['total']:.0f} s)")
