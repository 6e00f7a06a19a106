"""Export a build's teacher and student to runtime files, validate each on its host runtime, list them.

Layout: ``DIR/<target>/<model>-<teacher|student>-<precision>.<ext>``, a ``<file>.validation.json`` beside each,
and ``DIR/artifacts.json``. One format's failure is recorded and leaves the others' artifacts intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mobilelwt.io import write_json
from mobilelwt.manifest import environment
from targets._common import Artifact, TargetError
from targets.validation import ValidationResult, validate

FORMATS = {
    "executorch": ("pte", "executorch"),
    "tflite": ("tflite", "litert"),
}
TARGET_FORMATS = {"android": ("tflite", "executorch")}


def _export_one(fmt: str, model: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> Artifact:
    if fmt == "executorch":
        from targets.executorch import export

        return export(model, example, path)
    from targets.tflite import export

    return export(model, example, path)


def _host_run(fmt: str, path: Path, threads: int):
    if fmt == "executorch":
        from targets.executorch import HostProgram

        return HostProgram(path, threads=threads)
    from targets.tflite import HostInterpreter

    return HostInterpreter(path, threads=threads)


def export_build(
    build_dir: Path,
    *,
    target: str = "android",
    precisions: tuple[str, ...] = ("fp32",),
    validation_images: int = 64,
    threads: int = 2,
) -> dict[str, Any]:
    """Export teacher and student of ``build_dir`` for ``target``; returns what ``artifacts.json`` holds."""
    from mobilelwt.compress import load_build
    from mobilelwt.data import iterate_normalized, load_labelled

    if target not in TARGET_FORMATS:
        raise TargetError(f"Unknown target {target!r}.", f"Use one of: {', '.join(TARGET_FORMATS)}.")
    unsupported = [p for p in precisions if p != "fp32"]
    if unsupported:
        raise TargetError(f"Precision(s) {', '.join(unsupported)} are not exportable yet.", "Use --precision fp32.")
    build = load_build(build_dir)
    info = build.manifest["teacher"]
    size = info["input_size"]
    example = (torch.zeros(1, 3, size, size),)
    images = load_labelled(build.manifest["settings"]["data"]["source"], size, expected_classes=build.classes)
    subset = images.subset(torch.arange(min(validation_images, len(images))))
    mean, std = tuple(info["mean"]), tuple(info["std"])

    records = []
    for role, model in (("teacher", build.teacher.model), ("student", build.student)):
        for fmt in TARGET_FORMATS[target]:
            ext, runtime = FORMATS[fmt]
            for precision in precisions:
                path = Path(build_dir) / target / f"{build.plan.model}-{role}-{precision}.{ext}"
                record: dict[str, Any] = {
                    "role": role,
                    "format": fmt,
                    "runtime": runtime,
                    "precision": precision,
                    "path": str(path.relative_to(build_dir)),
                }
                try:
                    artifact = _export_one(fmt, model, example, path)
                    result: ValidationResult = validate(
                        path.name,
                        _host_run(fmt, path, threads),
                        model,
                        iterate_normalized(subset, mean, std, 16),
                        precision=precision,
                    )
                    write_json(path.with_name(path.name + ".validation.json"), result.to_dict())
                    record.update(
                        artifact.to_dict(),
                        path=str(path.relative_to(build_dir)),
                        validation=result.to_dict(),
                        status="ok" if result.passed else "mismatch",
                    )
                except TargetError as exc:
                    record.update(status="failed", reason=str(exc))
                records.append(record)
    listing = {"build": str(build_dir), "target": target, "artifacts": records, "environment": environment()}
    write_json(Path(build_dir) / "artifacts.json", listing)
    return listing
