"""Export a build's teacher and student to runtime files, validate each on its host runtime, list them.

Layout: ``DIR/<target>/<model>-<teacher|student>-<precision>.<ext>``, a ``<file>.validation.json`` beside each,
and ``DIR/artifacts.json`` (merged across runs, so ``--target ios`` then ``--target android`` list both).
One artifact's failure is recorded with its reason and leaves the others intact.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.io import read_json, sha256_file, write_json
from mobilelwt.manifest import environment
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from targets import load_artifact
from targets._common import Artifact, TargetError, first_line
from targets.validation import THRESHOLDS, ValidationError, ValidationResult, validate


@dataclass(frozen=True)
class Format:
    ext: str
    runtime: str
    precisions: tuple[str, ...]
    default_precision: str


FORMATS = {
    "executorch": Format("pte", "executorch", ("fp32", "int8"), "fp32"),
    "tflite": Format("tflite", "litert", ("fp32", "int8"), "fp32"),
    "coreml": Format("mlpackage", "coreml", ("fp16", "fp32", "int8"), "fp16"),
}
TARGET_FORMATS = {
    "android": ("tflite", "executorch"),
    "ios": ("coreml", "executorch"),
}
TARGETS = (*TARGET_FORMATS, "all")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class ExportOptions:
    precisions: tuple[str, ...] | None = None  # None: each format's default (fp32; Core ML fp16)
    validation_images: int = 64
    calibration_images: int = 64
    threads: int = 2
    tflite_quantization: str = "static"
    coreml_weights: str | None = None  # None: as the precision implies
    coreml_deployment_target: str = "iOS16"
    et_coreml_delegate: bool = False  # also an ExecuTorch .pte delegated to Core ML, for iOS
    et_bundled: int = 0  # > 0: also a BundledProgram (.bpte) with that many validation images (golden checks)


def expand_target(target: str) -> tuple[str, ...]:
    if target == "all":
        return tuple(TARGET_FORMATS)
    if target not in TARGET_FORMATS:
        raise TargetError(f"Unknown target {target!r}.", f"Use one of: {', '.join(TARGETS)}.")
    return (target,)


def check_precisions(precisions: tuple[str, ...] | None) -> None:
    unknown = [p for p in precisions or () if p not in PRECISIONS]
    if unknown:
        raise TargetError(f"Unknown precision(s) {', '.join(unknown)}.", f"Use some of: {', '.join(PRECISIONS)}.")


def _export(
    fmt: str,
    precision: str,
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    calibration: torch.Tensor,
    options: ExportOptions,
    classes: list[str],
    preprocessing: dict[str, Any],
    backend: str = "xnnpack",
) -> Artifact:
    if fmt == "executorch":
        from targets.executorch import ExecuTorchConfig, export

        return export(model, example, path, ExecuTorchConfig(precision, backend), calibration=calibration)
    if fmt == "tflite":
        from targets.tflite import TFLiteConfig, export

        return export(
            model, example, path, TFLiteConfig(precision, options.tflite_quantization), calibration=calibration
        )
    from targets.coreml import CoreMLConfig, export

    config = CoreMLConfig(
        precision=precision,
        weights=options.coreml_weights or ("int8" if precision == "int8" else "none"),
        deployment_target=options.coreml_deployment_target,
        class_labels=classes,
        mean=tuple(preprocessing["mean"]),
        std=tuple(preprocessing["std"]),
        metadata={"description": preprocessing["description"]},
    )
    return export(model, example, path, config)


def _validate(
    fmt: str,
    path: Path,
    precision: str,
    model: nn.Module,
    batches: Callable[[], Any],
    *,
    threads: int,
    classes: list[str],
    input_shape: tuple[int, ...],
    backend: str,
) -> dict[str, Any]:
    """Numeric validation on the host runtime where there is one; Core ML off macOS is checked structurally."""
    if fmt == "coreml":
        from targets.coreml import can_predict, structural_check

        result = structural_check(
            path, input_shape=input_shape, num_classes=len(classes), precision=precision, class_labels=classes
        )
        if not result["passed"] or not can_predict():
            return result
    if fmt == "executorch" and backend == "coreml":
        return {
            "artifact": path.name,
            "kind": "none",
            "numeric": "needs an Apple device: the Core ML delegate does not load in the host runtime",
            "passed": True,
            "failures": [],
        }
    runner = load_artifact(FORMATS[fmt].runtime, path, threads=threads, class_labels=classes)
    # the thresholds of the precision the artifact computes in: Core ML "fp32"/"int8" weights still run fp16 math
    limits = THRESHOLDS["fp16" if fmt == "coreml" and precision != "fp32" else precision]
    numeric: ValidationResult = validate(path.name, runner, model, batches(), precision=precision, thresholds=limits)
    return {**numeric.to_dict(), "kind": "numeric"}


def export_build(
    build_dir: Path,
    *,
    target: str = "android",
    options: ExportOptions | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> dict[str, Any]:
    """Export teacher and student of ``build_dir`` for ``target``; returns what ``artifacts.json`` holds."""
    from mobilelwt.compress import load_build, load_build_data
    from mobilelwt.data import iterate_normalized

    options = options or ExportOptions()
    targets = expand_target(target)
    check_precisions(options.precisions)
    build_dir = Path(build_dir)
    build = load_build(build_dir)
    info = build.manifest["teacher"]
    size = info["input_size"]
    example = (torch.zeros(1, 3, size, size),)
    data = load_build_data(build)
    subset = data.val.subset(torch.arange(min(options.validation_images, len(data.val))))
    calibration = data.calibration(options.calibration_images, seed=0)
    preprocessing = {
        "mean": info["mean"],
        "std": info["std"],
        "description": f"{build.plan.model} ({'{role}'}) from mobilelwt, {size}x{size} RGB input",
    }

    jobs = []
    for tgt in targets:
        for fmt in TARGET_FORMATS[tgt]:
            spec = FORMATS[fmt]
            for precision in options.precisions or (spec.default_precision,):
                for role in ("teacher", "student"):
                    jobs.append((tgt, fmt, precision, role, "xnnpack"))
            if tgt == "ios" and fmt == "executorch" and options.et_coreml_delegate:
                jobs.extend((tgt, fmt, "fp32", role, "coreml") for role in ("teacher", "student"))

    records: list[dict[str, Any]] = []
    done: dict[tuple[str, str, str, str], Path] = {}
    for index, (tgt, fmt, precision, role, backend) in enumerate(jobs):
        spec = FORMATS[fmt]
        model = build.teacher.model if role == "teacher" else build.student
        suffix = "-coreml" if backend == "coreml" else ""
        path = build_dir / tgt / f"{build.plan.model}-{role}-{precision}{suffix}.{spec.ext}"
        record: dict[str, Any] = {
            "target": tgt,
            "role": role,
            "model": build.plan.model,
            "format": spec.ext,
            "runtime": spec.runtime,
            "precision": precision,
            "backend": backend if fmt == "executorch" else None,
            "path": str(path.relative_to(build_dir)),
            "input_size": size,
        }
        on_progress(ProgressEvent("export", index, len(jobs), {"artifact": record["path"]}))
        if precision not in spec.precisions:
            record.update(status="skipped", reason=f"{fmt} has no {precision} export")
            records.append(record)
            continue
        try:
            key = (fmt, precision, role, backend)
            if key in done:  # the same file for another target: copy, don't convert twice
                path.parent.mkdir(parents=True, exist_ok=True)
                _copy(done[key], path)
                artifact = Artifact.from_path(path, spec.ext, spec.runtime, precision, 0.0)
                artifact.export_seconds = 0.0
            else:
                pre = {**preprocessing, "description": preprocessing["description"].replace("{role}", role)}
                artifact = _export(
                    fmt, precision, model, example, path, calibration, options, build.classes, pre, backend
                )
                done[key] = path
                if fmt == "executorch" and backend == "xnnpack" and options.et_bundled > 0:
                    bundled = _bundle(model, example, path, precision, subset, info, options, calibration)
                    artifact.summary.update(bundled)
            validation = _validate(
                fmt,
                path,
                precision,
                model,
                lambda: iterate_normalized(subset, tuple(info["mean"]), tuple(info["std"]), 16),
                threads=options.threads,
                classes=build.classes,
                input_shape=tuple(example[0].shape),
                backend=backend,
            )
            write_json(path.with_name(path.name + ".validation.json"), validation)
            record.update(
                artifact.to_dict(),
                path=str(path.relative_to(build_dir)),
                validation=validation,
                status="ok" if validation["passed"] else "mismatch",
            )
        except TargetError as exc:
            record.update(status="failed", reason=str(exc))
        except Exception as exc:  # a runtime crashing on one artifact must not lose the others
            record.update(status="failed", reason=f"{type(exc).__name__}: {first_line(exc)}")
        records.append(record)
        on_progress(
            ProgressEvent("export", index + 1, len(jobs), {"artifact": record["path"], "status": record["status"]})
        )

    listing = _merge(build_dir, target, records)
    listing["student_sha256"] = sha256_file(build_dir / "student.pt")
    write_json(build_dir / "artifacts.json", listing)
    return listing


def exports_current(build_dir: Path, target: str, options: ExportOptions) -> dict[str, Any] | None:
    """The existing listing when it already holds every artifact asked for, exported from this student."""
    path = Path(build_dir) / "artifacts.json"
    if not path.is_file():
        return None
    listing = read_json(path)
    if listing.get("student_sha256") != sha256_file(Path(build_dir) / "student.pt"):
        return None
    have = {(a["target"], a["format"], a["precision"]): a for a in listing.get("artifacts", []) if "target" in a}
    for tgt in expand_target(target):
        for fmt in TARGET_FORMATS[tgt]:
            spec = FORMATS[fmt]
            for precision in options.precisions or (spec.default_precision,):
                record = have.get((tgt, spec.ext, precision))
                if record is None or (record["status"] == "ok" and not (Path(build_dir) / record["path"]).exists()):
                    return None
    return listing


def _bundle(model, example, path, precision, subset, info, options, calibration) -> dict[str, Any]:
    """Write ``<file>.bpte`` beside the .pte (program + validation images + expected outputs) and verify it."""
    from mobilelwt.data import normalize
    from mobilelwt.io import atomic_path
    from targets.executorch import ExecuTorchConfig, bundle, verify_bundle

    images = normalize(subset.load(torch.arange(min(options.et_bundled, len(subset)))), info["mean"], info["std"])
    data = bundle(model, example, ExecuTorchConfig(precision), images, calibration=calibration)
    bundled_path = path.with_suffix(".bpte")
    with atomic_path(bundled_path) as tmp:
        tmp.write_bytes(data)
    check = verify_bundle(data, rtol=1e-3, atol=1e-4)
    return {"bundled": bundled_path.name, "bundled_cases": check["cases"], "bundled_verified": check["passed"]}


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        from targets._common import replace_dir

        replace_dir(tmp, dst)
    else:
        from mobilelwt.io import atomic_path

        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def _merge(build_dir: Path, target: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """This run's records replace earlier ones for the same file; records of other targets are kept."""
    previous = read_json(build_dir / "artifacts.json") if (build_dir / "artifacts.json").is_file() else {}
    fresh = {r["path"] for r in records}
    kept = [r for r in previous.get("artifacts", []) if r.get("path") not in fresh and "target" in r]
    return {
        "format": "mobilelwt.artifacts/1",
        "build": str(build_dir),
        "targets": sorted({r["target"] for r in kept + records}),
        "artifacts": kept + records,
        "environment": environment(),
    }


def check_listing(listing: dict[str, Any]) -> None:
    """Raise one error naming every artifact that failed to export or to match PyTorch."""
    failed = [a for a in listing["artifacts"] if a["status"] == "failed"]
    mismatched = [
        ValidationResult(**{k: v for k, v in a["validation"].items() if k in ValidationResult.__dataclass_fields__})
        for a in listing["artifacts"]
        if a["status"] == "mismatch" and a["validation"].get("kind") == "numeric"
    ]
    structural = [
        a for a in listing["artifacts"] if a["status"] == "mismatch" and a["validation"].get("kind") != "numeric"
    ]
    if mismatched or structural:
        for a in structural:
            mismatched.append(
                ValidationResult(
                    a["path"],
                    a["precision"],
                    0,
                    float("nan"),
                    float("nan"),
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    False,
                    a["validation"]["failures"],
                )  # fmt: skip
            )
        raise ValidationError(mismatched)
    if failed:
        details = "; ".join(f"{a['path']}: {a['reason']}" for a in failed)
        raise TargetError(
            f"{len(failed)} artifact(s) could not be exported: {details}",
            "The other artifacts are in place; fix or skip the failing format (--target/--precision).",
        )
