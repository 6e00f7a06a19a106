"""Teacher registry and builder: torchvision classifiers, built by name, weights from a file or the hub cache."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.errors import CheckpointError, ConfigError
from mobilelwt.plan import trace
from mobilelwt.profile import shape_forward
from mobilelwt.registry import Registry
from mobilelwt.teachers.user import UserModelSource, build_user_model, is_user_model, resolve_source
from mobilelwt.weights import load_checkpoint, load_into

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TeacherSpec:
    """How to build one teacher: a torchvision builder, its ImageNet weights enum and its classifier head."""

    name: str
    family: str
    builder: Callable[..., nn.Module]
    weights_enum: Any
    head: str  # dotted name of the final Linear, replaced when the class count changes ("": found by tracing)
    default_input_size: int = 224
    source: UserModelSource | None = None  # the user's code, for ``file.py:factory`` models


@dataclass
class Teacher:
    """A built teacher and the facts needed to use it the way it was trained."""

    name: str
    model: nn.Module
    num_classes: int
    input_size: int
    weights: str
    classes: list[str] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    metadata: dict[str, Any] = field(default_factory=dict)
    code: dict[str, str] | None = None  # a user model's source file and its sha256


TEACHERS: Registry[TeacherSpec] = Registry("model")


def register_teacher(spec: TeacherSpec) -> TeacherSpec:
    TEACHERS.add(spec.name, spec)
    return spec


def list_teachers() -> list[str]:
    return TEACHERS.names()


def get_teacher_spec(name: str) -> TeacherSpec:
    """A registered teacher, or the user's ``file.py:factory`` / ``package.module:factory`` (no code runs here)."""
    if is_user_model(name):
        return _user_spec(resolve_source(name))
    return TEACHERS.get(name)


def canonical_model_name(name: str) -> str:
    """The name stages record: registered names as they are, user files by absolute path."""
    return get_teacher_spec(name).name


def model_slug(name: str) -> str:
    """A file-name-safe short name: registered names as they are, ``net.py:build`` as ``net.build``."""
    spec = get_teacher_spec(name)
    if spec.source is None:
        return spec.name
    stem = spec.source.file.stem if spec.source.kind == "file" else spec.source.location
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}.{spec.source.factory}")


def check_model(name: str) -> str:
    """Refuse an unknown model (and user code without consent, or that fails to import) before any work;
    returns the canonical name."""
    spec = get_teacher_spec(name)
    if spec.source is not None:
        build_user_model(spec.source, None)  # consent, import and factory errors surface here (real tensors:
        # a factory may initialise with values, which the meta device cannot give)
    return spec.name


@functools.cache
def _user_spec(source: UserModelSource) -> TeacherSpec:
    def builder(*, weights: None = None, num_classes: int | None = None) -> nn.Module:
        return build_user_model(source, num_classes)

    return TeacherSpec(name=source.reference, family="user", builder=builder, weights_enum=None, head="", source=source)


def find_head(model: nn.Module, input_size: int) -> str:
    """The classifier head: the last Conv2d/Linear that runs (its outputs are the classes)."""
    layers = trace(model, input_size)
    if not layers:
        raise ConfigError(
            "The model has no Conv2d or Linear layer: nothing to compress.", "Pass a CNN classifier as --model."
        )
    return layers[-1].name


def _set_submodule(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _replace_head(model: nn.Module, head: str, num_classes: int) -> None:
    old = model.get_submodule(head)
    if not isinstance(old, nn.Linear):
        raise ConfigError(
            f"The model's head {head!r} is a {type(old).__name__}, not a Linear layer, so it cannot be resized to "
            f"{num_classes} classes.",
            "Make the factory take num_classes=, or pass --num-classes equal to its outputs.",
        )
    if old.out_features != num_classes:
        _set_submodule(model, head, nn.Linear(old.in_features, num_classes))


@functools.cache
def min_input_size(name: str) -> int:
    """Smallest square input that the architecture accepts (found with shape-only forwards)."""
    spec = get_teacher_spec(name)
    with torch.device("meta"):
        model = spec.builder(weights=None, num_classes=10).eval()
    lo, hi = 1, spec.default_input_size
    while lo < hi:  # accepting sizes form an upward-closed range for these CNNs
        mid = (lo + hi) // 2
        if _accepts(model, mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _accepts(model: nn.Module, size: int) -> bool:
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, size, size, device="meta"))
    except RuntimeError:
        return False
    return True


MAX_INPUT_SIZE = 2048


def check_input_size(name: str, input_size: int) -> None:
    """Refuse sizes the architecture cannot take (a user model is checked when it is built)."""
    if input_size > MAX_INPUT_SIZE:
        raise ConfigError(
            f"Input size {input_size} is too large for {name} (over {MAX_INPUT_SIZE}²: its activations alone "
            "would not fit in memory).",
            f"Use --input-size {MAX_INPUT_SIZE} or less.",
        )
    if is_user_model(name):
        return
    smallest = min_input_size(name)
    if input_size < smallest:
        raise ConfigError(
            f"Input size {input_size} is too small for {name}: its feature maps shrink to nothing.",
            f"Use --input-size {smallest} or more.",
        )


