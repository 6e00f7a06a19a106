"""Loading weights safely: checkpoints always through ``torch.load(weights_only=True)``."""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.errors import CheckpointError

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def safe_load(path: Path, *, mmap: bool = False) -> Any:
    """``torch.load`` restricted to tensors and plain containers, with user errors for bad files.

    ``mmap=True`` maps tensor storage lazily instead of reading it (cheap look at metadata).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Weights file {path} does not exist.", "Check the path, or pass --weights imagenet or --weights none."
        )
    try:
        if mmap and zipfile.is_zipfile(path):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        offending = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", str(exc))
        if offending:
            raise CheckpointError(
                f"{path} was refused: it contains pickled Python objects, which could run code when loaded "
                f"(it asks to import {offending.group(1)}).",
                "Re-save only the weights from a trusted environment: torch.save(model.state_dict(), PATH).",
            ) from None
        detail = _first_line_with(str(exc), "Unsupported") or "the restricted unpickler refused it"
        raise _corrupt(path, RuntimeError(detail)) from None
    except Exception as exc:  # a damaged pickle stream fails in arbitrary ways inside the unpickler
        raise _corrupt(path, exc) from None


def _first_line_with(text: str, needle: str) -> str:
    return next((line.strip() for line in text.splitlines() if needle in line), "")


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CheckpointError(
        f"{path} is not a readable PyTorch checkpoint ({detail}).",
        "Pass a file written by torch.save or `mobilelwt train-teacher`; re-copy it if it was truncated.",
    )


def checkpoint_metadata(path: Path) -> dict[str, Any]:
    """The metadata a ``train-teacher`` checkpoint carries (empty for a bare state_dict), without reading weights."""
    return load_checkpoint(path, mmap=True)["metadata"]


def load_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """Read a state_dict or a checkpoint dict; returns ``{"state_dict": ..., "metadata": ...}``."""
    obj = safe_load(path, mmap=mmap)
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and _is_state_dict(inner):
                metadata = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
                return {"state_dict": _strip_prefix(inner), "metadata": dict(metadata)}
        if _is_state_dict(obj):
            return {"state_dict": _strip_prefix(obj), "metadata": {}}
    raise CheckpointError(
        f"{path} holds a {type(obj).__name__}, not model weights.",
        "Pass a state_dict (name -> tensor) or a dict with a 'state_dict' entry.",
    )


def _is_state_dict(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # nn.DataParallel and DistributedDataParallel save every key under "module."
    if all(k.startswith("module.") for k in state_dict):
        return {k.removeprefix("module."): v for k, v in state_dict.items()}
    return dict(state_dict)


def load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` strictly; a mismatch is summarised in one message instead of torch's wall of keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({_some(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_some(unexpected)})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} shape mismatch(es), file vs model ({_some(wrong_shape)})")
        raise CheckpointError(
            f"{source} does not fit the model: {'; '.join(parts)}.",
            "Check --model, --num-classes and that the file was saved from the same architecture.",
        )
    broken = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:  # NaN/inf weights make every later stage fail somewhere deep (an SVD, a loss) or train garbage
        raise CheckpointError(
            f"{source} holds NaN or infinite values in {len(broken)} tensor(s) ({_some(broken)}): the training that "
            "wrote it diverged, or the file is damaged.",
            "Use an earlier checkpoint, or train the teacher again with a lower --lr.",
        )
    model.load_state_dict(state_dict)


def _some(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... {len(items) - limit} more" if len(items) > limit else "")
