"""One validation routine for every artifact: compare a host runtime's outputs with the PyTorch model's.

Each artifact is run over real images; the result records max abs diff, SQNR, top-1 agreement and the
artifact's own top-1/top-5. :func:`check` collects every failing artifact before raising one typed error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from targets._common import TargetError


@dataclass(frozen=True)
class Thresholds:
    max_abs_diff: float | None  # None: not checked (quantised outputs move by whole steps)
    min_sqnr_db: float
    min_top1_agreement: float


THRESHOLDS = {
    "fp32": Thresholds(max_abs_diff=1e-3, min_sqnr_db=60.0, min_top1_agreement=0.99),
    "fp16": Thresholds(max_abs_diff=None, min_sqnr_db=30.0, min_top1_agreement=0.97),
    "int8": Thresholds(max_abs_diff=None, min_sqnr_db=15.0, min_top1_agreement=0.90),
}


@dataclass
class ValidationResult:
    artifact: str
    precision: str
    images: int
    max_abs_diff: float
    sqnr_db: float
    top1_agreement: float
    top1: float
    top5: float
    reference_top1: float
    passed: bool
    failures: list[str] = field(default_factory=list)
    # per image, in order: 1 where the top-1 class was right (the artifact's, and the PyTorch model's), so that
    # teacher and student can be compared image by image (a paired interval of the drop)
    hits: str = ""
    reference_hits: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ValidationError(TargetError):
    """One or more artifacts do not compute what the PyTorch model computes."""

    def __init__(self, results: list[ValidationResult]) -> None:
        failing = [r for r in results if not r.passed]
        details = "; ".join(f"{r.artifact}: {', '.join(r.failures)}" for r in failing)
        super().__init__(
            f"{len(failing)} artifact(s) failed validation against PyTorch: {details}.",
            "Inspect the validation JSON beside each artifact; re-export, or use a higher precision.",
        )
        self.results = results


def sqnr_db(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Signal-to-quantisation-noise ratio of ``candidate`` against ``reference``, in dB (inf when identical)."""
    noise = float(((reference - candidate) ** 2).sum())
    signal = float((reference**2).sum())
    return math.inf if noise == 0 else 10.0 * math.log10(max(signal, 1e-30) / noise)


@torch.no_grad()
def validate(
    name: str,
    run: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    precision: str = "fp32",
    thresholds: Thresholds | None = None,
) -> ValidationResult:
    """Run ``run`` (a host runtime, batch-1 inputs) and ``model`` on every image of ``batches`` and compare."""
    limits = thresholds or THRESHOLDS[precision]
    model.eval()
    ref_logits, art_logits, labels = [], [], []
    for images, batch_labels in batches:
        ref_logits.append(model(images))
        art_logits.append(torch.cat([run(image.unsqueeze(0)).reshape(1, -1).float() for image in images]))
        labels.append(batch_labels)
    if not ref_logits:
        raise TargetError(f"No images to validate {name} on.", "Pass a dataset with validation images.")
    reference, produced, target = torch.cat(ref_logits), torch.cat(art_logits), torch.cat(labels)
    if produced.shape != reference.shape:
        raise TargetError(
            f"{name} returns outputs of shape {tuple(produced.shape[1:])}, the model {tuple(reference.shape[1:])}.",
            "Re-export the artifact from this model.",
        )
    max_abs = float((reference - produced).abs().max())
    sqnr = sqnr_db(reference, produced)
    agreement = float((reference.argmax(1) == produced.argmax(1)).float().mean())
    k = min(5, produced.shape[1])
    top5 = float((produced.topk(k, 1).indices == target[:, None]).any(1).float().mean()) * 100
    failures = []
    if limits.max_abs_diff is not None and max_abs > limits.max_abs_diff:
        failures.append(f"max abs diff {max_abs:.3g} > {limits.max_abs_diff:g}")
    if sqnr < limits.min_sqnr_db:
        failures.append(f"SQNR {sqnr:.1f} dB < {limits.min_sqnr_db:g} dB")
    if agreement < limits.min_top1_agreement:
        failures.append(f"top-1 agreement {agreement:.3f} < {limits.min_top1_agreement:g}")
    return ValidationResult(
        artifact=name,
        precision=precision,
        images=len(target),
        max_abs_diff=max_abs,
        sqnr_db=sqnr,
        top1_agreement=agreement,
        top1=float((produced.argmax(1) == target).float().mean()) * 100,
        top5=top5,
        reference_top1=float((reference.argmax(1) == target).float().mean()) * 100,
        passed=not failures,
        failures=failures,
        hits=_hits(produced, target),
        reference_hits=_hits(reference, target),
    )


def _hits(logits: torch.Tensor, target: torch.Tensor) -> str:
    return "".join("1" if hit else "0" for hit in (logits.argmax(1) == target).tolist())


def check(results: list[ValidationResult]) -> list[ValidationResult]:
    """Raise one :class:`ValidationError` naming every failing artifact; return ``results`` if all passed."""
    if any(not r.passed for r in results):
        raise ValidationError(results)
    return results
