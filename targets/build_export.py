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
from mobilelwt.loading import Build, load_build, load_build_data
from mobilelwt.manifest import environment
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from mobilelwt.teachers import model_slug
from targets._common import Artifact, TargetError, first_line, replace_dir
from targets.formats import FORMATS, PRECISIONS, TARGET_FORMATS
from targets.validation import ValidationError, ValidationResult, validate

TARGETS = (*TARGET_FORMATS, "all")
COREML_WEIGHTS = ("none", "int8", "palettize4", "palettize6")


WHOLE_SPLIT_CAP = 5000  # a split this small is validated whole; a larger one, 5000 images spread over its classes


@dataclass
class ExportOptions:
    precisions: tuple[str, ...] | None = None  # None: each format's default (fp32; Core ML fp16)
    validation_images: int | None = None  # None: the whole validation split, at most WHOLE_SPLIT_CAP images
    calibration_images: int = 64
    threads: int = 2
    tflite_quantization: str = "static"
    coreml_weights: str | None = None  # None: as the precision implies
    coreml_deployment_target: str = "iOS16"
    et_coreml_delegate: bool = False  # also an ExecuTorch .pte delegated to Core ML, for iOS
    et_bundled: int = 0  # > 0: also a BundledProgram (.bpte) with that many validation images (golden checks)

    def __post_init__(self) -> None:
        if self.validation_images is not None:
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
        # "sample": how the validation images are picked (2: spread over the classes; 1 was the split's first ones)
        common = {"validation_images": self.validation_images, "calibration_images": self.calibration_images,
                  "sample": 2}  # fmt: skip
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


@dataclass(frozen=True)
class _Job:
    """One artifact to export: target, format, precision, role, and the backend a .pte is delegated to."""

    target: str
    fmt: str
    precision: str
    role: str
    backend: str = "xnnpack"

    @property
    def file(self) -> tuple[str, str, str, str]:
        """What makes the file's bytes: the same for every target that lists it."""
        return self.fmt, self.precision, self.role, self.backend


def _jobs(
    targets: tuple[str, ...], options: ExportOptions, formats: tuple[str, ...] | None, roles: tuple[str, ...]
) -> list[_Job]:
    jobs = []
    for target in targets:
        for fmt in (f for f in TARGET_FORMATS[target] if formats is None or f in formats):
            spec = FORMATS.get(fmt)
            for precision in options.precisions or (spec.default_precision,):
                jobs.extend(_Job(target, fmt, precision, role) for role in roles)
            if target == "ios" and fmt == "executorch" and options.et_coreml_delegate:
                jobs.extend(_Job(target, fmt, "fp32", role, "coreml") for role in roles)
    return jobs


def export_build(
    build_dir: Path,
    *,
    target: str = "android",
    options: ExportOptions | None = None,
    formats: tuple[str, ...] | None = None,
    roles: tuple[str, ...] = ("teacher", "student"),
    on_progress: ProgressCallback = ignore_progress,
) -> dict[str, Any]:
    """Export teacher and student (or only ``roles``) of ``build_dir`` for ``target`` (all its formats, or only
    ``formats``); returns what ``artifacts.json`` holds.

    An artifact whose recorded inputs (the compress stage's key, role, format, precision, options) match and
    whose file still has the recorded bytes is reused; any other is exported again, its old file removed first.
    """
    options = options or ExportOptions()
    jobs = _jobs(expand_target(target), options, formats, roles)
    check_precisions(options.precisions)
    directory = BuildDir(build_dir)
    exporter = _Exporter(load_build(directory.path), directory.path, options)
    previous = {a["path"]: a for a in directory.artifacts()["artifacts"]}  # empty when from another student
    records: list[dict[str, Any]] = []
    for index, job in enumerate(jobs):
        record = exporter.describe(job)
        relative = record["path"]
        on_progress(ProgressEvent("export", index, len(jobs), {"artifact": relative}))
        if job.precision not in FORMATS.get(job.fmt).precisions:
            records.append({**record, "status": "skipped", "reason": f"{job.fmt} has no {job.precision} export"})
            continue
        old = previous.get(relative)
        if old is not None and old.get("inputs_key") == record["inputs_key"] and directory.current_artifact(old):
            records.append(old)
            exporter.done[job.file] = directory.path / relative
            on_progress(ProgressEvent("export", index + 1, len(jobs), {"artifact": relative, "status": "reused"}))
            continue
        records.append(exporter.export(job, record))
        on_progress(ProgressEvent("export", index + 1, len(jobs), {"artifact": relative,
                                                                   "status": records[-1]["status"]}))  # fmt: skip
    listing = _merge(directory, exporter.build.key, records, previous)
    write_json(directory / ARTIFACTS, listing)
    return listing


