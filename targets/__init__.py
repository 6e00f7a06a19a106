"""Runtime adapters (ExecuTorch, TFLite/LiteRT, Core ML): one module per runtime with the same shape
(a config dataclass, ``export``, ``load``, ``lower_to_host``), found through the format registry.

Heavy runtime imports happen inside the functions, so importing ``targets`` is cheap.
"""

from targets._common import Artifact, TargetError, UnsupportedOpError, median, time_callable
from targets.formats import FORMATS, TARGET_FORMATS, Format, by_ext, by_runtime, host_runtimes

RUNTIMES = host_runtimes()


def host_runner(runtime: str, model, example_inputs, threads: int):
    """Lower ``model`` for ``runtime`` in memory and load it in the host runtime: a callable like the model."""
    return by_runtime(runtime).lower(model, example_inputs, threads)


def load_artifact(runtime: str, path, *, threads: int = 1, class_labels: list[str] | None = None):
    """A saved artifact loaded in its host runtime (ExecuTorch, LiteRT, or Core ML on macOS); call it like the model."""
    return by_runtime(runtime).load(path, threads=threads, class_labels=class_labels)


def latency_probe(runtime: str, *, input_size: int, threads: int = 2, warmup: int = 5, runs: int = 15):
    """(probe, description): the probe lowers a model for ``runtime`` and returns its median host latency (ms)."""
    import torch

    if runtime not in RUNTIMES:
        raise TargetError(f"Unknown runtime {runtime!r}.", f"Use one of: {', '.join(RUNTIMES)}.")
    example = (torch.randn(1, 3, input_size, input_size),)

    def probe(model) -> float:
        run = host_runner(runtime, model, example, threads)
        return median(time_callable(lambda: run(*example), warmup=warmup, runs=runs))

    return probe, f"{runtime} host, {threads} threads, batch 1, {input_size}x{input_size}"


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
    "host_runner",
    "latency_probe",
    "load_artifact",
    "median",
    "time_callable",
]
