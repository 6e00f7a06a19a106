"""ExecuTorch: ``torch.export`` -> edge -> XNNPACK delegate -> ``.pte``; host runs via ``executorch.runtime``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from targets._common import Artifact, TargetError, UnsupportedOpError, first_line


@dataclass
class ExecuTorchConfig:
    precision: str = "fp32"
    backend: str = "xnnpack"


def lower(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], config: ExecuTorchConfig) -> bytes:
    """The ``.pte`` program bytes of ``model`` delegated to XNNPACK."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if config.precision != "fp32" or config.backend != "xnnpack":
        raise TargetError(f"ExecuTorch {config.backend}/{config.precision} is not available yet.", "Use fp32 xnnpack.")
    try:
        exported = torch.export.export(model.eval(), example_inputs)
        program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as exc:  # lowering errors come from deep inside exir with many types
        raise UnsupportedOpError(
            f"ExecuTorch could not lower the model: {first_line(exc)}.",
            "Replace the unsupported layer or export this model to another runtime.",
        ) from exc
    return program.buffer


def export(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], out_path: Path, config: ExecuTorchConfig | None = None
) -> Artifact:
    config = config or ExecuTorchConfig()
    started = time.perf_counter()
    buffer = lower(model, example_inputs, config)
    return Artifact.write(buffer, out_path, "pte", "executorch", config.precision, started, backend=config.backend)


def set_threads(threads: int) -> None:
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)


class HostProgram:
    """A ``.pte`` loaded in the host ExecuTorch runtime; call it like the model."""

    def __init__(self, program: bytes | Path, threads: int | None = None) -> None:
        from executorch.runtime import Runtime

        if threads:
            set_threads(threads)
        # the runtime reads the program in place: the bytes must outlive the loaded method
        self._data = Path(program).read_bytes() if isinstance(program, Path | str) else program
        self._program = Runtime.get().load_program(self._data)
        self._method = self._program.load_method("forward")

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._method.execute(list(inputs))[0]
