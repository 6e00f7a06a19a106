"""A content-addressed cache of lowered programs (``.pte`` and ``.tflite`` bytes).

Lowering is the slow part of timing and exporting small models (about 1 s for one conv layer and 3-4 s for a
small network on 2 cores, most of it ``torch.export``'s decompositions), and a build lowers the same program
more than once: the planner's confirming timing, the export, a resumed build, a frontier's repeated plans. The
key is what the program is made of: the exported graph's code, every weight and constant, the input shapes,
the runtime's config, the calibration images (int8) and the versions of the converters. Lowering the same
content again gives the same program, so a hit returns what a fresh lowering would.

Where: ``$MOBILELWT_CACHE`` (``off`` turns it off), else ``$XDG_CACHE_HOME/mobilelwt/programs`` (default
``~/.cache``). Entries are written atomically and checked against their recorded sha256 on every read (a damaged
one is lowered again and replaced); the oldest are removed past ``$MOBILELWT_CACHE_MAX_MB`` (default 2048).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.hashing import tensor_sha256
from mobilelwt.io import atomic_path

CACHE_ENV = "MOBILELWT_CACHE"
MAX_MB_ENV = "MOBILELWT_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048
# Raise when what a key covers changes (the lowering code's own steps included): older entries are then unreachable.
CACHE_FORMAT = 1
_OFF = {"off", "0", "no", "false", "none"}


def cache_dir() -> Path | None:
    """Where lowered programs are kept, or None when the cache is off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF or not value.strip() else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mobilelwt" / "programs"


def _versions(packages: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for name in ("torch", *packages):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def program_key(
    kind: str,
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    config: Any,
    *,
    calibration: torch.Tensor | None = None,
    packages: tuple[str, ...] = (),
) -> str | None:
    """The content key of ``model`` lowered by ``kind`` with ``config``; None when the model does not export (the
    lowering then runs uncached and reports the error itself)."""
    try:
        exported = torch.export.export(model.eval(), tuple(example_inputs))
    except Exception:  # the lowering exports too, and names what failed
        return None
    h = hashlib.sha256()
    settings = asdict(config) if is_dataclass(config) else repr(config)
    header = {"format": CACHE_FORMAT, "kind": kind, "config": settings, "versions": _versions(packages),
              "inputs": [[str(x.dtype), list(x.shape)] for x in example_inputs]}  # fmt: skip
    h.update(json.dumps(header, sort_keys=True).encode())
    h.update(exported.graph_module.code.encode())
    h.update(str(exported.graph_signature).encode())
    for group in (exported.state_dict, exported.constants):
        for name, value in sorted(group.items()):
            h.update(name.encode() + b"\0")
            if isinstance(value, torch.Tensor):
                tensor_sha256(value, h)
            else:  # a script object constant: its repr is all that can be said of it
                h.update(repr(value).encode())
    h.update(b"calibration\0")
    if calibration is not None:
        tensor_sha256(calibration, h)
    return h.hexdigest()


def _entry(directory: Path, kind: str, key: str) -> tuple[Path, Path]:
    folder = directory / kind / key[:2]
    return folder / f"{key}.bin", folder / f"{key}.json"


def read(kind: str, key: str) -> tuple[bytes, dict[str, Any]] | None:
    """The cached program and its summary, or None (absent, unreadable or damaged: a damaged entry is removed)."""
    directory = cache_dir()
    if directory is None:
        return None
    data_path, meta_path = _entry(directory, kind, key)
    try:
        meta = json.loads(meta_path.read_text())
        data = data_path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        for path in (data_path, meta_path):
            with contextlib.suppress(OSError):
                path.unlink()
        return None
    with contextlib.suppress(OSError):
        os.utime(meta_path)  # recently used: pruned last
    return data, meta.get("summary") or {}


def write(kind: str, key: str, data: bytes, summary: dict[str, Any] | None = None) -> None:
    """Keep ``data`` under ``key`` (the program first, then its record, each atomically), then prune. A cache
    that cannot be written (read-only home, full disk) is skipped: it only saves time."""
    directory = cache_dir()
    if directory is None:
        return
    data_path, meta_path = _entry(directory, kind, key)
    try:
        with atomic_path(data_path) as tmp:
            tmp.write_bytes(data)
        with atomic_path(meta_path) as tmp:
            record = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "summary": summary or {}}
            tmp.write_text(json.dumps(record, sort_keys=True))
        prune(directory)
    except (OSError, TypeError, ValueError):
        return


def prune(directory: Path, max_bytes: int | None = None) -> int:
    """Remove the least recently used entries until the cache holds at most ``max_bytes``; returns how many."""
    if max_bytes is None:
        try:
            max_bytes = int(float(os.environ.get(MAX_MB_ENV, DEFAULT_MAX_MB)) * 2**20)
        except ValueError:
            max_bytes = DEFAULT_MAX_MB * 2**20
    entries = []
    for meta_path in directory.glob("*/*/*.json"):
        data_path = meta_path.with_suffix(".bin")
        try:
            entries.append((meta_path.stat().st_mtime, data_path.stat().st_size, meta_path, data_path))
        except OSError:
            continue
    total, removed = sum(size for _, size, _, _ in entries), 0
    for _, size, meta_path, data_path in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        for path in (meta_path, data_path):
            with contextlib.suppress(OSError):
                path.unlink()
        total, removed = total - size, removed + 1
    return removed


def cached_lowering(
    kind: str,
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    config: Any,
    lower: Callable[[], tuple[bytes, dict[str, Any]]],
    *,
    calibration: torch.Tensor | None = None,
    packages: tuple[str, ...] = (),
) -> tuple[bytes, dict[str, Any]]:
    """``lower()``'s (program, summary), from the cache when this content was lowered before."""
    if cache_dir() is None:
        return lower()
    key = program_key(kind, model, example_inputs, config, calibration=calibration, packages=packages)
    if key is None:
        return lower()
    hit = read(kind, key)
    if hit is not None:
        return hit
    data, summary = lower()
    write(kind, key, data, summary)
    return data, summary
