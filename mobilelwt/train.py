"""Supervised training of a classifier, and ``train_teacher``: adapt a teacher to a dataset and save it."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mobilelwt.checks import check_writable_file, finite, whole
from mobilelwt.data import DataBundle, default_input_size, load_data
from mobilelwt.data.images import LoaderSettings, default_workers
from mobilelwt.devices import mixed_precision, model_device, resolve_device
from mobilelwt.distributed import (
    all_sum,
    broadcast_module,
    data_parallel,
    init_distributed,
    lost_ranks_reported,
    on_main,
    rank_batch_size,
    world,
)
from mobilelwt.errors import ConfigError
from mobilelwt.evaluation import evaluate_set
from mobilelwt.hashing import sha256_file
from mobilelwt.io import atomic_path, write_json
from mobilelwt.manifest import build_manifest
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from mobilelwt.settings import RunSettings
from mobilelwt.teachers import Teacher, build_teacher, check_input_size, check_model
from mobilelwt.weights import checkpoint_metadata

OPTIMIZERS = ("sgd", "adamw")
CHECKPOINT_FORMAT = "mobilelwt.teacher/1"


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float | None = None  # None: 0.01 for SGD, 5e-4 for AdamW
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    augment: bool = True
    seed: int = 0
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Unknown optimizer {self.optimizer!r}.", f"Use one of: {', '.join(OPTIMIZERS)}.")

        whole(self.epochs, "--epochs", low=0)
        whole(self.batch_size, "--batch-size", low=1)
        if self.lr is not None:
            finite(self.lr, "--lr", low=0, strict=True)
        finite(self.weight_decay, "--weight-decay", low=0)
        finite(self.momentum, "--momentum", low=0, high=1)
        finite(self.label_smoothing, "--label-smoothing", low=0, high=0.99)
        finite(self.warmup_epochs, "--warmup-epochs", low=0)
        whole(self.max_steps_per_epoch, "--max-steps-per-epoch", low=1, optional=True)

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.01 if self.optimizer == "sgd" else 5e-4


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=True,
            fused=True,
        )
    # fused: one kernel per step; the default multi-tensor path costs ~0.5 s/step on AlexNet's 58 M FC weights
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def load_data_for_weights(weights: str | Path, run: RunSettings, *, seed: int) -> DataBundle:
    """Load ``run.data`` the way a teacher checkpoint expects it: its input size (unless overridden) and classes."""
    recorded = checkpoint_metadata(Path(weights)) if str(weights) not in ("none", "imagenet") else {}
    input_size = run.input_size
    if input_size is None:
        input_size = recorded.get("input_size") or default_input_size(str(run.data))
    return load_data(
        run.data,
        input_size,
        val_fraction=run.val_fraction,
        seed=seed,
        val_data=run.val_data,
        expected_classes=recorded.get("classes"),
    )


def check_model_options(model: str, run: RunSettings) -> str:
    """What can be refused about a model and its run before its data is loaded: its name (user code: consent and
    import), the input size it takes, the run settings. Returns the model's canonical name."""
    run.check()
    model = check_model(model)
    if run.input_size is not None:
        check_input_size(model, run.input_size)
    return model


def steps_per_epoch(data: DataBundle, config: TrainConfig) -> int:
    steps = math.ceil(len(data.train) / config.batch_size)
    return min(steps, config.max_steps_per_epoch) if config.max_steps_per_epoch else steps


