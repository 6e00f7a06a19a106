"""``build``: teacher (trained and cached when none is given) -> compress -> export -> validate -> host bench.

Every stage resumes: a cached teacher, a finished compress build, exports of the same student and its bench are
reused; only what is missing runs. The result is ``DIR/build.json`` with the headline numbers.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from device_bench.bench import bench_build
from device_bench.frontier import bench_frontier, files_choice
from device_bench.protocol import TimingPolicy
from device_bench.report.table import with_files
from mobilelwt.app.reports import make_report
from mobilelwt.builddir import SUMMARY, TEACHER_DIR, BuildDir, read_json
from mobilelwt.checks import check_writable_dir, finite, whole
from mobilelwt.compress import CompressConfig, LatencyProbeFactory
from mobilelwt.data import source_fingerprint
from mobilelwt.devices import resolve_device
from mobilelwt.distributed import init_distributed, on_main, world
from mobilelwt.errors import ConfigError
from mobilelwt.evaluation import paired_drop
from mobilelwt.frontier import make_student
from mobilelwt.hashing import digest, sha256_file
from mobilelwt.io import jsonable, write_json
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from mobilelwt.ranks import is_main_process
from mobilelwt.settings import RunSettings
from mobilelwt.teachers import get_teacher_spec, model_slug
from mobilelwt.train import TrainConfig, check_model_options, train_teacher
from targets.build_export import ExportOptions, check_precisions, expand_target, export_build


@dataclass
class BuildConfig:
    target: str = "ios"
    precisions: tuple[str, ...] | None = None
    teacher: TrainConfig = field(default_factory=TrainConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    validation_images: int | None = None  # the whole validation split, at most 5000 images spread over its classes
    calibration_images: int = 64
    bench: bool = True
    bench_threads: int = 2
    bench_processes: int = 3  # the files are timed in at least this many fresh processes (device_bench.apart)
    bench_rounds: int = 10
    budget_ms: float | None = None


def teacher_for_build(
    model: str, out: Path, run: RunSettings, config: TrainConfig, on_progress: ProgressCallback
) -> tuple[Path, dict[str, Any]]:
    """A teacher checkpoint trained on ``run.data``, cached in ``out/teacher/`` while its inputs hold.

    The key covers the data's content fingerprint and the whole split (fraction, separate val set, seed), so a
    cached teacher is never evaluated on images it trained on; a changed key removes it and everything after it.
    """
    path = out / TEACHER_DIR / f"{model_slug(model)}.pt"
    source = get_teacher_spec(model).source
    inputs = {
        "model": model,
        "code": source.sha256 if source else None,  # a user model's code: changed code, another teacher
        "data": source_fingerprint(run.data, run.input_size),
        "val_data": source_fingerprint(run.val_data, run.input_size) if run.val_data is not None else None,
        "val_fraction": run.val_fraction,
        "input_size": run.input_size,
        "train": jsonable(asdict(config)),
    }
    key = digest(inputs)
    manifest_path = path.with_suffix(".json")

    def cached() -> dict[str, Any] | None:  # rank 0 owns the directory
        if path.is_file() and manifest_path.is_file():
            try:
                manifest = read_json(manifest_path, what="teacher manifest", fix="")
                fresh = manifest.get("inputs_key") == key and manifest["files"][path.name]["sha256"] == sha256_file(
                    path
                )
            except (ConfigError, KeyError, TypeError):
                fresh = False
            if fresh:
                return {"cached": True, **manifest.get("metrics", {})}
        BuildDir(out).invalidate("teacher")
        return None

    found = on_main(cached, "checking the cached teacher")
    if found is not None:
        return path, found
    result = train_teacher(
        model,
        out=path,
        run=run,
        config=config,
        # outside the teacher folder, which a changed teacher key empties: the epochs' own key guards them
        progress=out / "teacher.progress.pt",
        on_progress=on_progress,
    )

    def record_inputs() -> None:
        manifest = read_json(result.manifest, what="teacher manifest", fix="")
        write_json(result.manifest, {**manifest, "inputs": inputs, "inputs_key": key})

    on_main(record_inputs, "saving the teacher")
    return path, {"cached": False, **result.metrics}


def check_build_options(model: str, out: Path, config: BuildConfig, run: RunSettings) -> str:
    """Everything that can be refused before hours of training is refused here, before any file is written.
    Returns the model's canonical name."""
    model = check_model_options(model, run)
    source_fingerprint(run.data, run.input_size)  # the data exists and is an ImageFolder tree (or a built-in name)
    if run.val_data is not None:
        source_fingerprint(run.val_data, run.input_size)
    expand_target(config.target)
    check_precisions(config.precisions)
    if config.validation_images is not None:
        whole(config.validation_images, "--validation-images", low=1)
    whole(config.calibration_images, "--calibration-images", low=1)
    whole(config.bench_threads, "--bench-threads", low=1)
    whole(config.bench_processes, "--bench-processes", low=1, high=64)
    whole(config.bench_rounds, "--bench-rounds", low=1)
    if config.budget_ms is not None:
        finite(config.budget_ms, "--budget-ms", low=0, strict=True)
    check_writable_dir(out)
    return model


