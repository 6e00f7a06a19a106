"""The adapter contract: what every runtime module (``targets.executorch``, ``targets.tflite``, ``targets.coreml``)
implements, and the only surface its callers use.

A runtime module is the implementation (functions at module level, as PEP 544 allows modules to implement
protocols); the format registry (:mod:`targets.formats`) finds it by name and hands it out typed as
:class:`RuntimeAdapter`. A capability a runtime lacks answers ``None`` (no structural check, no companion file, no
layer record) instead of being missing, so no caller ever asks which runtime it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from targets._common import Artifact

HostModel = Callable[..., torch.Tensor]  # a loaded artifact: call it like the model, get logits


@runtime_checkable
class RuntimeAdapter(Protocol):
    """One runtime: export a model to its file, load the file on this host, and what can be checked about it."""

    PRECISIONS: tuple[str, ...]

    def config_from_options(self, precision: str, options: Any, **facts: Any) -> Any:
        """The runtime's export config for a build's export options (``facts``: classes, preprocessing, backend)."""

    def export(
        self,
        model: nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        out_path: Path,
        config: Any = None,
        *,
        calibration: torch.Tensor | None = None,
    ) -> Artifact:
        """Write the file atomically and describe it (size, sha256, op summary)."""

    def load(self, path: Path, *, threads: int = 1, class_labels: list[str] | None = None, **options: Any) -> HostModel:
        """The saved file in the host runtime (``options``: runtime-specific, e.g. Core ML's compute units)."""

    def lower_to_host(
        self,
        model: nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        *,
        threads: int,
        precision: str = "fp32",
        calibration: torch.Tensor | None = None,
    ) -> HostModel:
        """``model`` lowered in memory exactly as export would, loaded in the host runtime (for timing)."""

    def prepare(self) -> None:
        """Import and start the host runtime, so that load-time and memory measurements leave it out."""

    def can_predict(self, backend: str = "xnnpack") -> bool:
        """Whether this host can run the runtime's files (with ``backend``) and compare their outputs."""

    def offline_check(
        self,
        path: Path,
        *,
        backend: str = "xnnpack",
        input_shape: tuple[int, ...],
        num_classes: int,
        precision: str,
        class_labels: list[str] | None,
    ) -> dict[str, Any] | None:
        """What validation can say without running the file here: a structural check (Core ML's interface, ops and
        weight types), or why it cannot run on this host; None: validate numerically."""

    def delegation(self, path: Path, summary: dict[str, Any]) -> dict[str, Any] | None:
        """What the CPU delegate took of the file and which compute ops it left behind; None: not applicable."""

    def write_companion(
        self,
        model: nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        path: Path,
        config: Any,
        images: torch.Tensor,
        *,
        calibration: torch.Tensor | None = None,
    ) -> dict[str, Any] | None:
        """A file beside the artifact carrying validation inputs and expected outputs, verified (ExecuTorch's
        bundled program); returns its facts for the artifact's record, None where the runtime has none."""

    def write_op_profile(self, path: Path, out: Path, *, runs: int, threads: int, input_size: int) -> dict[str, Any]:
        """Run the file ``runs`` times under the runtime's own profiler and write what it records to ``out``."""

    def layer_record(
        self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], out: Path, *, expected_sha256: str
    ) -> Path | None:
        """A record that maps the runtime's operator events to the model's layers (ExecuTorch's ETRecord), written
        to ``out`` only when lowering ``model`` again gives the very bytes ``expected_sha256`` names."""
