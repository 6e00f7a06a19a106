"""Content hashes, the one place they are computed: settings (canonical JSON), tensors, weights, files, folders.

A leaf module (torch and the standard library only): every stage keys its outputs with these, so nothing else
may be needed to compute a key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.io import jsonable


def digest(value: Any) -> str:
    """sha256 of ``value``'s canonical JSON: equal settings give equal digests, whatever their key order."""
    blob = json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def tensor_sha256(tensor: torch.Tensor, into: Any | None = None) -> str:
    """Content hash of a tensor: dtype, shape and every byte."""
    h = into or hashlib.sha256()
    # flattened: a 0-dim buffer (batch norm's num_batches_tracked) cannot be viewed as bytes
    t = tensor.detach().cpu().contiguous().reshape(-1)
    h.update(f"{t.dtype}{tuple(tensor.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state_dict_sha256(model: nn.Module) -> str:
    """Content hash of a model's weights (names, dtypes, shapes, bytes): the same for the same weights, whatever
    file or seed they came from."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode() + b"\0")
        tensor_sha256(tensor, h)
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, in sorted order)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(sha256_file(f).encode())
    return h.hexdigest()
