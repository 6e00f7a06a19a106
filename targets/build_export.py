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

from mobilelwt.builddir import ARTIFACTS, ARTIFACTS_FORMAT, BuildDir
from mobilelwt.checks import whole
from mobilelwt.data import iterate_normalized, normalize
from mobilelwt.errors import MobileLWTError
from mobilelwt.hashing import digest
from mobilelwt.io import atomic_path, write_json
from mobilelwt.loading import load_build, load_build_data
from mobilelwt.manifest import environment
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from mobilelwt.teachers import model_slug
from targets._common import Artifact, TargetError, first_line, replace_dir
from targets.formats import FORMATS, PRECISIONS, TARGET_FORMATS
from targets.validation import ValidationError, ValidationResult, validate

TARGETS = (*TARGET_FORMATS, "all")
COREML_WEIGHTS = ("none", "int8", "palettize4", "palettize6")


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

    def __post_init__(self) -> None:
        whole(self.validation_images, "--validation-images", low=1)
        whole(self.calibration_images, "--calibration-images", low=1)
        whole(self.threads, "--threads", low=1)
        whole(self.et_bundled, "--et-bundled", low=0)
        if self.tflite_quantization not in ("static", "dynamic"):
            raise TargetError(f"Unknown --tflite-quantization {self.tflite_quantization!r}.", "Use static or dynamic.")
        if self.coreml_weights not in (None, *COREML_WEIGHTS):
            raise TargetError(
                f"Unknown --coreml-weights {self.coreml_weights!r}.", f"Use one of: {', '.join(COREML_WEIGHTS)}."
            )
        check_precisions(self.precisions)

    def key(self, fmt: str) -> dict[str, Any]:
        """The options that change what an artifact of format ``fmt`` holds or how it was validated."""
        common = {"validation_images": self.validation_images, "calibration_images": self.calibration_images}
        per_format = {
            "executorch": {"et_bundled": self.et_bundled},
            "tflite": {"tflite_quantization": self.tflite_quantization},
            "coreml": {"coreml_weights": self.coreml_weights, "deployment_target": self.coreml_deployment_target},
        }
        return {**common, **per_format[fmt]}


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
) -> tuple[Artifact, Any]:
    """The artifact, and the runtime's config it was exported with."""
    adapter = FORMATS.get(fmt).module
    config = adapter.config_from_options(precision, options, classes=classes, preprocessing=preprocessing,
                                         backend=backend)  # fmt: skip
    return adapter.export(model, example, path, config, calibration=calibration), config


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
    """Numeric validation on the host runtime where there is one; what cannot run here is checked offline
    (Core ML off macOS: structurally) or says why not."""
    adapter = FORMATS.get(fmt).module
    offline = adapter.offline_check(path, backend=backend, input_shape=input_shape, num_classes=len(classes),
                                    precision=precision, class_labels=classes)  # fmt: skip
    if offline is not None and (not offline["passed"] or not adapter.can_predict(backend)):
        return offline
    spec = FORMATS.get(fmt)
    runner = spec.load(path, threads=threads, class_labels=classes)
    limits = spec.thresholds(precision)  # Core ML "fp32"/"int8" weights still run fp16 math
    numeric: ValidationResult = validate(path.name, runner, model, batches(), precision=precision, thresholds=limits)
    return {**numeric.to_dict(), "kind": "numeric"}


