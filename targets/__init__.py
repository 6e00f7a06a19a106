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


class RuntimeProbe:
    """Median host latency (ms) of a model lowered for ``runtime`` on one image; :meth:`layer` times one layer
    alone on an input of its own shape (to say which layers hold the time)."""

    def __init__(self, runtime: str, *, input_size: int, threads: int = 2, warmup: int = 5, runs: int = 15) -> None:
        if runtime not in RUNTIMES:
            raise TargetError(f"Unknown runtime {runtime!r}.", f"Use one of: {', '.join(RUNTIMES)}.")
        self.runtime, self.input_size, self.threads, self.warmup, self.runs = runtime, input_size, threads, warmup, runs

    def __call__(self, model) -> float:
        return self.layer(model, (1, 3, self.input_size, self.input_size))

    def layer(self, module, input_shape: tuple[int, ...]) -> float:
        import torch

        example = (torch.randn(*input_shape, generator=torch.Generator().manual_seed(0)),)
        run = host_runner(self.runtime, module.eval(), example, self.threads)
        return median(time_callable(lambda: run(*example), warmup=self.warmup, runs=self.runs))

    @property
    def description(self) -> str:
        size = self.input_size
        return f"{self.runtime} host, {self.threads} threads, batch 1, {size}x{size}"


def latency_probe(runtime: str, *, input_size: int, threads: int = 2, warmup: int = 5, runs: int = 15):
    """(probe, description): the probe lowers a model for ``runtime`` and returns its median host latency (ms)."""
    probe = RuntimeProbe(runtime, input_size=input_size, threads=threads, warmup=warmup, runs=runs)
    return probe, probe.description


__all__ = [
    "FORMATS",
    "RUNTIMES",
    "TARGET_FORMATS",
    "Artifact",
    "Format",
    "RuntimeProbe",
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
