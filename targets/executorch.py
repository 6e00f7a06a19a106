"""ExecuTorch: ``torch.export`` -> edge -> delegate (XNNPACK, or Core ML for iOS) -> ``.pte``.

int8 uses PT2E: ``XNNPACKQuantizer`` (per-channel symmetric weights, per-tensor activations) calibrated on real
images, then lowered to XNNPACK. Host runs go through ``executorch.runtime``; a Core ML–delegated program only
loads on Apple runtimes.
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.io import atomic_path
from targets._common import (
    REWRITE_LAYER,
    Artifact,
    TargetError,
    UnsupportedOpError,
    describe_failing_op,
    first_line,
    is_compute_op,
)
from targets.program_cache import cached_lowering
from targets.quantize import quantize_pt2e

PRECISIONS = ("fp32", "int8")
BACKENDS = ("xnnpack", "coreml")


@dataclass
class ExecuTorchConfig:
    precision: str = "fp32"
    backend: str = "xnnpack"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TargetError(f"ExecuTorch has no {self.precision} export.", f"Use one of: {', '.join(PRECISIONS)}.")
        if self.backend not in BACKENDS:
            raise TargetError(f"Unknown ExecuTorch backend {self.backend!r}.", f"Use one of: {', '.join(BACKENDS)}.")
        if self.backend == "coreml" and self.precision != "fp32":
            raise TargetError("The Core ML delegate takes an fp32 program.", "Use --precision fp32 for it.")


def _partitioner(backend: str) -> Any:
    if backend == "coreml":
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        return CoreMLPartitioner()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return XnnpackPartitioner()


def op_summary(graph: torch.fx.Graph) -> dict[str, Any]:
    """How much of the lowered graph a delegate took: delegate calls and the ops left to the portable kernels."""
    delegated, portable = 0, Counter()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if "call_delegate" in name:
            delegated += 1
        elif name not in ("getitem",):
            portable[name] += 1
    return {"delegate_calls": delegated, "portable_ops": dict(portable)}


def lower(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    config: ExecuTorchConfig,
    *,
    calibration: torch.Tensor | None = None,
    keep_manager: list | None = None,
    etrecord: list | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """The ``.pte`` program bytes of ``model`` and a summary of what was delegated.

    ``keep_manager`` (a list) receives the ExecuTorch program manager, for bundling test cases with it;
    ``etrecord`` (a list) the program's ETRecord (graph and debug handles: what maps profiled events to layers).
    Without either, the program comes from the lowered-program cache when this content was lowered before
    (:mod:`targets.program_cache`).
    """
    model = model.eval()
    if keep_manager is None and etrecord is None:  # those need the lowering's own objects, not only its bytes
        return cached_lowering("pte", model, example_inputs, config,
                               lambda: _lower(model, example_inputs, config, calibration=calibration),
                               calibration=calibration, packages=("executorch",))  # fmt: skip
    return _lower(model, example_inputs, config, calibration=calibration, keep_manager=keep_manager,
                  etrecord=etrecord)  # fmt: skip


def _lower(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    config: ExecuTorchConfig,
    *,
    calibration: torch.Tensor | None = None,
    keep_manager: list | None = None,
    etrecord: list | None = None,
) -> tuple[bytes, dict[str, Any]]:
    from executorch.exir import to_edge_transform_and_lower

    if config.precision == "int8":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        try:
            model = quantize_pt2e(model, example_inputs, calibration, quantizer)
        except TargetError:
            raise
        except Exception as exc:
            raise unsupported("ExecuTorch int8 quantisation", exc, model, example_inputs) from exc
    try:
        exported = torch.export.export(model, example_inputs)
        edge = to_edge_transform_and_lower(
            exported, partitioner=[_partitioner(config.backend)], generate_etrecord=etrecord is not None
        )
        summary = op_summary(edge.exported_program().graph)
        program = edge.to_executorch()
        if keep_manager is not None:
            keep_manager.append(program)
        if etrecord is not None:
            etrecord.append(program.get_etrecord())
    except TargetError:
        raise
    except Exception as exc:  # lowering errors come from deep inside exir with many types
        raise unsupported("ExecuTorch", exc, model, example_inputs) from exc
    return program.buffer, summary


def unsupported(
    runtime: str, exc: BaseException, model: nn.Module, example_inputs: tuple[torch.Tensor, ...]
) -> UnsupportedOpError:
    """An error naming the operator and the layer (as far as the graph tells) that ``runtime`` could not handle."""
    return UnsupportedOpError(
        f"{runtime} could not lower the model: {describe_failing_op(exc, model, example_inputs)}.",
        REWRITE_LAYER,
    )


def config_from_options(precision: str, options: Any, *, backend: str = "xnnpack", **_: Any) -> ExecuTorchConfig:
    """The config that a build's export options ask for (the format registry's shared entry point)."""
    return ExecuTorchConfig(precision, backend)


def export(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    out_path: Path,
    config: ExecuTorchConfig | None = None,
    *,
    calibration: torch.Tensor | None = None,
) -> Artifact:
    config = config or ExecuTorchConfig()
    started = time.perf_counter()
    buffer, summary = lower(model, example_inputs, config, calibration=calibration)
    return Artifact.write(
        buffer, out_path, "pte", "executorch", config.precision, started, backend=config.backend, **summary
    )


def bundle(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    config: ExecuTorchConfig,
    images: torch.Tensor,
    *,
    calibration: torch.Tensor | None = None,
    expected: nn.Module | None = None,
) -> bytes:
    """A BundledProgram: the program plus ``images`` and the outputs the host runtime computes for them.

    The expected outputs come from running this very program on the host (``expected`` overrides them with a
    PyTorch model's), so a device that verifies the bundle computes what the validated host run computed —
    for int8 programs too, whose outputs differ from PyTorch's by design.
    """
    from executorch.devtools import BundledProgram
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    managers: list = []
    buffer, _ = lower(model, example_inputs, config, calibration=calibration, keep_manager=managers)
    reference = expected if expected is not None else HostProgram(buffer)
    with torch.no_grad():
        cases = [MethodTestCase(inputs=(x[None],), expected_outputs=(reference(x[None]),)) for x in images]
    suite = MethodTestSuite(method_name="forward", test_cases=cases)
    return serialize_from_bundled_program_to_flatbuffer(BundledProgram(managers[0], [suite]))


def verify_bundle(data: bytes, *, rtol: float, atol: float) -> dict[str, Any]:
    """Run every bundled test case in the host runtime and compare with the bundled expected outputs."""
    _runtime()
    from executorch.extension.pybindings.portable_lib import _load_bundled_program_from_buffer

    bundled = _load_bundled_program_from_buffer(data)
    cases = len(BundledCases(data))
    failures = []
    for index in range(cases):
        try:  # loads the case's inputs, runs the method, compares with the bundled outputs
            bundled.verify_result_with_bundled_expected_output("forward", index, rtol, atol)
        except Exception as exc:  # the runtime reports a mismatch as a generic error
            failures.append(f"case {index}: {first_line(exc)}")
    return {"cases": cases, "passed": not failures, "failures": failures, "rtol": rtol, "atol": atol}


class BundledCases(list):
    """The test cases of a serialised BundledProgram (their count is what verification iterates over)."""

    def __init__(self, data: bytes) -> None:
        from executorch.devtools.bundled_program.serialize import deserialize_from_flatbuffer_to_bundled_program

        program = deserialize_from_flatbuffer_to_bundled_program(data)
        super().__init__(program.method_test_suites[0].test_cases)


def _runtime() -> Any:
    """``executorch.runtime``, imported without the exporter where it is not loaded yet.

    The pybindings module imports ``executorch.exir._warnings`` for one warning class, and that import runs the
    whole exporter package (torch._dynamo, inductor): about 4 of the 5 s a timing process or a phone's runner takes
    to start. A process that only loads ``.pte`` files gets the warning module alone; the stand-in parent is
    removed again at once, so a later ``import executorch.exir`` in the same process is the real one.
    """
    import sys

    if "executorch.extension.pybindings.portable_lib" not in sys.modules and "executorch.exir" not in sys.modules:
        # any surprise in the wheel's layout: the ordinary (slow) import below still works
        with contextlib.suppress(Exception):
            _import_pybindings_alone()
    import executorch.runtime

    return executorch.runtime


def _import_pybindings_alone() -> None:
    import importlib.util
    import sys
    import types

    import executorch

    warnings_file = Path(executorch.__path__[0]) / "exir" / "_warnings.py"
    spec = importlib.util.spec_from_file_location("executorch.exir._warnings", warnings_file)
    if spec is None or spec.loader is None:
        return
    warnings_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(warnings_module)
    stand_in = types.ModuleType("executorch.exir")
    stand_in.__path__ = []  # a package with nothing else in it
    stand_in._warnings = warnings_module  # type: ignore[attr-defined]
    sys.modules["executorch.exir"], sys.modules["executorch.exir._warnings"] = stand_in, warnings_module
    try:
        import executorch.extension.pybindings.portable_lib  # noqa: F401
    finally:
        for name in ("executorch.exir._warnings", "executorch.exir"):
            if sys.modules.get(name) in (stand_in, warnings_module):
                del sys.modules[name]
        if getattr(executorch, "exir", None) is stand_in:
            del executorch.exir


def set_threads(threads: int) -> None:
    _runtime()
    from executorch.extension.pybindings import portable_lib

    # a reset recreates the pool's threads and logs a line: only when the count changes (a build loads dozens of
    # programs at the same count)
    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


class HostProgram:
    """A ``.pte`` loaded in the host ExecuTorch runtime; call it like the model."""

    def __init__(self, program: bytes | Path, threads: int | None = None) -> None:
        Runtime = _runtime().Runtime

        if threads:
            set_threads(threads)
        # the runtime reads the program in place: the bytes must outlive the loaded method
        self._data = Path(program).read_bytes() if isinstance(program, Path | str) else program
        try:
            self._program = Runtime.get().load_program(self._data)
            self._method = self._program.load_method("forward")
        except Exception as exc:
            raise TargetError(
                f"The host ExecuTorch runtime could not load the program: {first_line(exc)}.",
                "Re-export it; a Core ML-delegated .pte only loads on Apple devices.",
            ) from exc

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._method.execute(list(inputs))[0]


def load(path: Path, *, threads: int = 1, class_labels: list[str] | None = None, **_: Any) -> HostProgram:
    """A saved .pte in the host runtime (the format registry's loader)."""
    return HostProgram(path, threads=threads)


def lower_to_host(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    threads: int,
    precision: str = "fp32",
    calibration: torch.Tensor | None = None,
) -> HostProgram:
    """``model`` lowered in memory (int8: calibrated on ``calibration``) and loaded in the host runtime."""
    program = lower(model, example_inputs, ExecuTorchConfig(precision), calibration=calibration)[0]
    return HostProgram(program, threads=threads)


def prepare() -> None:
    """Import and start the host runtime, so that load-time and memory measurements leave it out."""
    _runtime().Runtime.get()


# -- the adapter contract's capabilities (targets._api.RuntimeAdapter) --------------------------------------------
def can_predict(backend: str = "xnnpack") -> bool:
    """The host runtime runs XNNPACK programs; a program delegated to Core ML loads only on Apple runtimes."""
    return backend != "coreml"


def offline_check(
    path: Path,
    *,
    backend: str = "xnnpack",
    input_shape: tuple[int, ...],
    num_classes: int,
    precision: str,
    class_labels: list[str] | None,
) -> dict[str, Any] | None:
    """Nothing to check without running an XNNPACK program; a Core ML–delegated one cannot run here at all."""
    if can_predict(backend):
        return None
    return {
        "artifact": Path(path).name,
        "kind": "none",
        "numeric": "needs an Apple device: the Core ML delegate does not load in the host runtime",
        "passed": True,
        "failures": [],
    }


def delegation(path: Path, summary: dict[str, Any]) -> dict[str, Any] | None:
    """What XNNPACK took of a program: delegate calls, ops left to the portable kernels, and which of those carry
    compute (convolutions, matrix products). None for a program delegated elsewhere."""
    if summary.get("backend", "xnnpack") != "xnnpack":
        return None
    portable = dict(summary.get("portable_ops") or {})
    return {
        "delegate_calls": summary.get("delegate_calls", 0),
        "portable_ops": portable,
        "undelegated_compute_ops": sorted(op for op in portable if is_compute_op(op)),
        "outside_kernels": "portable kernels",
    }


def write_companion(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    config: ExecuTorchConfig,
    images: torch.Tensor,
    *,
    calibration: torch.Tensor | None = None,
) -> dict[str, Any] | None:
    """``<file>.bpte`` beside the .pte (program + validation images + expected outputs), verified here."""
    if config.backend != "xnnpack":
        return None
    data = bundle(model, example_inputs, ExecuTorchConfig(config.precision), images, calibration=calibration)
    bundled_path = Path(path).with_suffix(".bpte")
    with atomic_path(bundled_path) as tmp:
        tmp.write_bytes(data)
    check = verify_bundle(data, rtol=1e-3, atol=1e-4)
    return {"bundled": bundled_path.name, "bundled_cases": check["cases"], "bundled_verified": check["passed"]}


def write_op_profile(path: Path, out: Path, *, runs: int, threads: int, input_size: int) -> dict[str, Any]:
    """Run a .pte ``runs`` times with the event tracer on and write its ETDump to ``out``."""
    Runtime = _runtime().Runtime

    set_threads(threads)
    program = Runtime.get().load_program(Path(path), enable_etdump=True, debug_buffer_size=0)
    method = program.load_method("forward")
    example = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    for _ in range(runs):
        method.execute([example])
    out = Path(out)
    program.write_etdump_result_to_file(str(out), str(out.with_name(out.name + ".debug")))
    return {"artifact": Path(path).name, "etdump": str(out), "runs": runs, "threads": threads,
            "platform": platform.platform(), "machine": platform.machine()}  # fmt: skip


def layer_record(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], out: Path, *, expected_sha256: str
) -> Path | None:
    """The ETRecord of ``model`` lowered again (fp32, XNNPACK), written to ``out`` only when that gives the very
    bytes of the artifact (then its debug handles are the artifact's)."""
    records: list = []
    buffer, _ = lower(model, example_inputs, ExecuTorchConfig("fp32", "xnnpack"), etrecord=records)
    if hashlib.sha256(buffer).hexdigest() != expected_sha256:
        return None
    records[0].save(str(out))
    return Path(out)
