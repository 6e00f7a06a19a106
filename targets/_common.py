"""What every target adapter shares: the Artifact record, typed errors, host timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mobilelwt.errors import MobileLWTError
from mobilelwt.io import atomic_path, sha256_file


class TargetError(MobileLWTError):
    """An export or a host run that failed."""


class UnsupportedOpError(TargetError):
    """An operator the runtime cannot lower."""


@dataclass
class Artifact:
    path: Path
    format: str
    runtime: str
    precision: str
    bytes: int
    sha256: str
    export_seconds: float
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data

    @classmethod
    def write(
        cls, data: bytes, path: Path, fmt: str, runtime: str, precision: str, started: float, **summary: Any
    ) -> Artifact:
        """Write ``data`` to ``path`` atomically and describe it; ``started`` is when the export began."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        seconds = time.perf_counter() - started
        return cls(path, fmt, runtime, precision, path.stat().st_size, sha256_file(path), seconds, summary)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def time_callable(run: Callable[[], Any], *, warmup: int = 5, runs: int = 20) -> list[float]:
    """Wall-clock milliseconds of ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)
