"""TFLite/LiteRT: ``litert_torch.convert`` -> ``.tflite``; host runs via ``ai_edge_litert``'s interpreter."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from targets._common import Artifact, TargetError, UnsupportedOpError, first_line


@dataclass
class TFLiteConfig:
    precision: str = "fp32"


def convert(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], config: TFLiteConfig) -> bytes:
    import litert_torch

    if config.precision != "fp32":
        raise TargetError(f"TFLite {config.precision} is not available yet.", "Use fp32.")
    try:
        edge_model = litert_torch.convert(model.eval(), example_inputs)
    except Exception as exc:
        raise UnsupportedOpError(
            f"litert-torch could not convert the model: {first_line(exc)}.",
            "Replace the unsupported layer or export this model to another runtime.",
        ) from exc
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        edge_model.export(str(path))
        return path.read_bytes()


def export(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], out_path: Path, config: TFLiteConfig | None = None
) -> Artifact:
    config = config or TFLiteConfig()
    started = time.perf_counter()
    data = convert(model, example_inputs, config)
    return Artifact.write(data, out_path, "tflite", "litert", config.precision, started)


class HostInterpreter:
    """A ``.tflite`` model in the host LiteRT interpreter (XNNPACK delegate); call it like the model."""

    def __init__(self, model: bytes | Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        content = Path(model).read_bytes() if isinstance(model, Path | str) else model
        self._interpreter = Interpreter(model_content=content, num_threads=threads or 1)
        self._interpreter.allocate_tensors()
        self._inputs = self._interpreter.get_input_details()
        self._output = self._interpreter.get_output_details()[0]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for detail, value in zip(self._inputs, inputs, strict=True):
            self._interpreter.set_tensor(detail["index"], np.ascontiguousarray(value.numpy(), dtype=np.float32))
        self._interpreter.invoke()
        return torch.from_numpy(self._interpreter.get_tensor(self._output["index"]).copy())