def export_build(
    build_dir: Path,
    *,
    target: str = "android",
    options: ExportOptions | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> dict[str, Any]:
    """Export teacher and student of ``build_dir`` for ``target``; returns what ``artifacts.json`` holds.

    An artifact whose recorded inputs (the compress stage's key, role, format, precision, options) match and
    whose file still has the recorded bytes is reused; any other is exported again, its old file removed first.
    """
    options = options or ExportOptions()
    targets = expand_target(target)
    check_precisions(options.precisions)
    directory = BuildDir(build_dir)
    build = load_build(directory.path)
    build_dir = directory.path
    previous = {a["path"]: a for a in directory.artifacts()["artifacts"]}  # empty when from another student
    info = build.manifest["teacher"]
    size = info["input_size"]
    example = (torch.zeros(1, 3, size, size),)
    loaded: dict[str, Any] = {}

    def data_parts() -> tuple[Any, torch.Tensor]:
        if not loaded:  # decoding images is the slow part of a resumed export: only when something is redone
            data = load_build_data(build)
            loaded["subset"] = data.val.subset(torch.arange(min(options.validation_images, len(data.val))))
            loaded["calibration"] = data.calibration(options.calibration_images, seed=0)
        return loaded["subset"], loaded["calibration"]

    preprocessing = {
        "mean": info["mean"],
        "std": info["std"],
        "description": f"{build.plan.model} ({'{role}'}) from mobilelwt, {size}x{size} RGB input",
    }

    jobs = []
    for tgt in targets:
        for fmt in TARGET_FORMATS[tgt]:
            spec = FORMATS.get(fmt)
            for precision in options.precisions or (spec.default_precision,):
                for role in ("teacher", "student"):
                    jobs.append((tgt, fmt, precision, role, "xnnpack"))
            if tgt == "ios" and fmt == "executorch" and options.et_coreml_delegate:
                jobs.extend((tgt, fmt, "fp32", role, "coreml") for role in ("teacher", "student"))

    records: list[dict[str, Any]] = []
    done: dict[tuple[str, str, str, str], Path] = {}
    for index, (tgt, fmt, precision, role, backend) in enumerate(jobs):
        spec = FORMATS.get(fmt)
        model = build.teacher.model if role == "teacher" else build.student
        suffix = "-coreml" if backend == "coreml" else ""
        path = build_dir / tgt / f"{model_slug(build.plan.model)}-{role}-{precision}{suffix}.{spec.ext}"
        relative = str(path.relative_to(build_dir))
        inputs = {"compress": build.key, "role": role, "format": fmt, "precision": precision, "backend": backend,
                  "options": options.key(fmt)}  # fmt: skip
        record: dict[str, Any] = {
            "target": tgt,
            "role": role,
            "model": build.plan.model,
            "format": spec.ext,
            "runtime": spec.runtime,
            "precision": precision,
            "backend": backend if fmt == "executorch" else None,
            "path": relative,
            "input_size": size,
            "inputs_key": digest(inputs),
        }
        on_progress(ProgressEvent("export", index, len(jobs), {"artifact": relative}))
        if precision not in spec.precisions:
            record.update(status="skipped", reason=f"{fmt} has no {precision} export")
            records.append(record)
            continue
        old = previous.get(relative)
        if old is not None and old.get("inputs_key") == record["inputs_key"] and directory.current_artifact(old):
            records.append(old)
            done[(fmt, precision, role, backend)] = path
            on_progress(ProgressEvent("export", index + 1, len(jobs), {"artifact": relative, "status": "reused"}))
            continue
        _remove_artifact(path)  # stale or missing: never leave an old file beside a new record
        try:
            subset, calibration = data_parts()
            key = (fmt, precision, role, backend)
            if key in done:  # the same file for another target: copy, don't convert twice
                path.parent.mkdir(parents=True, exist_ok=True)
                _copy(done[key], path)
                artifact = Artifact.from_path(path, spec.ext, spec.runtime, precision, 0.0)
                artifact.export_seconds = 0.0
            else:
                pre = {**preprocessing, "description": preprocessing["description"].replace("{role}", role)}
                artifact, config = _export(
                    fmt, precision, model, example, path, calibration, options, build.classes, pre, backend
                )
                done[key] = path
                if options.et_bundled > 0:
                    images = normalize(subset.load(torch.arange(min(options.et_bundled, len(subset)))), info["mean"],
                                       info["std"])  # fmt: skip
                    companion = spec.module.write_companion(model, example, path, config, images,
                                                            calibration=calibration)  # fmt: skip
                    artifact.summary.update(companion or {})
            validation = _validate(
                fmt,
                path,
                precision,
                model,
                lambda subset=subset: iterate_normalized(subset, tuple(info["mean"]), tuple(info["std"]), 16),
                threads=options.threads,
                classes=build.classes,
                input_shape=tuple(example[0].shape),
                backend=backend,
            )
            coverage = spec.module.delegation(path, {"backend": backend, **artifact.summary})
            if coverage and coverage.get("undelegated_compute_ops"):
                kernels = coverage["outside_kernels"]
                validation["warnings"] = [
                    f"compute ops outside the XNNPACK delegate ({kernels}, often several times slower): "
                    + ", ".join(coverage["undelegated_compute_ops"])
                ]
            write_json(path.with_name(path.name + ".validation.json"), validation)
            record.update(
                artifact.to_dict(),
                path=relative,
                validation=validation,
                status="ok" if validation["passed"] else "mismatch",
            )
            if coverage is not None:
                record["delegation"] = coverage
        except TargetError as exc:
            _remove_artifact(path)
            record.update(status="failed", reason=str(exc))
        except MobileLWTError:
            raise  # a user error (bad data, damaged build): not the artifact's fault
        except Exception as exc:  # a runtime crashing on one artifact must not lose the others
            _remove_artifact(path)
            record.update(status="failed", reason=f"{type(exc).__name__}: {first_line(exc)}")
        records.append(record)
        on_progress(ProgressEvent("export", index + 1, len(jobs), {"artifact": relative, "status": record["status"]}))

    listing = _merge(directory, build.key, records, previous)
    write_json(directory / ARTIFACTS, listing)
    return listing


def _remove_artifact(path: Path) -> None:
    """An artifact file or package and what lies beside it (validation record, bundled program)."""
    for stale in (path, path.with_name(path.name + ".validation.json"), path.with_suffix(".bpte")):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)

        replace_dir(tmp, dst)
    else:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


def _merge(
    directory: BuildDir, compress_key: str, records: list[dict[str, Any]], previous: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """This run's records replace earlier ones for the same file; other current records (other targets) stay."""
    fresh = {r["path"] for r in records}
    kept = [r for path, r in previous.items() if path not in fresh and "target" in r]
    return {
        "format": ARTIFACTS_FORMAT,
        "build": str(directory.path),
        "compress_key": compress_key,
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
