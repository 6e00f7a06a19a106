"""Layer-wise training (Zeng & Tian 2017): each replacement learns to reproduce its teacher layer's output.

Layers are trained in execution order. With ``layer_input="student"`` a replacement sees the *student's* own
upstream activations (so the errors of earlier replacements are corrected rather than accumulated); with
``"teacher"`` it sees the teacher's, and layers are independent. Activations are never cached for the whole
dataset: every step recomputes the two prefixes on a fresh batch, so memory stays at one batch.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.checks import finite, whole
from mobilelwt.data import DataBundle
from mobilelwt.devices import model_device
from mobilelwt.distributed import (
    all_sum,
    broadcast_module,
    data_parallel,
    gather_objects,
    lost_ranks_reported,
    on_main,
    shard_range,
    world,
)
from mobilelwt.errors import ConfigError, MobileLWTError
from mobilelwt.io import atomic_path, read_json, write_json
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress
from mobilelwt.weights import load_checkpoint, load_into

LAYER_INPUTS = ("student", "teacher")
LAYER_BUDGETS = ("uniform", "by-error")
BUDGET_FLOOR, BUDGET_CAP = 0.25, 3.0  # a layer's steps under "by-error", as multiples of the even share


@dataclass
class LayerwiseConfig:
    epochs: float = 1.0  # passes over the training split per layer; 0 keeps the closed-form init
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    layer_input: str = "student"
    max_steps: int | None = None  # per layer (under "by-error": the even share of the pool)
    budget: str = "uniform"  # "by-error": one pool of steps, shared by the layers' errors before training
    eval_every: int = 50
    patience: int = 4
    eval_images: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.layer_input not in LAYER_INPUTS:
            raise ConfigError(f"Unknown --layer-input {self.layer_input!r}.", f"Use one of: {', '.join(LAYER_INPUTS)}.")
        if self.budget not in LAYER_BUDGETS:
            raise ConfigError(f"Unknown --layer-budget {self.budget!r}.", f"Use one of: {', '.join(LAYER_BUDGETS)}.")

        finite(self.epochs, "--layer-epochs", low=0)
        whole(self.batch_size, "--layer-batch-size", low=1)
        finite(self.lr, "--layer-lr", low=0, strict=True)
        finite(self.weight_decay, "--layer-weight-decay", low=0)
        whole(self.max_steps, "--layer-max-steps", low=0, optional=True)
        whole(self.eval_every, "eval_every", low=1)
        whole(self.patience, "patience", low=1)
        whole(self.eval_images, "eval_images", low=1)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted activation is captured."""


