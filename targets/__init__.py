"""Runtime adapters (ExecuTorch, TFLite/LiteRT, Core ML): one module per runtime with the same shape
(a config dataclass, ``export``, ``load``, ``lower_to_host``), found through the format registry.

Heavy runtime imports happen inside the functions, so importing ``targets`` is cheap.
"""

from targets._common import Artifact, TargetError, UnsupportedOpError, median, time_callable
from targets.formats import FORMATS, TARGET_FORMATS, Format, by_ext, by_runtime, host_runtimes

RUNTIMES = host_runtimes()


def host_runner(runtime: str, model, example_inputs, threads: int, *, precision: str = "fp32", calibration=None):
    """Lower ``model`` for ``runtime`` in memory and load it in the host runtime: a callable like the model.
    int8 is calibrated on ``calibration`` (a batch of inputs; random ones are fine for timing)."""
    return by_runtime(runtime).lower(model, example_inputs, threads, precision=precision, calibration=calibration)


def export_file(runtime: str, model, example_inputs, path, *, precision: str = "fp32", calibration=None):
    """``model`` exported to ``path`` for ``runtime`` (a probe's file for a phone); returns the :class:`Artifact`."""
    from types import SimpleNamespace

    fmt = by_runtime(runtime)
    config = fmt.module.config_from_options(precision, SimpleNamespace(tflite_quantization="static"))
    return fmt.module.export(model, example_inputs, path, config, calibration=calibration)


def load_artifact(runtime: str, path, *, threads: int = 1, class_labels: list[str] | None = None):
    """A saved artifact loaded in its host runtime (ExecuTorch, LiteRT, or Core ML on macOS); call it like the model."""
    return by_runtime(runtime).load(path, threads=threads, class_labels=class_labels)


__all__ = [
    "FORMATS",
    "RUNTIMES",
    "TARGET_FORMATS",
    "Artifact",
    "Format",
    "TargetError",
    "UnsupportedOpError",
    "by_ext",
    "by_runtime",
    "export_file",
    "host_runner",
    "load_artifact",
    "median",
    "time_callable",
]
