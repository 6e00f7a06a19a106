"""Global fine-tune of the whole student with knowledge distillation (Hinton et al. 2015)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mobilelwt.checks import finite, whole
from mobilelwt.data import DataBundle
from mobilelwt.devices import mixed_precision, model_device
from mobilelwt.distributed import all_sum, data_parallel, lost_ranks_reported
from mobilelwt.evaluation import evaluate_set
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from mobilelwt.train import TrainConfig, cosine_with_warmup, make_optimizer, steps_per_epoch

VAL_BATCH = 128  # the compress stage's evaluation batch: the last epoch's numbers are the student's


@dataclass
class DistillConfig(TrainConfig):
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the soft (teacher) term; 1 - alpha on the labels
    lr: float | None = 1e-4
    warmup_epochs: float = 0.1
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        whole(self.epochs, "--finetune-epochs", low=0)
        whole(self.batch_size, "--finetune-batch-size", low=1)
        finite(self.lr, "--finetune-lr", low=0, strict=True)
        finite(self.temperature, "--temperature", low=0, strict=True)
        finite(self.alpha, "--alpha", low=0, high=1)
        super().__post_init__()


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None, config: DistillConfig
) -> torch.Tensor:
    t = config.temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    if labels is None or config.alpha >= 1.0:
        return soft
    hard = F.cross_entropy(student_logits, labels, label_smoothing=config.label_smoothing)
    return config.alpha * soft + (1.0 - config.alpha) * hard


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: DataBundle,
    config: DistillConfig,
    *,
    on_progress: ProgressCallback = ignore_progress,
) -> list[dict[str, float]]:
    """Fine-tune ``student`` against ``teacher``'s soft targets (and the labels); one record per epoch."""
    torch.manual_seed(config.seed)
    device = model_device(student)
    teacher.eval()
    steps = steps_per_epoch(data, config)
    optimizer = make_optimizer([p for p in student.parameters() if p.requires_grad], config)
    scheduler = cosine_with_warmup(optimizer, steps * config.epochs, round(steps * config.warmup_epochs))
    trainable = data_parallel(student)  # under torchrun: each rank distils on its share of every global batch
    history = []
    with lost_ranks_reported("the distillation fine-tune"):
        for epoch in range(config.epochs):
            student.train()
            started, loss_sum, seen, waited = time.perf_counter(), 0.0, 0, data.train.stats.wait_s
            limit = config.max_steps_per_epoch * config.batch_size if config.max_steps_per_epoch else None
            batches = data.train_batches(
                config.batch_size, seed=config.seed * 1000 + 500 + epoch, augment=config.augment, limit=limit
            )
            for step, (images, labels) in enumerate(batches):
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with mixed_precision(device):
                    with torch.no_grad():
                        teacher_logits = teacher(images).float()
                    loss = distillation_loss(trainable(images).float(), teacher_logits, labels, config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.item() * len(labels)
                seen += len(labels)
                on_progress(
                    ProgressEvent("distill", epoch * steps + step + 1, steps * config.epochs, {"loss": loss.item()})
                )
            seconds = time.perf_counter() - started
            loss_sum, seen = all_sum([loss_sum, seen], "the distillation fine-tune")
            val = evaluate_set(student, data, data.val, VAL_BATCH)
            history.append(
                {
                    "epoch": epoch + 1,
                    "loss": loss_sum / max(seen, 1),
                    "val_top1": val["top1"],
                    "val_top5": val["top5"],
                    "val_loss": val["loss"],
                    "val_images": val["images"],
                    "seconds": seconds,
                    "images_per_s": seen / max(seconds, 1e-9),
                    "data_wait_s": data.train.stats.wait_s - waited,
                }
            )
            on_progress(ProgressEvent("distill epochs", epoch + 1, config.epochs, history[-1]))
    student.eval()
    return history
