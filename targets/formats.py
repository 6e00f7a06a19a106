"""One registry of export formats: extension, runtime, precisions, thresholds, exporter, host loader, checks.

Every other module asks this registry instead of keeping its own table of extensions or runtimes. Each entry
names its adapter module (``targets.executorch``, ``targets.tflite``, ``targets.coreml``), imported only when an
entry is used, so importing ``targets`` stays cheap.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobilelwt.registry import Registry
from targets._api import RuntimeAdapter


@dataclass(frozen=True)
class Format:
    """One exported file format and the host runtime that runs it."""

    name: str  # the adapter module's name and the format's name in --target expansions
    ext: str
    runtime: str
    precisions: tuple[str, ...]
    default_precision: str
    host_runtime: bool  # runs on this project's Linux hosts (Core ML needs macOS)
    computes_fp16: bool = False  # Core ML ML Programs compute in fp16 unless asked for fp32

    @property
    def module(self) -> RuntimeAdapter:
        """The runtime's adapter: its module, which implements :class:`targets._api.RuntimeAdapter`."""
        return importlib.import_module(f"targets.{self.name}")  # type: ignore[return-value]

    def artifact_path(self, directory: Path, model: str, role: str, precision: str, suffix: str = "") -> Path:
        return Path(directory) / f"{model}-{role}-{precision}{suffix}.{self.ext}"

    def thresholds(self, precision: str) -> Any:
        """The parity limits of the precision the artifact really computes in."""
        # lazy: the adapters import torch and the runtimes; the registry is read without them
        from targets.validation import THRESHOLDS

        return THRESHOLDS["fp16" if self.computes_fp16 and precision != "fp32" else precision]

    def prepare(self) -> None:
        """Import and start the host runtime (before timing a load or taking a memory baseline)."""
        self.module.prepare()

    def load(self, path: Path, *, threads: int = 1, class_labels: list[str] | None = None) -> Any:
        """The saved artifact in its host runtime: a callable like the model."""
        return self.module.load(Path(path), threads=threads, class_labels=class_labels)

    def lower(
        self,
        model: Any,
        example_inputs: tuple[Any, ...],
        threads: int,
        *,
        precision: str = "fp32",
        calibration: Any = None,
    ) -> Any:
        """``model`` lowered in memory and loaded in the host runtime (for timing candidates)."""
        return self.module.lower_to_host(
            model, example_inputs, threads=threads, precision=precision, calibration=calibration
        )


FORMATS: Registry[Format] = Registry("format")
for _format in (
    Format("executorch", "pte", "executorch", ("fp32", "int8"), "fp32", host_runtime=True),
    Format("tflite", "tflite", "litert", ("fp32", "int8"), "fp32", host_runtime=True),
    Format("coreml", "mlpackage", "coreml", ("fp16", "fp32", "int8"), "fp16", host_runtime=False, computes_fp16=True),
):
    FORMATS.add(_format.name, _format)

TARGET_FORMATS = {
    "android": ("tflite", "executorch"),
    "ios": ("coreml", "executorch"),
}
PRECISIONS = ("fp32", "fp16", "int8")


def _find(attribute: str, value: str, what: str) -> Format:
    for name in FORMATS:
        if getattr(FORMATS.get(name), attribute) == value:
            return FORMATS.get(name)
    # lazy: the adapters import torch and the runtimes; the registry is read without them
    from targets._common import TargetError

    known = ", ".join(getattr(FORMATS.get(n), attribute) for n in FORMATS)
    raise TargetError(f"Unknown {what} {value!r}.", f"Use one of: {known}.")


def by_runtime(runtime: str) -> Format:
    """The format a runtime runs (``executorch``, ``litert``, ``coreml``)."""
    return _find("runtime", runtime, "runtime")


def by_ext(ext: str) -> Format:
    """The format of an artifact file extension (``pte``, ``tflite``, ``mlpackage``)."""
    return _find("ext", ext, "artifact extension")


def host_runtimes() -> tuple[str, ...]:
    """Runtimes that run on any host (what the latency planner and host benches can use)."""
    return tuple(FORMATS.get(n).runtime for n in FORMATS if FORMATS.get(n).host_runtime)