@torch.no_grad()
def layer_io(model: nn.Module, name: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and output of layer ``name`` when ``model`` runs on ``images``; the rest of the net is skipped."""
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured["input"], captured["output"] = inputs[0], output
        raise _Stop

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        model(images)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "input" not in captured:
        raise RuntimeError(f"layer {name} did not run in the forward pass")
    return captured["input"], captured["output"]


def layer_pair(
    teacher: nn.Module, student: nn.Module, name: str, images: torch.Tensor, layer_input: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input the replacement sees, teacher output it must reproduce) for layer ``name`` on ``images``.

    With ``layer_input="teacher"`` both come from one teacher pass; otherwise the input is the student's own.
    """
    teacher_input, target = layer_io(teacher, name, images)
    if layer_input == "teacher":
        return teacher_input, target
    return layer_io(student, name, images)[0], target


@torch.no_grad()
def same_input(teacher: nn.Module, student: nn.Module, name: str, images: torch.Tensor) -> bool:
    """Whether the student's layer ``name`` sees exactly the teacher's input on ``images``: no replaced layer
    runs before it, so one teacher pass gives both the input and the target."""
    return torch.equal(layer_io(teacher, name, images)[0], layer_io(student, name, images)[0])


def normalized_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error relative to the target's energy: comparable across layers of any scale."""
    return ((prediction - target) ** 2).sum() / (target**2).sum().clamp_min(1e-12)


def layer_budgets(
    errors: dict[str, float], steps_per_layer: int, *, floor: float = BUDGET_FLOOR, cap: float = BUDGET_CAP
) -> dict[str, int]:
    """Steps per layer from one pool of ``steps_per_layer × len(errors)``, shared in proportion to each layer's
    error before training and held between ``floor`` and ``cap`` times the even share (what a bounded layer does
    not take goes to the others). Whole steps that add up to the pool; equal errors give the even share."""
    names = list(errors)
    pool = steps_per_layer * len(names)
    weights = {n: max(float(errors[n]), 0.0) for n in names}
    if pool == 0 or not names or sum(weights.values()) <= 0 or not all(math.isfinite(w) for w in weights.values()):
        return dict.fromkeys(names, steps_per_layer)
    low, high = floor * steps_per_layer, cap * steps_per_layer

    def shares(scale: float) -> dict[str, float]:
        return {n: min(max(scale * weights[n], low), high) for n in names}

    # the total grows with the scale (clipped proportional shares): bisect for the scale that spends the pool
    lo, hi = 0.0, 1.0
    while sum(shares(hi).values()) < pool and hi < 1e30:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(shares(mid).values()) < pool else (lo, mid)
    exact = shares(hi)
    # whole steps that add up to the pool: the largest remainders get the steps rounding left over
    steps = {n: math.floor(v) for n, v in exact.items()}
    for n in sorted(names, key=lambda n: exact[n] - steps[n], reverse=True)[: pool - sum(steps.values())]:
        steps[n] += 1
    return steps


@torch.no_grad()
def layer_error(
    teacher: nn.Module,
    student: nn.Module,
    name: str,
    images: torch.Tensor,
    layer_input: str,
    batch_size: int = 64,
    *,
    across_ranks: bool = False,
) -> float:
    """Normalised error of the student's layer ``name`` against the teacher's on ``images``.

    ``across_ranks``: each rank takes its share of ``images`` and the sums are added up, so that every rank gets
    the same number (and so takes the same early-stopping decision)."""
    if across_ranks:
        images = images[shard_range(len(images))]
    num = den = 0.0
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        x, target = layer_pair(teacher, student, name, batch, layer_input)
        prediction = student.get_submodule(name)(x)
        num += float(((prediction - target) ** 2).sum())
        den += float((target**2).sum())
    if across_ranks:
        num, den = all_sum([num, den], f"layer-wise training of {name}")
    return num / max(den, 1e-12)


def _batches(
    data: DataBundle, config: LayerwiseConfig, seed: int, device: torch.device, *, shard: bool = True
) -> Iterator[torch.Tensor]:
    epoch = 0
    while True:
        for images, _ in data.train_batches(config.batch_size, seed=seed * 7919 + epoch, shard=shard):
            yield images.to(device, non_blocking=True)
        epoch += 1


def train_layerwise(
    teacher: nn.Module,
    student: nn.Module,
    layers: list[str],
    data: DataBundle,
    config: LayerwiseConfig,
    *,
    state_dir: Path | None = None,
    state_key: str = "",
    on_progress: ProgressCallback = ignore_progress,
) -> dict[str, dict[str, Any]]:
    """Train the replacements named in ``layers`` (execution order) in place; returns per-layer records.

    Runs where the models are. With ``state_dir`` the student is saved after every finished layer, and a re-run
    resumes after the last one when ``state_key`` (the digest of the teacher, data, plan and settings that
    produced the saved layers) is the same; any other saved progress is discarded. Under torchrun each step
    trains on every rank's share of the global batch (``DistributedDataParallel`` on the replacement), or, with
    ``layer_input="teacher"`` (independent layers), the ranks train different layers at once; rank 0 alone reads
    and writes ``state_dir``.
    """
    teacher.eval()
    student.eval()  # dropout off, batch-norm statistics frozen: only the replacement's weights move
    for p in teacher.parameters():
        p.requires_grad_(False)
    device = model_device(student)
    monitor = data.normalize(data.val.load(data.val.sample_indices(config.eval_images))).to(device)
    steps_per_layer = math.ceil(config.epochs * len(data.train) / config.batch_size)
    if config.max_steps is not None:
        steps_per_layer = min(steps_per_layer, config.max_steps)

    records: dict[str, dict[str, Any]] = {}
    budgets: dict[str, int] | None = None
    if state_dir is not None:
        records, budgets = on_main(
            lambda: _resume(student, layers, state_key, state_dir, by_error=config.budget == "by-error"),
            "resuming layer-wise training",
        )
    broadcast_module(student, "layer-wise training")  # rank 0's init (and resumed layers) on every rank
    with lost_ranks_reported("layer-wise training"):
        if budgets is None:  # a resumed "by-error" run keeps the budgets its first layers were trained under
            budgets = _budgets(teacher, student, layers, monitor, config, steps_per_layer)
        records = _train_layers(teacher, student, layers, data, config, records, monitor, budgets,
                                state_dir, state_key, on_progress)  # fmt: skip
    for p in student.parameters():
        p.requires_grad_(True)
    return records


def _budgets(
    teacher: nn.Module,
    student: nn.Module,
    layers: list[str],
    monitor: torch.Tensor,
    config: LayerwiseConfig,
    steps_per_layer: int,
) -> dict[str, int]:
    """Steps per layer: the even share, or (``budget="by-error"``) the pool shared by each layer's error before
    any training, measured as it will be trained (the student's inputs see the closed-form layers upstream)."""
    if config.budget == "uniform" or steps_per_layer == 0:
        return dict.fromkeys(layers, steps_per_layer)
    shared = world().active  # every rank measures its share and gets the same sums: the same budgets everywhere
    errors = {name: layer_error(teacher, student, name, monitor, config.layer_input, across_ranks=shared)
              for name in layers}  # fmt: skip
    return layer_budgets(errors, steps_per_layer)


def _train_layers(
    teacher: nn.Module,
    student: nn.Module,
    layers: list[str],
    data: DataBundle,
    config: LayerwiseConfig,
    records: dict[str, dict[str, Any]],
    monitor: torch.Tensor,
    budgets: dict[str, int],
    state_dir: Path | None,
    state_key: str,
    on_progress: ProgressCallback,
) -> dict[str, dict[str, Any]]:
    def save(after: str) -> None:
        if state_dir is not None:
            on_main(lambda: _checkpoint(student, records, budgets, config, state_key, state_dir),
                    f"saving layer {after}")  # fmt: skip

    for index, name in enumerate(layers):
        if name in records:
            on_progress(ProgressEvent("layers", index + 1, len(layers), {"layer": name, "resumed": "yes"}))
    todo = [(index, name) for index, name in enumerate(layers) if name not in records]
    w = world()
    if w.active and config.layer_input == "teacher":
        # independent layers: each rank trains whole layers on whole batches, one round of `size` layers at a
        # time; each trained layer is then handed from its rank to the others, and rank 0 saves the round
        for start in range(0, len(todo), w.size):
            group = todo[start : start + w.size]
            mine = group[w.rank] if w.rank < len(group) else None
            record = None
            if mine is not None:
                record = _train_one(teacher, student, *mine, data, config, monitor, budgets[mine[1]], on_progress,
                                    shared=False)  # fmt: skip
            gathered = gather_objects(record, f"layer-wise training of {', '.join(n for _, n in group)}")
            for owner, (index, name) in enumerate(group):
                broadcast_module(student.get_submodule(name), f"layer-wise training of {name}", src=owner)
                records[name] = {**gathered[owner], "trained_on_rank": owner}
                on_progress(ProgressEvent("layers", index + 1, len(layers), {"layer": name, "on_rank": owner}))
            save(group[-1][1])
        return records
    for index, name in todo:
        records[name] = _train_one(teacher, student, index, name, data, config, monitor, budgets[name],
                                   on_progress, shared=True)  # fmt: skip
        save(name)
        info = {"layer": name, "error": records[name]["error_final"]}
        on_progress(ProgressEvent("layers", index + 1, len(layers), info))
    return records


def _train_one(
    teacher: nn.Module,
    student: nn.Module,
    index: int,
    name: str,
    data: DataBundle,
    config: LayerwiseConfig,
    monitor: torch.Tensor,
    steps: int,
    on_progress: ProgressCallback,
    *,
    shared: bool,
) -> dict[str, Any]:
    """Train the replacement ``name``; returns its record. ``shared``: every rank trains it on its share of each
    global batch (DDP), else this rank alone trains it on whole batches."""
    device = model_device(student)
    started, waited = time.perf_counter(), data.train.stats.wait_s
    module = student.get_submodule(name)
    layer_input = config.layer_input
    if layer_input == "student" and index == 0 and same_input(teacher, student, name, monitor[:8]):
        # the first replaced layer: the student's prefix is the teacher's, so the student pass would only repeat
        # the teacher's (AlexNet's fc6 behind the whole conv stack); the numbers are the same
        layer_input = "teacher"
    error_init = layer_error(teacher, student, name, monitor, layer_input, across_ranks=shared)
    best_error, best_state, stale, steps_done = error_init, _copy_state(module), 0, 0
    if steps > 0:
        params = list(module.parameters())
        for p in params:
            p.requires_grad_(True)
        trainable = data_parallel(module) if shared else module
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        batches = _batches(data, config, config.seed + index, device, shard=shared)
        for step in range(steps):
            images = next(batches)
            x, target = layer_pair(teacher, student, name, images, layer_input)
            module.train()
            loss = normalized_mse(trainable(x), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            module.eval()
            steps_done = step + 1
            info = {"layer": name, "loss": loss.item()}
            if steps_done % config.eval_every == 0 or steps_done == steps:
                error = layer_error(teacher, student, name, monitor, layer_input, across_ranks=shared)
                info["val_error"] = error
                if error < best_error * (1 - 1e-3):
                    best_error, best_state, stale = error, _copy_state(module), 0
                else:
                    stale += 1
            on_progress(ProgressEvent(f"layer {name}", steps_done, steps, info))
            if stale >= config.patience:
                break
        for p in params:
            p.requires_grad_(False)
        module.load_state_dict(best_state)
        del trainable, optimizer  # a DDP wrapper's gradient hooks go with it, before the next layer's
        if world().active:
            gc.collect()
    seconds = time.perf_counter() - started
    return {
        "error_init": error_init,
        "error_final": best_error,
        "steps": steps_done,
        "budget": steps,
        "early_stopped": steps_done < steps,
        "seconds": seconds,
        "images_per_s": steps_done * config.batch_size / max(seconds, 1e-9),  # global batches
        "data_wait_s": data.train.stats.wait_s - waited,
    }


def _copy_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _checkpoint(
    student: nn.Module,
    records: dict[str, Any],
    budgets: dict[str, int],
    config: LayerwiseConfig,
    key: str,
    state_dir: Path,
) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(state_dir / "student.pt") as tmp:
        torch.save(student.state_dict(), tmp)
    progress = {"key": key, "config": asdict(config), "budgets": budgets, "layers": records}
    write_json(state_dir / "progress.json", progress)


def _resume(
    student: nn.Module, layers: list[str], key: str, state_dir: Path, *, by_error: bool
) -> tuple[dict[str, Any], dict[str, int] | None]:
    """(finished layers' records, and ``by_error``: the budgets of every layer they were trained under) of a saved
    run made from the same inputs; nothing of any other."""
    nothing: tuple[dict[str, Any], None] = ({}, None)
    progress_path, weights_path = state_dir / "progress.json", state_dir / "student.pt"
    if not (progress_path.is_file() and weights_path.is_file()):
        return nothing
    try:
        progress = read_json(progress_path)
    except ValueError:
        return nothing  # damaged progress: start over
    if progress.get("key") != key or not set(progress.get("layers", {})) <= set(layers):
        return nothing  # made from other inputs: start over rather than mix two runs
    budgets = progress.get("budgets") if by_error else None
    if by_error and (not isinstance(budgets, dict) or set(budgets) != set(layers)):
        # the pool was shared by errors measured before the first layer trained: without those budgets the
        # remaining layers' steps would differ from a fresh run's
        return nothing
    try:
        load_into(student, load_checkpoint(weights_path)["state_dict"], str(weights_path))
    except MobileLWTError:
        return nothing
    return dict(progress["layers"]), ({n: int(v) for n, v in budgets.items()} if budgets is not None else None)
