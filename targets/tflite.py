"""TFLite/LiteRT: ``litert_torch.convert`` -> ``.tflite``; host runs via ``ai_edge_litert``'s interpreter.

int8 uses litert-torch's PT2E quantizer: ``dynamic`` (int8 weights, activations quantised on the fly; float
inputs/outputs) or ``static`` (activations calibrated on real images; the file's inputs and outputs are int8,
with their scale/zero point in the model, which :class:`HostInterpreter` applies).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from targets._common import REWRITE_LAYER, Artifact, TargetError, UnsupportedOpError, describe_failing_op, first_line
from targets.litert_profiler import ProfilerError, parse_op_profile, profile_summary, profile_summary_apart
from targets.litert_profiler import delegation as litert_delegation
from targets.program_cache import cached_lowering
from targets.quantize import quantize_pt2e

PRECISIONS = ("fp32", "int8")
QUANTIZATIONS = ("static", "dynamic")


@dataclass
class TFLiteConfig:
    precision: str = "fp32"
    quantization: str = "static"  # int8 only

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TargetError(f"TFLite has no {self.precision} export.", f"Use one of: {', '.join(PRECISIONS)}.")
        if self.quantization not in QUANTIZATIONS:
            raise TargetError(
                f"Unknown TFLite quantisation {self.quantization!r}.", f"Use one of: {', '.join(QUANTIZATIONS)}."
            )

    @property
    def label(self) -> str:
        return "fp32" if self.precision == "fp32" else f"int8-{self.quantization}"


def convert(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    config: TFLiteConfig,
    *,
    calibration: torch.Tensor | None = None,
) -> bytes:
    """The ``.tflite`` bytes of ``model`` (int8: calibrated on ``calibration``), from the lowered-program cache
    when this content was converted before (:mod:`targets.program_cache`)."""
    model = model.eval()
    calibration = _calibrated_on(config, example_inputs, calibration)
    data, _ = cached_lowering("tflite", model, example_inputs, config,
                              lambda: (_convert(model, example_inputs, config, calibration=calibration), {}),
                              calibration=calibration, packages=("litert-torch",))  # fmt: skip
    return data


def _calibrated_on(
    config: TFLiteConfig, example_inputs: tuple[torch.Tensor, ...], calibration: torch.Tensor | None
) -> torch.Tensor | None:
    """What an int8 conversion's observers see: a dynamic one without calibration images runs the example input."""
    if config.precision == "int8" and calibration is None and config.quantization == "dynamic":
        return example_inputs[0]
    return calibration


def _convert(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    config: TFLiteConfig,
    *,
    calibration: torch.Tensor | None = None,
) -> bytes:
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its own progress lines would garble ours
    import litert_torch

    kwargs: dict[str, Any] = {}
    try:
        if config.precision == "int8":
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
            from litert_torch.quantize.quant_config import QuantConfig

            quantizer = PT2EQuantizer().set_global(
                get_symmetric_quantization_config(is_per_channel=True, is_dynamic=config.quantization == "dynamic")
            )
            # litert-torch folds the quantize ops itself; folded int8 weights fail its stablehlo lowering
            model = quantize_pt2e(model, example_inputs, calibration, quantizer, fold_quantize=False)
            kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
        edge_model = litert_torch.convert(model, example_inputs, **kwargs)
    except TargetError:
        raise
    except Exception as exc:
        raise UnsupportedOpError(
            f"litert-torch could not convert the model: {describe_failing_op(exc, model, example_inputs)}.",
            REWRITE_LAYER,
        ) from exc
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        edge_model.export(str(path))
        return path.read_bytes()


def config_from_options(precision: str, options: Any, **_: Any) -> TFLiteConfig:
    """The config that a build's export options ask for (the format registry's shared entry point)."""
    return TFLiteConfig(precision, options.tflite_quantization)


def export(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    out_path: Path,
    config: TFLiteConfig | None = None,
    *,
    calibration: torch.Tensor | None = None,
) -> Artifact:
    config = config or TFLiteConfig()
    started = time.perf_counter()
    data = convert(model, example_inputs, config, calibration=calibration)
    summary = {"quantization": config.quantization} if config.precision == "int8" else {}
    return Artifact.write(data, out_path, "tflite", "litert", config.precision, started, **summary, **op_summary(data))


