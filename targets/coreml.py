"""Core ML: ``torch.export`` -> ``coremltools.convert`` -> ``.mlpackage`` (ML Program).

fp16 compute by default (what the Neural Engine runs), fp32 on request; optional weight compression after
conversion (``int8`` linear, ``palettize4``/``palettize6`` lookup tables). The input is a named tensor of
*normalised* pixels (the mean/std are written into the model's description); a ``ClassifierConfig`` with the
class labels makes the model a classifier (``classLabel`` + ``classLabel_probs``, the teacher's logits).

coremltools converts on Linux, but only macOS can run a model: elsewhere :func:`structural_check` inspects the
saved package (spec, input/output names and shapes, op counts, weight compression) instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from targets._common import REWRITE_LAYER, Artifact, TargetError, UnsupportedOpError, describe_failing_op, replace_dir

PRECISIONS = ("fp16", "fp32", "int8")  # int8: int8 weights on fp16 compute
WEIGHT_COMPRESSION = ("none", "int8", "palettize4", "palettize6")
DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18")
INPUT_NAME = "image"
MIN_COMPRESSED_WEIGHTS = 1024  # smaller tensors (biases, tiny kernels) stay fp16: compressing them saves nothing


@dataclass
class CoreMLConfig:
    precision: str = "fp16"
    weights: str = "none"
    deployment_target: str = "iOS16"
    class_labels: list[str] | None = None
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TargetError(f"Core ML has no {self.precision} export.", f"Use one of: {', '.join(PRECISIONS)}.")
        if self.weights not in WEIGHT_COMPRESSION:
            raise TargetError(
                f"Unknown Core ML weight compression {self.weights!r}.", f"Use one of: {', '.join(WEIGHT_COMPRESSION)}."
            )
        if self.deployment_target not in DEPLOYMENT_TARGETS:
            raise TargetError(
                f"Unknown deployment target {self.deployment_target!r}.",
                f"Use one of: {', '.join(DEPLOYMENT_TARGETS)}.",
            )
        if self.precision == "int8" and self.weights == "none":
            self.weights = "int8"

    @property
    def compute_precision(self) -> str:
        return "fp32" if self.precision == "fp32" else "fp16"


@contextlib.contextmanager
def _quiet_import():
    # coremltools reports each missing native (macOS-only) library on import; on Linux that is expected
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield


def import_coremltools():
    # its import reports each macOS-only library and untested torch/sklearn version as a warning: noise on Linux
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with _quiet_import():
        import coremltools

    return coremltools


def convert(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], config: CoreMLConfig) -> Any:
    """The in-memory ``MLModel`` (weights compressed as configured)."""
    ct = import_coremltools()
    model = model.eval()
    shape = tuple(example_inputs[0].shape)
    try:
        exported = torch.export.export(model, example_inputs).run_decompositions({})
        with _quiet_import():
            mlmodel = ct.convert(
                exported,
                # float32 in whatever the compute precision: one interface for every variant of a model
                inputs=[ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)],
                outputs=None if config.class_labels else [ct.TensorType(name="logits")],
                classifier_config=ct.ClassifierConfig(list(config.class_labels)) if config.class_labels else None,
                compute_precision=ct.precision.FLOAT32 if config.compute_precision == "fp32" else ct.precision.FLOAT16,
                minimum_deployment_target=getattr(ct.target, config.deployment_target),
                convert_to="mlprogram",
            )
    except Exception as exc:
        raise UnsupportedOpError(
            f"coremltools could not convert the model: {describe_failing_op(exc, model, example_inputs)}.",
            REWRITE_LAYER,
        ) from exc
    with _quiet_import():  # coremltools' own progress bars
        mlmodel = _compress_weights(mlmodel, config.weights)
    _describe(mlmodel, config, shape)
    return mlmodel


def _compress_weights(mlmodel: Any, weights: str) -> Any:
    if weights == "none":
        return mlmodel
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OpPalettizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
        palettize_weights,
    )

    if weights == "int8":
        config = OptimizationConfig(
            global_config=OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=MIN_COMPRESSED_WEIGHTS)
        )
        return linear_quantize_weights(mlmodel, config)
    nbits = int(weights.removeprefix("palettize"))
    config = OptimizationConfig(global_config=OpPalettizerConfig(nbits=nbits, weight_threshold=MIN_COMPRESSED_WEIGHTS))
    return palettize_weights(mlmodel, config)


def _describe(mlmodel: Any, config: CoreMLConfig, shape: tuple[int, ...]) -> None:
    normalisation = (
        f"RGB pixels scaled to [0, 1], then (x - mean) / std per channel with mean {list(config.mean)} and std "
        f"{list(config.std)}"
        if config.mean
        else "as the PyTorch model expects"
    )
    mlmodel.short_description = config.metadata.get("description", "mobilelwt export")
    mlmodel.input_description[INPUT_NAME] = f"Float tensor {list(shape)} (NCHW): {normalisation}."
    mlmodel.user_defined_metadata.update(
        {
            "mobilelwt.precision": config.precision,
            "mobilelwt.weights": config.weights,
            "mobilelwt.mean": ",".join(f"{v:g}" for v in config.mean),
            "mobilelwt.std": ",".join(f"{v:g}" for v in config.std),
            **config.metadata,
        }
    )


def config_from_options(
    precision: str, options: Any, *, classes: list[str], preprocessing: dict[str, Any], **_: Any
) -> CoreMLConfig:
    """The config that a build's export options ask for (the format registry's shared entry point)."""
    return CoreMLConfig(
        precision=precision,
        weights=options.coreml_weights or ("int8" if precision == "int8" else "none"),
        deployment_target=options.coreml_deployment_target,
        class_labels=classes,
        mean=tuple(preprocessing["mean"]),
        std=tuple(preprocessing["std"]),
        metadata={"description": preprocessing["description"]},
    )


def export(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    out_path: Path,
    config: CoreMLConfig | None = None,
    *,
    calibration: torch.Tensor | None = None,  # unused: Core ML int8 compresses weights only
) -> Artifact:
    """Write ``out_path`` (an ``.mlpackage`` directory) atomically: saved under a temp name, then renamed."""
    config = config or CoreMLConfig()
    started = time.perf_counter()
    mlmodel = convert(model, example_inputs, config)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        package = tmp / out_path.name
        with _quiet_import():
            mlmodel.save(str(package))
        replace_dir(package, out_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {
        "deployment_target": config.deployment_target,
        "compute_precision": config.compute_precision,
        "weights": config.weights,
        "ops": dict(spec_ops(load_spec(out_path))),
    }
    return Artifact.from_path(out_path, "mlpackage", "coreml", config.precision, started, **summary)


def load_spec(path: Path) -> Any:
    ct = import_coremltools()
    try:
        with _quiet_import():
            return ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except Exception as exc:
        raise TargetError(f"{path} is not a loadable Core ML package ({exc}).", "Re-export it.") from exc


def spec_ops(spec: Any) -> Counter:
    ops: Counter = Counter()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                ops[op.type] += 1
    return ops


def constant_dtypes(spec: Any) -> Counter:
    """How many constants (weights, mostly) the program stores in each data type (FLOAT16, FLOAT32, INT8...)."""
    from coremltools.proto import MIL_pb2

    dtypes: Counter = Counter()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type == "const":
                    dtypes[MIL_pb2.DataType.Name(op.outputs[0].type.tensorType.dataType)] += 1
    return dtypes


def structural_check(
    path: Path, *, input_shape: tuple[int, ...], num_classes: int, precision: str, class_labels: list[str] | None
) -> dict[str, Any]:
    """What can be verified without macOS: the spec loads and has the expected interface, ops and weights."""
    failures: list[str] = []
    spec = load_spec(path)
    description = spec.description
    inputs = {i.name: list(i.type.multiArrayType.shape) for i in description.input}
    outputs = [o.name for o in description.output]
    if inputs != {INPUT_NAME: list(input_shape)}:
        failures.append(f"inputs {inputs} != {{{INPUT_NAME!r}: {list(input_shape)}}}")
    if spec.WhichOneof("Type") != "mlProgram":
        failures.append(f"model type {spec.WhichOneof('Type')} is not an ML Program")
    ops = spec_ops(spec)
    if class_labels:
        labels = _class_labels(spec)
        if labels != list(class_labels):
            failures.append(f"class labels {labels[:5]}... differ from the build's {list(class_labels)[:5]}...")
        if description.predictedFeatureName != "classLabel":
            failures.append("no classLabel output")
    elif len(outputs) != 1:
        failures.append(f"expected one logits output, found {outputs}")
    compressed = ops.get("constexpr_affine_dequantize", 0) + ops.get("constexpr_lut_to_dense", 0)
    compressed += ops.get("constexpr_blockwise_shift_scale", 0)
    if precision == "int8" and compressed == 0:
        failures.append("no compressed (int8) weights found")
    dtypes = constant_dtypes(spec)
    if precision == "fp16" and dtypes.get("FLOAT16", 0) == 0:
        failures.append("no fp16 constants: the model does not compute in fp16")
    if precision == "fp32" and dtypes.get("FLOAT16", 0) > 0:
        failures.append("fp16 constants in an fp32 model")
    if sum(ops.values()) == 0:
        failures.append("the program has no operations")
    return {
        "artifact": Path(path).name,
        "precision": precision,
        "kind": "structural",
        "numeric": "needs macOS (Core ML prediction runs only on Apple platforms)",
        "inputs": inputs,
        "outputs": outputs,
        "num_classes": num_classes,
        "ops": dict(ops),
        "compressed_weight_ops": compressed,
        "constant_dtypes": dict(dtypes),
        "specification_version": spec.specificationVersion,
        "passed": not failures,
        "failures": failures,
    }


def _class_labels(spec: Any) -> list[str]:
    """The labels an ML Program classifier carries (the ``classes`` argument of its ``classify`` op)."""
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type == "classify":
                    values = op.inputs["classes"].arguments[0].value.immediateValue.list.values
                    return [v.immediateValue.tensor.strings.values[0] for v in values]
    return []


def can_predict(backend: str = "xnnpack") -> bool:
    """Core ML predicts only on macOS."""
    return sys.platform == "darwin"


class HostModel:
    """A ``.mlpackage`` run by Core ML (macOS only); call it like the model, get logits in class order."""

    def __init__(self, path: Path, class_labels: list[str] | None = None, compute_units: str = "ALL") -> None:
        if not can_predict():
            raise TargetError("Core ML models run only on macOS.", "Validate on a Mac, or use structural_check.")
        ct = import_coremltools()
        self._model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        self._labels = class_labels

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        out = self._model.predict({INPUT_NAME: image.numpy()})
        if self._labels:
            probs = out["classLabel_probs"]
            return torch.tensor([[float(probs[label]) for label in self._labels]])
        return torch.from_numpy(next(iter(out.values()))).float()


def load(
    path: Path, *, threads: int = 1, class_labels: list[str] | None = None, compute_units: str = "ALL", **_: Any
) -> HostModel:
    """A saved .mlpackage through coremltools (macOS only; the format registry's loader)."""
    return HostModel(path, class_labels=class_labels, compute_units=compute_units)


def lower_to_host(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], *, threads: int, **_: Any) -> HostModel:
    raise TargetError(
        "Core ML has no host runtime here: timing a model needs macOS.", "Use --latency-runtime executorch or litert."
    )


def prepare() -> None:
    """Import coremltools, so that load-time and memory measurements leave it out."""
    import_coremltools()


# -- the adapter contract's capabilities (targets._api.RuntimeAdapter) --------------------------------------------
def offline_check(
    path: Path,
    *,
    backend: str = "xnnpack",
    input_shape: tuple[int, ...],
    num_classes: int,
    precision: str,
    class_labels: list[str] | None,
) -> dict[str, Any] | None:
    """The structural check: what can be verified without macOS."""
    return structural_check(
        path, input_shape=input_shape, num_classes=num_classes, precision=precision, class_labels=class_labels
    )


def delegation(path: Path, summary: dict[str, Any]) -> dict[str, Any] | None:
    """Core ML places work on CPU, GPU or Neural Engine at load time on the device: nothing to say here."""
    return None


def write_companion(*_: Any, **__: Any) -> dict[str, Any] | None:
    """Core ML has no bundled-program format."""
    return None


def write_op_profile(path: Path, out: Path, *, runs: int, threads: int, input_size: int) -> dict[str, Any]:
    raise TargetError("Core ML operator profiles come from Xcode's Core ML instrument.", "Profile it on a Mac.")


def layer_record(*_: Any, **__: Any) -> Path | None:
    return None
