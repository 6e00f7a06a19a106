"""``build``: teacher (trained and cached when none is given) -> compress -> export -> validate -> host bench.

Every stage resumes: a cached teacher, a finished compress build, exports of the same student and its bench are
reused; only what is missing runs. The result is ``DIR/build.json`` with the headline numbers.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mobilelwt.compress import CompressConfig, LatencyProbeFactory, compress
from mobilelwt.io import read_json, write_json
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from mobilelwt.train import TrainConfig, train_teacher


@dataclass
class BuildConfig:
    target: str = "ios"
    precisions: tuple[str, ...] | None = None
    teacher: TrainConfig = field(default_factory=TrainConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    validation_images: int = 64
    calibration_images: int = 64
    bench: bool = True
    bench_threads: int = 2
    bench_rounds: int = 10
    budget_ms: float | None = None
    max_drop: float | None = None


def teacher_for_build(
    model: str,
    out: Path,
    *,
    data: str | Path,
    input_size: int | None,
    val_fraction: float,
    val_data: Path | None,
    config: TrainConfig,
    threads: int | None,
    device: str,
    on_progress: ProgressCallback,
) -> tuple[Path, dict[str, Any]]:
    """A teacher checkpoint trained on ``data``, cached in ``out/teacher/`` and reused while its settings hold."""
    path = out / "teacher" / f"{model}.pt"
    wanted = {"model": model, "data": str(data), "input_size": input_size, "train": _jsonable(asdict(config))}
    manifest_path = path.with_suffix(".json")
    if path.is_file() and manifest_path.is_file():
        manifest = read_json(manifest_path)
        if manifest.get("settings", {}).get("build_key") == wanted:
            return path, {"cached": True, **manifest.get("metrics", {})}
    result = train_teacher(
        model,
        data=data,
        out=path,
        input_size=input_size,
        val_fraction=val_fraction,
        val_data=val_data,
        config=config,
        threads=threads,
        device=device,
        on_progress=on_progress,
    )
    manifest = read_json(result.manifest)
    manifest["settings"]["build_key"] = wanted
    write_json(result.manifest, manifest)
    return path, {"cached": False, **result.metrics}


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def build(
    model: str,
    *,
    out: Path,
    weights: str | None = None,
    data: str | Path = "digits",
    val_data: Path | None = None,
    val_fraction: float = 0.1,
    input_size: int | None = None,
    config: BuildConfig | None = None,
    threads: int | None = None,
    device: str = "cpu",
    latency_probe: LatencyProbeFactory | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> dict[str, Any]:
    """Run every stage into ``out``; returns (and writes as ``build.json``) the summary."""
    from device_bench.host import bench_pairs
    from targets.build_export import ExportOptions, export_build, exports_current

    config = config or BuildConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    options = ExportOptions(
        precisions=config.precisions,
        validation_images=config.validation_images,
        calibration_images=config.calibration_images,
        threads=config.bench_threads,
    )
    from targets.build_export import check_precisions, expand_target

    expand_target(config.target)  # refuse a bad target or precision before hours of training
    check_precisions(config.precisions)

    teacher_info: dict[str, Any] = {"weights": weights}
    if weights is None:
        on_progress(ProgressEvent("build", 0, 4, {"stage": "teacher"}))
        path, metrics = teacher_for_build(
            model,
            out,
            data=data,
            input_size=input_size,
            val_fraction=val_fraction,
            val_data=val_data,
            config=config.teacher,
            threads=threads,
            device=device,
            on_progress=on_progress,
        )
        weights = str(path)
        teacher_info = {"weights": weights, "trained": not metrics["cached"], "val_top1": metrics.get("val_top1")}
    seconds["teacher"] = time.perf_counter() - started

    on_progress(ProgressEvent("build", 1, 4, {"stage": "compress"}))
    t0 = time.perf_counter()
    result = compress(
        model,
        out=out,
        weights=weights,
        data=data,
        val_data=val_data,
        val_fraction=val_fraction,
        input_size=input_size,
        config=config.compress,
        threads=threads,
        device=device,
        latency_probe=latency_probe,
        on_progress=on_progress,
    )
    seconds["compress"] = time.perf_counter() - t0

    on_progress(ProgressEvent("build", 2, 4, {"stage": "export"}))
    t0 = time.perf_counter()
    listing = exports_current(out, config.target, options)
    if listing is None:
        listing = export_build(out, target=config.target, options=options, on_progress=on_progress)
    seconds["export"] = time.perf_counter() - t0

    bench_records: list[dict[str, Any]] = []
    if config.bench:
        on_progress(ProgressEvent("build", 3, 4, {"stage": "host bench"}))
        t0 = time.perf_counter()
        wanted = set(expand_target(config.target))
        artifacts = [a for a in listing["artifacts"] if a.get("target") in wanted]
        bench_records = bench_pairs(out, artifacts, threads=config.bench_threads, rounds=config.bench_rounds)
        write_json(out / "host-bench.json", {"records": bench_records, "threads": config.bench_threads})
        seconds["bench"] = time.perf_counter() - t0
    on_progress(ProgressEvent("build", 4, 4, {"stage": "report"}))
    from mobilelwt.report import make_report

    report = make_report([out], budget_ms=config.budget_ms, max_drop=config.max_drop)
    seconds["total"] = time.perf_counter() - started

    summary = {
        "format": "mobilelwt.build/1",
        "model": model,
        "out": str(out),
        "target": config.target,
        "teacher": teacher_info,
        "accuracy": {
            "teacher_top1": result.metrics["teacher"]["top1"],
            "student_top1": result.metrics["student"]["top1"],
            "top1_drop": result.metrics["top1_drop"],
        },
        "mac_speedup": result.metrics["mac_speedup"],
        "latency": _speedups(bench_records),
        "artifacts": {
            status: sorted(a["path"] for a in listing["artifacts"] if a["status"] == status)
            for status in ("ok", "mismatch", "failed", "skipped")
        },
        "failures": {a["path"]: a.get("reason") for a in listing["artifacts"] if a["status"] == "failed"},
        "report": [str(p) for p in report["files"]],
        "headline": report["headline"],
        "seconds": seconds,
    }
    write_json(out / "build.json", summary)
    return summary


def _speedups(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Teacher/student median latency per (runtime, precision) measured side by side."""
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for record in records:
        by_key.setdefault((record["runtime"], record["precision"]), {})[record["role"]] = record
    rows = []
    for (runtime, precision), roles in sorted(by_key.items()):
        if {"teacher", "student"} <= set(roles):
            teacher, student = roles["teacher"]["median_ms"], roles["student"]["median_ms"]
            rows.append(
                {
                    "runtime": runtime,
                    "precision": precision,
                    "teacher_ms": teacher,
                    "student_ms": student,
                    "speedup": teacher / student,
                    "teacher_cv": roles["teacher"]["cv"],
                    "student_cv": roles["student"]["cv"],
                    "threads": roles["student"]["threads"],
                    "input": roles["student"]["input"],
                }
            )
    return rows