def build(
    model: str,
    *,
    out: Path,
    weights: str | None = None,
    run: RunSettings | None = None,
    config: BuildConfig | None = None,
    latency_probe: LatencyProbeFactory | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> dict[str, Any] | None:
    """Run every stage into ``out``; returns (and writes as ``build.json``) the summary.

    Under torchrun the teacher and the student are trained data-parallel; export, bench and report run on rank 0
    alone, and the other ranks return None once the student is saved."""
    config, run = config or BuildConfig(), run or RunSettings()
    out = Path(out)
    model = check_build_options(model, out, config, run)
    options = ExportOptions(precisions=config.precisions, validation_images=config.validation_images,
                            calibration_images=config.calibration_images, threads=config.bench_threads)  # fmt: skip
    init_distributed(resolve_device(run.device))  # before the first rank-0-only step
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    teacher_info: dict[str, Any] = {"weights": weights}
    if weights is None:
        on_progress(ProgressEvent("build", 0, 4, {"stage": "teacher"}))
        path, metrics = teacher_for_build(model, out, run, config.teacher, on_progress)
        weights = str(path)
        teacher_info = {"weights": weights, "trained": not metrics["cached"], "val_top1": metrics.get("val_top1")}
    seconds["teacher"] = time.perf_counter() - started

    on_progress(ProgressEvent("build", 1, 4, {"stage": "compress"}))
    t0 = time.perf_counter()
    latency = config.compress.latency  # the build is timed as its plan was: one protocol, one cache state
    policy = TimingPolicy(cache=latency.cache, rel_width=latency.timing_width, max_seconds=latency.timing_cap_s,
                          processes=config.bench_processes)  # fmt: skip
    # --max-drop: the fastest student within the budget, found on the frontier; else one compress at --speedup.
    # A build that times its files on the host planned on chooses among the frontier's points by their files.
    choose = (files_choice(options=options, threads=config.bench_threads, policy=policy, on_progress=on_progress)
              if config.bench and config.compress.measured and latency.device == "host" else None)  # fmt: skip
    result = make_student(model, out=out, weights=weights, run=run, config=config.compress,
                          latency_probe=latency_probe, choose=choose, on_progress=on_progress)  # fmt: skip
    seconds["compress"] = time.perf_counter() - t0
    if not world().is_main:
        return None  # the student is saved: exporting, timing and reporting are rank 0's

    on_progress(ProgressEvent("build", 2, 4, {"stage": "export"}))
    t0 = time.perf_counter()
    listing = export_build(out, target=config.target, options=options, on_progress=on_progress)
    seconds["export"] = time.perf_counter() - t0
    wanted = set(expand_target(config.target))
    artifacts = [a for a in listing["artifacts"] if a.get("target") in wanted]
    paths = {a["path"] for a in artifacts}

    if config.bench:
        on_progress(ProgressEvent("build", 3, 4, {"stage": "host bench"}))
        t0 = time.perf_counter()
        bench_build(out, devices=("host",), threads=config.bench_threads, rounds=config.bench_rounds,
                    runs=5 * config.bench_rounds, paths=paths, policy=policy)  # fmt: skip
        if choose is None and result.frontier is not None and result.frontier.get("chosen") is not None:
            # planned on a phone or on MACs: the host's files do not choose, but the frontier still shows them
            bench_frontier(out, result.frontier, options=options, threads=config.bench_threads, policy=policy,
                           on_progress=on_progress)  # fmt: skip
        seconds["bench"] = time.perf_counter() - t0
    # also without --bench: the current host records of these files (an earlier run's, if their bytes are unchanged)
    bench_records = [r for r in BuildDir(out).bench_records() if r["artifact"] in paths and r["device"] == "host"]
    on_progress(ProgressEvent("build", 4, 4, {"stage": "report"}))

    report = make_report([out], budget_ms=config.budget_ms, max_drop=config.compress.max_drop)
    seconds["total"] = time.perf_counter() - started
    summary = {
        "format": "mobilelwt.build/1",
        "model": model,
        "out": str(out),
        "target": config.target,
        "teacher": teacher_info,
        **_compress_facts(result.metrics),
        "frontier": _frontier_facts(out, result.frontier),
        "accuracy": accuracy_record(artifacts, result.metrics),
        "latency": _speedups([r for r in bench_records if r.get("status") == "ok"]),
        **_artifact_facts(artifacts),
        "report": [str(p) for p in report["files"]],
        "headline": report["headline"],
        "delivered": report["delivered"],
        "seconds": seconds,
    }
    write_json(out / SUMMARY, summary)
    return summary


def _frontier_facts(out: Path, frontier: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``build.json`` says of a --max-drop search: the budget, the point chosen and why (the sentence the
    report prints, quoting the files' speedups), the points tried, and whether the files chose."""
    if frontier is None:
        return None
    shown = with_files(BuildDir(out), frontier)
    return {"max_drop": frontier["max_drop"], "floor": frontier["floor"], "chosen": frontier["chosen"],
            "chosen_by": "files" if (frontier.get("choice") or {}).get("files") else "planner",
            "why": shown["why"], "points": len(frontier["points"]), "file": "frontier.json"}  # fmt: skip


def _compress_facts(metrics: dict[str, Any]) -> dict[str, Any]:
    """What ``build.json`` repeats of the compress stage: its key, accuracy, MACs, plan, training facts."""
    return {
        "compress_key": metrics["inputs"]["key"],
        "mac_speedup": metrics["mac_speedup"],
        "plan": metrics.get("plan_target"),
        "training": {k: metrics.get(k) for k in ("distributed", "data_loader", "device")},
    }


def accuracy_record(artifacts: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
    """Teacher and student top-1 on the same images, for PyTorch and for each exported runtime and precision, with
    the paired interval of the drop: one record for the one accuracy question.

    The images are those every artifact was validated on (the whole validation split when it is small); PyTorch's
    numbers are the PyTorch models' on those same images. Without a numerically validated pair (Core ML on Linux),
    the compress stage's PyTorch evaluation stands alone, without an interval."""
    pairs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for artifact in artifacts:
        validation = artifact.get("validation") or {}
        if validation.get("kind") == "numeric" and validation.get("hits"):
            pairs.setdefault((artifact["runtime"], artifact["precision"]), {})[artifact["role"]] = validation
    rows: list[dict[str, Any]] = []
    for (runtime, precision), roles in sorted(pairs.items()):
        teacher, student = roles.get("teacher"), roles.get("student")
        if teacher is None or student is None or len(teacher["hits"]) != len(student["hits"]):
            continue
        if not rows:
            rows.append({"source": "PyTorch", **paired_drop(teacher["reference_hits"], student["reference_hits"])})
        rows.append({"source": f"{runtime} {precision}", **paired_drop(teacher["hits"], student["hits"])})
    if not rows:
        rows.append({"source": "PyTorch", "images": metrics["student"].get("images"),
                     "teacher_top1": metrics["teacher"]["top1"], "student_top1": metrics["student"]["top1"],
                     "top1_drop": metrics["top1_drop"], "top1_drop_ci95": None})  # fmt: skip
    first = rows[0]
    return {**{k: first[k] for k in ("images", "teacher_top1", "student_top1", "top1_drop", "top1_drop_ci95")},
            "rows": rows}  # fmt: skip


def _artifact_facts(artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """The build's artifacts by status, and why each failed one failed."""
    return {
        "artifacts": {
            status: sorted(a["path"] for a in artifacts if a["status"] == status)
            for status in ("ok", "mismatch", "failed", "skipped")
        },
        "failures": {a["path"]: a.get("reason") for a in artifacts if a["status"] == "failed"},
    }


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
                    "speedup": roles["student"].get("speedup") or teacher / student,  # the protocol's own
                    "speedup_ci95": roles["student"].get("speedup_ci95"),
                    "teacher_cv": roles["teacher"]["cv"],
                    "student_cv": roles["student"]["cv"],
                    "threads": roles["student"]["threads"],
                    "input": roles["student"]["input"],
                }
            )
    return rows
