"""Runtime adapters (ExecuTorch, TFLite/LiteRT): one module per runtime with the same ``export`` shape.

Heavy runtime imports happen inside the functions, so importing ``targets`` is cheap.
"""

from targets._common import Artifact, TargetError, UnsupportedOpError, median, time_callable

RUNTIMES = ("executorch", "litert")


def host_runner(runtime: str, model, example_inputs, threads: int):
    """Lower ``model`` for ``runtime`` in memory and load it in the host runtime: a callable like the model."""
    if runtime == "executorch":
        from targets.executorch import ExecuTorchConfig, HostProgram, lower

        return HostProgram(lower(model, example_inputs, ExecuTorchConfig())[0], threads=threads)
    if runtime == "litert":
        from targets.tflite import HostInterpreter, TFLiteConfig, convert

        return HostInterpreter(convert(model, example_inputs, TFLiteConfig()), threads=threads)
    raise TargetError(f"Unknown runtime {runtime!r}.", f"Use one of: {', '.join(RUNTIMES)}.")


def load_artifact(runtime: str, path, *, threads: int = 1, class_labels: list[str] | None = None):
    """A saved artifact loaded in its host runtime (ExecuTorch, LiteRT, or Core ML on macOS); call it like the model."""
    if runtime == "executorch":
        from targets.executorch import HostProgram

        return HostProgram(path, threads=threads)
    if runtime == "litert":
        from targets.tflite import HostInterpreter

        return HostInterpreter(path, threads=threads)
    if runtime == "coreml":
        from targets.coreml import HostModel

        return HostModel(path, class_labels=class_labels)
    raise TargetError(f"Unknown runtime {runtime!r}.", f"Use one of: {', '.join((*RUNTIMES, 'coreml'))}.")


def latency_probe(runtime: str, *, input_size: int, threads: int = 2, warmup: int = 5, runs: int = 15):
    """(probe, description): the probe lowers a model for ``runtime`` and returns its median host latency (ms)."""
    import torch

    example = (torch.randn(1, 3, input_size, input_size),)

    def probe(model) -> float:
        run = host_runner(runtime, model, example, threads)
        return median(time_callable(lambda: run(*example), warmup=warmup, runs=runs))

    return probe, f"{runtime} host, {threads} threads, batch 1, {input_size}x{input_size}"


__all__ = [
    "RUNTIMES",
    "Artifact",
    "TargetError",
    "UnsupportedOpError",
    "host_runner",
    "latency_probe",
    "load_artifact",
    "median",
    "time_callable",
]
