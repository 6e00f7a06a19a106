"""``mobilelwt bench``: latency of a build's artifacts into ``DIR/bench.jsonl``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mobilelwt.app.cli._common import console, handle_user_errors
from mobilelwt.app.cli._options import TimingOptions, with_groups
from mobilelwt.app.cli._params import (
    BENCH_THREADS,
    BUILD_DIR,
    COUNT,
    COUNT_OR_ZERO,
    CPU_MASK,
    DEVICES,
    INPUT_FILE,
    PROCESSES,
    SECONDS,
    one_of,
)
from mobilelwt.errors import ConfigError

PROFILE_RUNS = 20  # profiled executions per file (ETDump or LiteRT's profiler)


@handle_user_errors
@with_groups
def bench_command(
    build_dir: Annotated[str, typer.Argument(help="A build directory with artifacts.json."), BUILD_DIR],
    device: Annotated[
        str, typer.Option(help="host, adb serial(s) comma-separated, or all (every adb device)."), DEVICES
    ] = ("host"),
    runs: Annotated[
        int,
        typer.Option(
            help="On devices: timed runs per artifact per --rounds (the host runs until the interval is narrow)."
        ),
        COUNT,
    ] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed runs first."), COUNT_OR_ZERO] = 5,
    threads: Annotated[int, typer.Option(help="Runtime threads."), BENCH_THREADS] = 2,
    processes: Annotated[
        int,
        typer.Option(
            help="On the host: time the files in at least this many fresh processes (their spread is in the "
            "interval; more run while it is wide); 1: in this process."
        ),
        PROCESSES,
    ] = 3,
    rounds: Annotated[
        int,
        typer.Option(help="On devices: rounds alternating teacher and student before the interval is judged."),
        COUNT,
    ] = 10,
    runner: Annotated[
        str, typer.Option(help="On devices: python (device_bench.runner) or native."), one_of(("python", "native"))
    ] = "python",
    python: Annotated[str, typer.Option(help="Python on the device, for --runner python.")] = "python3",
    et_runner: Annotated[str | None, typer.Option(help="executor_runner built for the phone."), INPUT_FILE] = None,
    tflite_runner: Annotated[str | None, typer.Option(help="benchmark_model built for the phone."), INPUT_FILE] = None,
    core_mask: Annotated[str | None, typer.Option(help="taskset CPU mask on the device, e.g. f0."), CPU_MASK] = None,
    cool_limit: Annotated[float, typer.Option(help="Seconds to wait for a hot device to cool."), SECONDS] = 300.0,
    accuracy: Annotated[
        int, typer.Option(help="Also run N validation images on each device (top-1/top-5)."), COUNT_OR_ZERO
    ] = 0,
    coreml_units: Annotated[
        str,
        typer.Option(help="Core ML compute units on a Mac: ALL, CPU_ONLY, CPU_AND_NE."),
        one_of(("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")),
    ] = ("ALL"),
    adb: Annotated[str | None, typer.Option(help="adb binary (default: adb on PATH).")] = None,
    adb_server: Annotated[
        list[str] | None,
        typer.Option(
            help="Reach the phones of another machine's adb server, HOST:PORT (repeatable; `local` for this one's).",
        ),
    ] = None,
    layers: Annotated[bool, typer.Option(help="Also time each replaced layer against its teacher layer (host).")] = (
        False
    ),
    profile: Annotated[
        bool,
        typer.Option(
            help="Also profile every ExecuTorch (ETDump) and LiteRT (its profiler) artifact per operator: on the "
            "host, and on each device (the Python runner, or --et-runner built with the event tracer and "
            "--tflite-runner).",
        ),
    ] = False,
    timing: TimingOptions = TimingOptions(),  # noqa: B008  (a group of options, expanded for Typer)
) -> None:
    """Time every artifact (teacher and student interleaved, by the timing protocol); records resume, a summary
    table is printed."""
    # lazy: imports torch (seconds); `--help` and option errors answer at once
    from device_bench.android import DeviceOptions
    from device_bench.bench import BenchFailedError, bench_build, failed_records
    from device_bench.protocol import TimingPolicy

    if runner not in ("python", "native"):
        raise ConfigError(f"Unknown runner {runner!r}.", "Use --runner python or --runner native.")
    options = DeviceOptions(runner=runner, python=python, et_runner=et_runner, tflite_runner=tflite_runner,
                            core_mask=core_mask, cool_limit_s=cool_limit, accuracy_images=accuracy,
                            coreml_compute_units=coreml_units, profile_runs=PROFILE_RUNS if profile else 0)  # fmt: skip
    devices = tuple(d.strip() for d in device.split(","))
    policy = TimingPolicy(cache=timing.cache, rel_width=timing.timing_width, max_seconds=timing.timing_cap,
                          processes=processes)  # fmt: skip
    records = bench_build(build_dir, devices=devices, runs=runs, warmup=warmup, threads=threads, rounds=rounds,
                          options=options, adb=adb, adb_servers=tuple(adb_server or ()), policy=policy)  # fmt: skip
    table = Table(title=f"{build_dir}: latency (ms)")
    for column in ("artifact", "device", "median", "p10", "p90", "CV", "runs", "speedup (95% CI)", "status"):
        table.add_column(column, justify="left" if column in ("artifact", "device", "status") else "right")
    for r in records:
        ok = r.get("status") == "ok"
        table.add_row(
            r["artifact"],
            r["device"],
            f"{r['median_ms']:.2f}" if ok else "n/a",
            f"{r['p10_ms']:.2f}" if ok else "n/a",
            f"{r['p90_ms']:.2f}" if ok else "n/a",
            f"{r['cv']:.3f}" if ok else "n/a",
            str(r.get("runs", "")),
            _speedup_cell(r) if ok else "",
            r.get("status", "") if ok else f"{r.get('status')}: {r.get('reason', '')}",
        )
    console.print(table)
    console.print(f"records: {Path(build_dir) / 'bench.jsonl'}")
    if layers:
        # lazy: imports torch (seconds); `--help` and option errors answer at once
        from device_bench.layers import layer_latency

        rows = layer_latency(build_dir, threads=threads, policy=policy)
        per_layer = Table(title="per layer, ExecuTorch on the host (median ms)")
        for column in ("layer", "module", "teacher", "student", "speedup", "MAC ratio", "realised"):
            per_layer.add_column(column, justify="left" if column in ("layer", "module") else "right")
        for r in rows:
            numbers = (r["teacher_ms"], r["student_ms"], r["speedup"], r["mac_ratio"], r["realised_ratio"])
            per_layer.add_row(r["layer"], r["module"], *(f"{v:.3f}" for v in numbers))
        console.print(per_layer)
        console.print(f"per layer: {Path(build_dir) / 'layer-latency.json'}")
    if profile:
        # lazy: imports torch (seconds); `--help` and option errors answer at once
        from device_bench.profile import profile_build
        from mobilelwt.builddir import BuildDir

        if "host" in devices:
            profile_build(build_dir, threads=threads, runs=PROFILE_RUNS)
        _print_profiles(BuildDir(build_dir).op_profiles())
    failed = failed_records(records)
    if failed:
        raise BenchFailedError(failed, len(records))


def _speedup_cell(record: dict) -> str:
    """'1.20× (1.16–1.25) cold' for a student, with a mark when the timing was loaded or capped."""
    if "speedup" not in record:
        return ""
    low, high = record["speedup_ci95"]
    timing = record.get("timing") or {}
    marks = (
        ("" if timing.get("converged", True) else " capped")
        + (" under load" if (timing.get("load") or {}).get("quiet") is False else "")
        + (" speed changing" if (timing.get("state") or {}).get("steady") is False else "")
    )
    return f"{record['speedup']:.2f}× ({low:.2f}–{high:.2f}) {record.get('cache', '')}{marks}"


def _print_profiles(profiles: dict) -> None:
    """The slowest operators of every profile (host and devices), its slowest layers, and what ran outside the
    delegate; a device that could not profile says why."""
    ops = Table(title="per operator (ExecuTorch: ETDump, LiteRT: its profiler): the slowest five per artifact")
    for column in ("artifact", "operator", "where", "median ms", "share"):
        ops.add_column(column, justify="left" if column in ("artifact", "operator", "where") else "right")
    for path, p in profiles.items():
        for row in p.get("ops", [])[:5]:
            share = "n/a" if row["share"] is None else f"{100 * row['share']:.1f} %"
            ops.add_row(path, row["op"], row["where"], f"{row['median_ms']:.3f}", share)
    console.print(ops)
    for path, p in profiles.items():
        if "error" in p:
            console.print(f"[yellow]{path}: no operator profile: {p['error']}[/]")
            continue
        rows = sorted((p.get("layers") or {}).get("rows", []), key=lambda r: -r["ms"])[:3]
        if rows and p.get("execute_ms"):
            slowest = ", ".join(f"{r['layer']} {r['ms']:.2f} ms ({100 * r['ms'] / p['execute_ms']:.0f} %)"
                                for r in rows)  # fmt: skip
            console.print(f"{path}: slowest layers in the network: {slowest}")
        if p["undelegated_compute_ops"]:
            console.print(f"[red]{path}: compute outside the delegate: {', '.join(p['undelegated_compute_ops'])}[/]")
    console.print("per operator: op-profile.json (host), bench.jsonl `op_profile` (devices)")