def build_teacher(
    name: str,
    *,
    num_classes: int | None = None,
    weights: str | os.PathLike[str] | None = "none",
    input_size: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> Teacher:
    """Build teacher ``name``.

    ``weights`` is ``"none"`` (random init), ``"imagenet"`` (torchvision's DEFAULT weights from the local torch
    hub cache) or a path to a state_dict or checkpoint. A checkpoint written by ``train-teacher`` also supplies
    the class count, class names, input size and normalisation it was trained with; explicit arguments that
    contradict it are an error. ``device="meta"`` builds shapes only (for MAC counting). A random teacher
    (``weights="none"``) is drawn from ``seed``, so every stage rebuilds the same one.
    """
    spec = get_teacher_spec(name)
    weights = "none" if weights is None else weights
    source = str(weights)
    checkpoint: dict[str, Any] | None = None
    if source not in ("none", "imagenet"):
        checkpoint = load_checkpoint(Path(source))
    meta = (checkpoint or {}).get("metadata", {})
    if source == "imagenet" and spec.source is not None:
        raise ConfigError(
            f"There are no ImageNet weights for {spec.name}.", "Pass --weights with your checkpoint, or none."
        )
    name = spec.name
    if meta.get("model") not in (None, name) and not (spec.source and is_user_model(str(meta["model"]))):
        raise CheckpointError(
            f"{source} holds weights for {meta['model']!r}, not {name!r}.", f"Use --model {meta['model']}."
        )
    num_classes = _agree("num_classes", num_classes, meta.get("num_classes"), source)
    input_size = _agree("input_size", input_size, meta.get("input_size"), source)
    if spec.source is None and num_classes is None:
        num_classes = 1000
    input_size = spec.default_input_size if input_size is None else input_size
    if num_classes is not None and num_classes < 2:
        raise ConfigError(f"--num-classes must be at least 2, got {num_classes}.", "Pass the number of classes.")
    check_input_size(name, input_size)

    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
        torch.manual_seed(seed)
        model = spec.builder(weights=None, num_classes=1000 if source == "imagenet" else num_classes)
    if spec.source is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            num_classes = _fit_user_head(model, spec, num_classes, input_size)
    if source == "imagenet":
        model.load_state_dict(load_imagenet_state_dict(spec))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _replace_head(model, spec.head, num_classes)  # a fresh (seeded) head, fine-tuned on the user's classes
    elif checkpoint is not None:
        load_into(model, checkpoint["state_dict"], source)
    model.eval()
    return Teacher(
        name=name,
        model=model,
        num_classes=num_classes,
        input_size=input_size,
        weights=source,
        classes=meta.get("classes"),
        mean=tuple(meta.get("mean", IMAGENET_MEAN)),
        std=tuple(meta.get("std", IMAGENET_STD)),
        metadata=meta,
        code=spec.source.describe() if spec.source is not None else None,
    )


def _fit_user_head(model: nn.Module, spec: TeacherSpec, num_classes: int | None, input_size: int) -> int:
    """Check that a user model takes ``input_size`` images and returns class logits; resize its head if asked."""
    outputs = _output_shape(model, input_size, spec.name)
    if len(outputs) != 1 or outputs[0] < 2:
        raise ConfigError(
            f"{spec.name} returns outputs of shape (N, {', '.join(map(str, outputs))}) for {input_size}² images, "
            "not (N, classes) logits.",
            "Return class logits from forward (flatten before the head).",
        )
    if num_classes is None or outputs[0] == num_classes:
        return outputs[0]
    _replace_head(model, find_head(model, input_size), num_classes)
    return num_classes


def _output_shape(model: nn.Module, input_size: int, name: str) -> tuple[int, ...]:
    """Shape-only forward on the meta device; code that needs real values gets one real forward on zeros."""
    try:
        out = shape_forward(model, (3, input_size, input_size))
    except Exception as exc:
        raise ConfigError(
            f"{name} cannot take {input_size}×{input_size} RGB images: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
            "Pass the --input-size the model was made for.",
        ) from None
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{name} returns {type(out).__name__}, not a tensor of logits.", "Return one tensor.")
    return tuple(out.shape[1:])


def _agree(key: str, requested: int | None, recorded: int | None, source: str) -> int | None:
    if requested is not None and recorded is not None and requested != recorded:
        flag = "--" + key.replace("_", "-")
        raise ConfigError(
            f"{flag} {requested} contradicts {source}, which was trained with {key} = {recorded}.",
            f"Drop {flag} or pass {flag} {recorded}.",
        )
    return requested if requested is not None else recorded


def imagenet_weights_path(spec: TeacherSpec) -> tuple[Path, str]:
    """Where torchvision keeps ``spec``'s DEFAULT ImageNet weights in the torch hub cache, and their URL."""
    url = spec.weights_enum.DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name, url


def load_imagenet_state_dict(spec: TeacherSpec) -> dict[str, torch.Tensor]:
    """torchvision's DEFAULT weights for ``spec``, read from the local hub cache only (never downloaded)."""
    path, url = imagenet_weights_path(spec)
    if not path.is_file():
        raise CheckpointError(
            f"ImageNet weights for {spec.name} are not in the local torch hub cache ({path} is missing).",
            f"Download {url} and copy it to {path} (or set TORCH_HOME), or pass --weights PATH.",
        )
    return load_checkpoint(path)["state_dict"]
