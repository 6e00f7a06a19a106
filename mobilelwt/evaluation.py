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
