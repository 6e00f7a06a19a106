"""Classification accuracy of a model on labelled images."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from mobilelwt.devices import model_device
from mobilelwt.distributed import all_sum, shard_range

if TYPE_CHECKING:
    from mobilelwt.data import DataBundle, ImageSet


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many rows have their label among the top-k logits, for each k (k is capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top == labels.view(-1, 1)
    return [int(hits[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """top-1/top-5 accuracy (percent) and mean cross-entropy over ``batches``."""
    return _summary(*_counts(model, batches, on_batch))


def evaluate_set(model: nn.Module, data: DataBundle, images: ImageSet, batch_size: int = 256) -> dict[str, float]:
    """:func:`evaluate` on ``images`` with ``data``'s preprocessing; under torchrun every rank evaluates its share
    and the counts are summed, so each rank gets the numbers of the whole set."""
    idx = shard_range(len(images))
    batches = ((data.normalize(x), y) for x, y in images.chunks(idx, batch_size))
    return _summary(*all_sum(_counts(model, batches, None), "evaluation"))


@torch.no_grad()
def _counts(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], on_batch: Callable[[int], None] | None
) -> tuple[float, float, float, float]:
    was_training = model.training
    model.eval()
    device = model_device(model)
    n = correct1 = correct5 = 0
    loss = 0.0
    try:
        for images, labels in batches:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            logits = model(images).float()
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            c1, c5 = topk_correct(logits, labels)
            correct1, correct5, n = correct1 + c1, correct5 + c5, n + len(labels)
            if on_batch:
                on_batch(len(labels))
    finally:
        model.train(was_training)
    return n, correct1, correct5, loss


def _summary(n: float, correct1: float, correct5: float, loss: float) -> dict[str, float]:
    if n == 0:
        return {"top1": float("nan"), "top5": float("nan"), "loss": float("nan"), "images": 0}
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss / n, "images": int(n)}


def paired_drop(
    teacher_hits: str, student_hits: str, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Top-1 of teacher and student on the same images (per-image hits, '1' right / '0' wrong), the drop in points
    and its bootstrap interval over images (paired: each resample draws the same images for both)."""
    import numpy as np

    if len(teacher_hits) != len(student_hits) or not teacher_hits:
        raise ValueError("teacher and student must be scored on the same, non-empty list of images")
    t = np.frombuffer(teacher_hits.encode(), dtype=np.uint8) - ord("0")
    s = np.frombuffer(student_hits.encode(), dtype=np.uint8) - ord("0")
    diff = (t.astype(np.float64) - s) * 100.0
    rng = np.random.default_rng(seed)
    draws = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return {
        "images": len(diff),
        "teacher_top1": float(t.mean() * 100.0),
        "student_top1": float(s.mean() * 100.0),
        "top1_drop": float(diff.mean()),
        "top1_drop_ci95": [float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail))],
    }
