"""Checks of user options that run before any work starts: numbers in range, writable output paths."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from mobilelwt.errors import ConfigError


def check_writable_dir(path: Path, what: str = "--out") -> Path:
    """Refuse an output directory that cannot be created or written, before any work starts."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a directory.", "Pass a directory path (new or existing).")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {path}: {existing} is a file.", "Pass a directory path under a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} is not writable (no permission on {existing}).", "Choose another --out.")
    try:  # access() says yes to root on a read-only mount: try for real
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {path} is not writable ({exc.strerror}).", "Choose another --out.") from None
    return path


def check_writable_file(path: Path, what: str = "--out") -> Path:
    """Refuse an output file path that is a directory or lies in an unwritable place, before any work starts."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a file.", f"Pass a file path, e.g. {path / 'model.pt'}.")
    check_writable_dir(path.parent, what)
    return path


def finite(value: float, flag: str, *, low: float | None = None, high: float | None = None, strict: bool = False):
    """``value`` if it is a finite number in range, else one clear error naming ``flag``."""
    ok = isinstance(value, int | float) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bound = []
        if low is not None:
            bound.append(f"{'>' if strict else '>='} {low:g}")
        if high is not None:
            bound.append(f"<= {high:g}")
        raise ConfigError(
            f"{flag} must be a finite number{' ' + ' and '.join(bound) if bound else ''}, got {value}.",
            f"Pass a valid {flag}.",
        )
    return value


def whole(value: int | None, flag: str, *, low: int = 1, high: int | None = None, optional: bool = False):
    """``value`` if it is a whole number in range (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return value
    if value is None or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{flag} must be a whole number {span}, got {value}.", f"Pass {flag} {max(low, 1)} or more.")
    return value