def fit_classifier(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig,
    *,
    on_progress: ProgressCallback = ignore_progress,
    eval_batch_size: int = 256,
    progress: Path | None = None,
    progress_key: str = "",
) -> list[dict[str, float]]:
    """Train ``model`` on ``data.train`` with cross-entropy; returns one record per epoch (loss, val accuracy).

    Runs where ``model`` is (bf16 autocast on a GPU); batches are moved there. With ``progress``, rank 0 saves
    model, optimizer and schedule after every epoch, and a run with the same ``progress_key`` resumes after the
    last saved epoch (a crash, a lost rank); the caller removes the file once the result is saved.
    """
    torch.manual_seed(config.seed)
    device = model_device(model)
    steps = steps_per_epoch(data, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)
    scheduler = cosine_with_warmup(optimizer, steps * config.epochs, round(steps * config.warmup_epochs))
    history: list[dict[str, Any]] = []
    if progress is not None:
        history = _resume_training(progress, progress_key, model, optimizer, scheduler)
        for record in history:
            on_progress(ProgressEvent("epoch", record["epoch"], config.epochs, {**record, "resumed": "yes"}))
    trainable = data_parallel(model)  # under torchrun: gradients averaged over the ranks' shares of each batch
    with lost_ranks_reported("teacher training"):
        for epoch in range(len(history), config.epochs):
            model.train()
            started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
            waited = data.train.stats.wait_s
            limit = config.max_steps_per_epoch * config.batch_size if config.max_steps_per_epoch else None
            batches = data.train_batches(
                config.batch_size, seed=config.seed * 1000 + epoch, augment=config.augment, limit=limit
            )
            for step, (images, labels) in enumerate(batches):
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                with mixed_precision(device):
                    logits = trainable(images)
                    loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                seen += len(labels)
                loss_sum += loss.item() * len(labels)
                correct += int((logits.argmax(1) == labels).sum())
                info = {"epoch": epoch + 1, "loss": loss.item()}
                on_progress(ProgressEvent("train", epoch * steps + step + 1, steps * config.epochs, info))
            seconds = time.perf_counter() - started
            seen, loss_sum, correct = all_sum([seen, loss_sum, correct], "teacher training")
            val = evaluate_set(model, data, data.val, eval_batch_size)
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(seen, 1),
                "train_top1": 100.0 * correct / max(seen, 1),
                "val_top1": val["top1"],
                "val_top5": val["top5"],
                "val_loss": val["loss"],
                "seconds": seconds,
                "images_per_s": seen / max(seconds, 1e-9),  # over all ranks
                "data_wait_s": data.train.stats.wait_s - waited,  # this rank's
            }
            history.append(record)
            if progress is not None:
                state = {"key": progress_key, "history": history, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}  # fmt: skip
                on_main(lambda state=state: _save_state(progress, state), f"saving epoch {epoch + 1}")
            on_progress(ProgressEvent("epoch", epoch + 1, config.epochs, record))
    model.eval()
    return history


def _save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume_training(
    path: Path, key: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> list[dict[str, Any]]:
    """The epochs saved at ``path`` for this ``key``, loaded into model, optimizer and schedule on every rank
    (rank 0 reads the file); [] to start afresh."""

    def read() -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("key") != key:
                return None  # another run's progress: start over rather than mix two runs
            model.load_state_dict(state["model"])
        except Exception:  # noqa: BLE001  (a damaged progress file only costs the epochs it held)
            return None
        return {"history": state["history"], "optimizer": state["optimizer"], "scheduler": state["scheduler"]}

    state = on_main(read, "resuming teacher training")
    if state is None:
        return []
    broadcast_module(model, "resuming teacher training")
    optimizer.load_state_dict(state["optimizer"])  # moves the moments to the parameters' device
    scheduler.load_state_dict(state["scheduler"])
    return list(state["history"])


@dataclass
class TeacherTrainingResult:
    checkpoint: Path
    manifest: Path
    metrics: dict[str, Any]


def save_teacher_checkpoint(teacher: Teacher, data: DataBundle, path: Path, extra: dict[str, Any]) -> Path:
    """A checkpoint that ``--weights`` loads and that remembers the classes and preprocessing."""
    metadata = {
        "model": teacher.name,
        "num_classes": teacher.num_classes,
        "input_size": teacher.input_size,
        "classes": list(data.classes),
        "mean": list(data.mean),
        "std": list(data.std),
        "data": data.source,
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "state_dict": teacher.model.state_dict(), "metadata": metadata}, tmp)
    return Path(path)