class _Exporter:
    """Exports one build's artifacts: each file once (a second target gets a copy), then validated."""

    def __init__(self, build: Build, build_dir: Path, options: ExportOptions) -> None:
        self.build, self.build_dir, self.options = build, build_dir, options
        self.info = build.manifest["teacher"]
        size = self.info["input_size"]
        self.example = (torch.zeros(1, 3, size, size),)
        self.done: dict[tuple[str, str, str, str], Path] = {}
        self._data: tuple[Any, torch.Tensor] | None = None

    def data(self) -> tuple[Any, torch.Tensor]:
        """Validation images and calibration images; decoding them is the slow part of a resumed export, so
        only when something is redone."""
        if self._data is None:
            data = load_build_data(self.build)
            wanted = self.options.validation_images or WHOLE_SPLIT_CAP
            subset = data.val.subset(data.val.sample_indices(wanted))
            self._data = subset, data.calibration(self.options.calibration_images, seed=0)
        return self._data

    def describe(self, job: _Job) -> dict[str, Any]:
        """The artifact's record before export: where it goes and the digest of what it is made from."""
        spec, plan = FORMATS.get(job.fmt), self.build.plan
        suffix = "-coreml" if job.backend == "coreml" else ""
        path = self.build_dir / job.target / f"{model_slug(plan.model)}-{job.role}-{job.precision}{suffix}.{spec.ext}"
        inputs = {"compress": self.build.key, "role": job.role, "format": job.fmt, "precision": job.precision,
                  "backend": job.backend, "options": self.options.key(job.fmt)}  # fmt: skip
        return {
            "target": job.target,
            "role": job.role,
            "model": plan.model,
            "format": spec.ext,
            "runtime": spec.runtime,
            "precision": job.precision,
            "backend": job.backend if job.fmt == "executorch" else None,
            "path": str(path.relative_to(self.build_dir)),
            "input_size": self.info["input_size"],
            "inputs_key": digest(inputs),
        }

    def export(self, job: _Job, record: dict[str, Any]) -> dict[str, Any]:
        """Export (or copy), validate and describe one artifact; its failure is recorded, never raised, unless it
        is the user's (bad data, a damaged build)."""
        path = self.build_dir / record["path"]
        _remove_artifact(path)  # stale or missing: never leave an old file beside a new record
        try:
            artifact = self._write(job, path)
            validation = self._validate(job, path)
            coverage = FORMATS.get(job.fmt).module.delegation(path, {"backend": job.backend, **artifact.summary})
            if coverage and coverage.get("undelegated_compute_ops"):
                validation["warnings"] = [
                    f"compute ops outside the XNNPACK delegate ({coverage['outside_kernels']}, often several times "
                    "slower): " + ", ".join(coverage["undelegated_compute_ops"])
                ]
            write_json(path.with_name(path.name + ".validation.json"), validation)
            record = {**record, **artifact.to_dict(), "path": record["path"], "validation": validation,
                      "status": "ok" if validation["passed"] else "mismatch"}  # fmt: skip
            if coverage is not None:
                record["delegation"] = coverage
        except TargetError as exc:
            _remove_artifact(path)
            record = {**record, "status": "failed", "reason": str(exc)}
        except MobileLWTError:
            raise  # a user error (bad data, damaged build): not the artifact's fault
        except Exception as exc:  # a runtime crashing on one artifact must not lose the others
            _remove_artifact(path)
            record = {**record, "status": "failed", "reason": f"{type(exc).__name__}: {first_line(exc)}"}
        return record

    def _model(self, role: str) -> nn.Module:
        return self.build.teacher.model if role == "teacher" else self.build.student

    def _write(self, job: _Job, path: Path) -> Artifact:
        """The artifact file: exported, or copied from the same file made for another target."""
        spec = FORMATS.get(job.fmt)
        subset, calibration = self.data()
        key = job.file
        if key in self.done:  # the same file for another target: copy, don't convert twice
            path.parent.mkdir(parents=True, exist_ok=True)
            _copy(self.done[key], path)
            artifact = Artifact.from_path(path, spec.ext, spec.runtime, job.precision, 0.0)
            artifact.export_seconds = 0.0
            return artifact
        info, model = self.info, self._model(job.role)
        size = info["input_size"]
        description = f"{self.build.plan.model} ({job.role}) from mobilelwt, {size}x{size} RGB input"
        preprocessing = {"mean": info["mean"], "std": info["std"], "description": description}
        artifact, config = _export(job.fmt, job.precision, model, self.example, path, calibration, self.options,
                                   self.build.classes, preprocessing, job.backend)  # fmt: skip
        self.done[key] = path
        if self.options.et_bundled > 0:
            images = normalize(subset.load(torch.arange(min(self.options.et_bundled, len(subset)))), info["mean"],
                               info["std"])  # fmt: skip
            companion = spec.module.write_companion(model, self.example, path, config, images, calibration=calibration)
            artifact.summary.update(companion or {})
        return artifact

    def _validate(self, job: _Job, path: Path) -> dict[str, Any]:
        subset, _ = self.data()
        mean, std = tuple(self.info["mean"]), tuple(self.info["std"])
        return _validate(job.fmt, path, job.precision, self._model(job.role),
                         lambda: iterate_normalized(subset, mean, std, 16), threads=self.options.threads,
                         classes=self.build.classes, input_shape=tuple(self.example[0].shape),
                         backend=job.backend)  # fmt: skip


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
