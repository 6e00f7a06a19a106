"""Run manifests: the versions, seeds, settings and file hashes that produced a set of files."""

from __future__ import annotations

import datetime as dt
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from mobilelwt.hashing import sha256_file

_PACKAGES = (
    "mobilelwt",
    "torch",
    "torchvision",
    "numpy",
    "executorch",
    "coremltools",
    "litert-torch",
    "ai-edge-litert",
)


def environment() -> dict[str, Any]:
    import torch

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
    }


def build_manifest(
    command: str, *, settings: dict[str, Any], seeds: dict[str, int], files: list[Path], **extra: Any
) -> dict[str, Any]:
    return {
        "command": command,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "seeds": seeds,
        "settings": settings,
        "files": {Path(f).name: {"sha256": sha256_file(f), "bytes": Path(f).stat().st_size} for f in files},
        **extra,
    }