def train_teacher(
    model_name: str,
    *,
    out: Path,
    weights: str = "none",
    run: RunSettings | None = None,
    config: TrainConfig | None = None,
    progress: Path | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> TeacherTrainingResult:
    """Train (``weights=none``) or fine-tune a teacher on ``run.data``; save a checkpoint and a manifest beside it.

    Under torchrun the ranks train data-parallel and rank 0 alone writes the files. Every finished epoch is kept in
    ``progress`` (default ``OUT.progress.pt``) until the checkpoint is saved: a re-run of an interrupted training
    with the same inputs resumes after the last finished epoch."""
    config, run = config or TrainConfig(), run or RunSettings()
    out = check_writable_file(Path(out))  # before training, not after
    model_name = check_model_options(model_name, run)
    w, torch_device = init_distributed(resolve_device(run.device))
    rank_batch_size(config.batch_size, "--batch-size")
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    started = time.perf_counter()
    bundle = load_data_for_weights(weights, run, seed=config.seed)
    bundle.use_loader(loader_settings(run.workers, torch_device))
    input_size = bundle.input_size
    teacher = build_teacher(
        model_name, num_classes=bundle.num_classes, weights=weights, input_size=input_size, seed=config.seed
    )
    teacher.model.to(torch_device)
    before = evaluate_set(teacher.model, bundle, bundle.val) if weights != "none" else None
    load_seconds = time.perf_counter() - started
    progress = progress or out.with_name(out.name + ".progress.pt")
    key = _training_key(model_name, weights, bundle, config, teacher.code)
    history = fit_classifier(teacher.model, bundle, config, on_progress=on_progress, progress=progress,
                             progress_key=key)  # fmt: skip
    final = history[-1] if history else evaluate_set(teacher.model, bundle, bundle.val)
    teacher.model.cpu()
    metrics = {
        "val_top1": final.get("val_top1", final.get("top1")),
        "val_top5": final.get("val_top5", final.get("top5")),
        "val_top1_before": before["top1"] if before else None,
        "history": history,
        "train_seconds": sum(r["seconds"] for r in history),
        "data_seconds": load_seconds,
        "threads": torch.get_num_threads(),
        "device": str(torch_device),
        "distributed": {**w.describe(), "global_batch": config.batch_size},
        "data_loader": {**bundle.loader_facts(), **throughput(history)},
    }
    out = Path(out)
    manifest_path = out.with_suffix(".json")
    on_main(lambda: _save_teacher(teacher, bundle, out, manifest_path, model_name, weights, config, metrics,
                                  torch_device, progress), "saving the teacher")  # fmt: skip
    return TeacherTrainingResult(checkpoint=out, manifest=manifest_path, metrics=metrics)


def _save_teacher(
    teacher: Teacher,
    bundle: DataBundle,
    out: Path,
    manifest_path: Path,
    model_name: str,
    weights: str,
    config: TrainConfig,
    metrics: dict[str, Any],
    torch_device: torch.device,
    progress: Path,
) -> None:
    save_teacher_checkpoint(
        teacher,
        bundle,
        out,
        {"weights_init": weights, "val_top1": metrics["val_top1"], "val_top5": metrics["val_top5"]},
    )
    write_json(
        manifest_path,
        build_manifest(
            "train-teacher",
            settings={
                "model": model_name,
                "weights": weights,
                "train": asdict(config),
                "data": bundle.describe(),
                "device": str(torch_device),
            },
            seeds={"seed": config.seed, "split_seed": config.seed},
            files=[out],
            metrics=metrics,
        ),
    )
    progress.unlink(missing_ok=True)  # the checkpoint holds it all now


def _training_key(model: str, weights: str, bundle: DataBundle, config: TrainConfig, code: Any) -> str:
    """What a teacher's saved epochs were made from: another key means they do not belong to this run."""
    import hashlib
    import json

    facts = {"model": model, "weights": str(weights), "train": bundle.train.fingerprint(),
             "val": bundle.val.fingerprint(), "config": asdict(config), "code": code}  # fmt: skip
    if Path(str(weights)).is_file():
        facts["weights_sha256"] = sha256_file(Path(weights))
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def loader_settings(workers: int | None, device: torch.device) -> LoaderSettings:
    """``--workers`` (default: this machine's cores shared by the ranks) and pinned memory for a GPU run."""
    count = default_workers(world().size) if workers is None else workers
    return LoaderSettings(workers=count, pin_memory=device.type == "cuda")


def throughput(history: list[dict[str, Any]]) -> dict[str, float | None]:
    """Training images per second over all ranks, and the share of the time this rank waited for data."""
    seconds = sum(r["seconds"] for r in history)
    if not history or seconds <= 0:
        return {"images_per_s": None, "data_wait_share": None}
    images = sum(r["images_per_s"] * r["seconds"] for r in history)
    return {"images_per_s": images / seconds, "data_wait_share": sum(r["data_wait_s"] for r in history) / seconds}