def op_summary(data: bytes) -> dict[str, Any]:
    """Operator counts and tensor types of a ``.tflite`` (what the interpreter will run)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    ops: dict[str, int] = {}
    for detail in interpreter._get_ops_details():
        ops[detail["op_name"]] = ops.get(detail["op_name"], 0) + 1
    inputs = interpreter.get_input_details()
    return {"ops": ops, "input_dtype": np.dtype(inputs[0]["dtype"]).name}


class HostInterpreter:
    """A ``.tflite`` model in the host LiteRT interpreter (XNNPACK delegate); call it like the model.

    Float tensors go in and come out whatever the file's I/O types: int8 inputs are quantised with the file's
    scale/zero point and int8 outputs dequantised.
    """

    def __init__(self, model: bytes | Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        content = Path(model).read_bytes() if isinstance(model, Path | str) else model
        try:
            self._interpreter = Interpreter(model_content=content, num_threads=threads or 1)
            self._interpreter.allocate_tensors()
        except Exception as exc:
            raise TargetError(
                f"The LiteRT interpreter could not load the model: {first_line(exc)}.", "Re-export it."
            ) from exc
        self._inputs = self._interpreter.get_input_details()
        self._output = self._interpreter.get_output_details()[0]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        for detail, value in zip(self._inputs, inputs, strict=True):
            array = np.ascontiguousarray(value.detach().numpy(), dtype=np.float32)
            dtype = np.dtype(detail["dtype"])
            if dtype.kind in "iu":
                scale, zero_point = detail["quantization"]
                info = np.iinfo(dtype)
                array = np.clip(np.round(array / scale) + zero_point, info.min, info.max).astype(dtype)
            self._interpreter.set_tensor(detail["index"], array)
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._output["index"])
        if np.dtype(out.dtype).kind in "iu":
            scale, zero_point = self._output["quantization"]
            out = (out.astype(np.float32) - zero_point) * scale
        return torch.from_numpy(np.array(out, dtype=np.float32))


def load(path: Path, *, threads: int = 1, class_labels: list[str] | None = None, **_: Any) -> HostInterpreter:
    """A saved .tflite in the host interpreter (the format registry's loader)."""
    return HostInterpreter(path, threads=threads)


def lower_to_host(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    threads: int,
    precision: str = "fp32",
    calibration: torch.Tensor | None = None,
) -> HostInterpreter:
    """``model`` converted in memory (int8: static, calibrated on ``calibration``) and loaded in the interpreter."""
    data = convert(model, example_inputs, TFLiteConfig(precision), calibration=calibration)
    return HostInterpreter(data, threads=threads)


def prepare() -> None:
    """Import the host interpreter, so that load-time and memory measurements leave it out."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: F401


# -- the adapter contract's capabilities (targets._api.RuntimeAdapter) --------------------------------------------
def can_predict(backend: str = "xnnpack") -> bool:
    """The LiteRT interpreter runs on every host."""
    return True


def offline_check(path: Path, **_: Any) -> dict[str, Any] | None:
    """Nothing to check without running: the interpreter validates numerically."""
    return None


def delegation(path: Path, summary: dict[str, Any]) -> dict[str, Any] | None:
    """What XNNPACK took of a .tflite: one run under LiteRT's profiler shows which nodes ran inside the delegate
    (the interpreter's op list cannot tell); a profiler failure is recorded, not fatal to the artifact."""
    try:
        profile = parse_op_profile(profile_summary_apart(path, runs=1), runs=1)
    except ProfilerError as exc:
        return {"error": str(exc)}
    return {**litert_delegation(profile, dict(summary.get("ops") or {})), "outside_kernels": "TFLite builtin kernels"}


def write_companion(*_: Any, **__: Any) -> dict[str, Any] | None:
    """LiteRT has no bundled-program format."""
    return None


def write_op_profile(path: Path, out: Path, *, runs: int, threads: int, input_size: int) -> dict[str, Any]:
    """Run a .tflite ``runs`` times under LiteRT's profiler (its default threads) and write the summary to ``out``."""
    Path(out).write_text(profile_summary(Path(path), runs=runs))
    return {"artifact": Path(path).name, "op_profile": str(out), "runs": runs, "threads": "LiteRT default"}


def layer_record(*_: Any, **__: Any) -> Path | None:
    """LiteRT node names carry no layer: no record maps them."""
    return None
