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
        span = " and ".join(bound)
        raise ConfigError(
            f"{flag} must be a finite number{' ' + span if span else ''}, got {value}.",
            f"Pass {flag} as a number {span}." if span else f"Pass {flag} as a finite number.",
        )
    return value


def whole(value: int | None, flag: str, *, low: int = 1, high: int | None = None, optional: bool = False):
    """``value`` if it is a whole number in range (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return value
    if value is None or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f">= {low}"
        fix = f"Pass {flag} {high} or less." if high is not None and value is not None and value > high else (
            f"Pass {flag} {low} or more.")  # fmt: skip
        raise ConfigError(f"{flag} must be a whole number {span}, got {value}.", fix)
    return value


# -- one check per kind of value -------------------------------------------------------------------------------
# Every command that accepts a value of one of these kinds checks it with the function below, so one rule (and its
# one-line message) holds wherever the value is accepted. The CLI attaches them to options by kind
# (``mobilelwt.app.cli._params``); the core's configs call them too.

VIRTUAL_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit integer
MAX_COUNT = 10**9  # no count of images, runs, steps or epochs is meant to be larger


def output_path(
    path: Path | str | None,
    flag: str = "--out",
    *,
    file: bool = False,
    folders: tuple[Path | str | None, ...] = (),
    files: tuple[Path | str | None, ...] = (),
) -> Path:
    """An output directory (or, with ``file``, an output file) that can be written, and that is none of the
    command's inputs: not one of its input ``folders`` (data) nor inside one, not one of its input ``files``
    (weights, a plan) nor the folder holding one. One rule for every command's --out."""
    if path is None or not str(path).strip():
        raise ConfigError(f"{flag} is empty.", f"Pass {flag} with a path (e.g. {flag} runs/my-build).")
    path = Path(path)
    resolved = path.resolve()
    for virtual in VIRTUAL_FILESYSTEMS:
        if resolved == virtual or virtual in resolved.parents:
            raise ConfigError(f"{flag} {path} is inside {virtual}, a virtual filesystem.", f"Choose another {flag}.")
    for given, is_folder in [*((f, True) for f in folders), *((f, False) for f in files)]:
        if given is None or not str(given).strip() or not Path(given).exists():
            continue
        source = Path(given).resolve()
        if is_folder and source.is_dir() and (resolved == source or source in resolved.parents):
            what = f"the input folder {given}" if resolved == source else f"inside the input folder {given}"
        elif not is_folder and resolved in (source, source.parent):
            what = f"the input {given}" if resolved == source else f"the folder of the input {given}"
        else:
            continue
        raise ConfigError(
            f"{flag} {path} is {what}: writing there would mix outputs with inputs.", f"Choose another {flag}."
        )
    return check_writable_file(path, flag) if file else check_writable_dir(path, flag)


def input_path(path: Path | str | None, flag: str, *, folder: bool = False) -> Path:
    """A file (or, with ``folder``, a directory) to read: given, existing, of that type, readable."""
    what, other = ("directory", "file") if folder else ("file", "directory")
    if path is None or not str(path).strip():
        raise ConfigError(f"{flag} is empty.", f"Pass {flag} with a {what} path.")
    path = Path(path)
    if path.is_file() if folder else path.is_dir():
        raise ConfigError(f"{flag} {path} is a {other}, not a {what}.", f"Pass a {what} to {flag}.")
    if not path.exists():
        raise ConfigError(f"{flag} {path} does not exist.", f"Check the path passed to {flag}.")
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        raise ConfigError(f"{flag} {path} cannot be read (no permission).", "Fix its permissions or copy it.")
    return path


def input_file(path: Path | str | None, flag: str) -> Path:
    """A file to read (a checkpoint, a plan, a runner binary)."""
    return input_path(path, flag)


def input_dir(path: Path | str | None, flag: str) -> Path:
    """A directory to read (a build directory, an image folder)."""
    return input_path(path, flag, folder=True)


def count(value: int | None, flag: str, *, low: int = 1, high: int = MAX_COUNT, optional: bool = False):
    """A whole number of things (images, runs, epochs, steps) from ``low`` to ``high``."""
    return whole(value, flag, low=low, high=high, optional=optional)


def positive(value: float | None, flag: str, *, high: float = 1e9, optional: bool = False):
    """A finite number above zero (a rate, a budget, a temperature)."""
    if value is None and optional:
        return value
    return finite(value, flag, low=0, strict=True, high=high)


def non_negative(value: float | None, flag: str, *, high: float = 1e9, optional: bool = False):
    """A finite number of at least zero (a wait in seconds, a weight decay, a drop in points)."""
    if value is None and optional:
        return value
    return finite(value, flag, low=0, high=high)


def probability(value: float | None, flag: str, *, high: float = 1.0, optional: bool = False):
    """A share from 0 to ``high`` (at most 1)."""
    if value is None and optional:
        return value
    return finite(value, flag, low=0, high=high)


def interval_width(value: float | None, flag: str):
    """The relative half-width a measured interval must reach: above 0, at most 0.5 (±50 %)."""
    return finite(value, flag, low=0, strict=True, high=0.5)


MAX_RATIO = 1000.0  # no speedup or MAC reduction asked of a network is larger


def ratio(value: float | None, flag: str, *, optional: bool = False):
    """A speedup or a MAC reduction: a finite number above 1 (and at most 1000)."""
    if value is None and optional:
        return value
    return finite(value, flag, low=1, strict=True, high=MAX_RATIO)


def seed(value: int | None, flag: str = "--seed"):
    """A seed torch, numpy and Python's random all take: 0 to 2**63 - 1."""
    return whole(value, flag, low=0, high=MAX_SEED)


def host_threads(value: int | None, flag: str = "--threads", *, optional: bool = False):
    """Threads for work on this machine: more than its cores only slows every thread down, so it is refused."""
    whole(value, flag, low=1, optional=optional)
    cores = os.cpu_count() or 1
    if value is not None and value > cores:
        raise ConfigError(
            f"{flag} {value} is more than this machine's {cores} cores (threads beyond the cores make a run slower).",
            f"Pass {flag} {cores} or fewer.",
        )
    return value


def names(value: str | None, flag: str, *, known: tuple[str, ...], optional: bool = True) -> tuple[str, ...] | None:
    """A comma-separated list of names from ``known`` (precisions, report formats, modules); empty is refused."""
    if value is None and optional:
        return None
    items = tuple(item.strip() for item in str(value or "").split(",") if item.strip())
    if not items:
        raise ConfigError(f"{flag} names nothing.", f"Pass one or more of {', '.join(known)}, comma-separated.")
    unknown = [item for item in items if item not in known]
    if unknown:
        raise ConfigError(f"Unknown {flag} {', '.join(unknown)}.", f"Use one or more of: {', '.join(known)}.")
    return items


def one_of(value: str | None, flag: str, *, known: tuple[str, ...], optional: bool = False) -> str | None:
    """One name from ``known`` (a runtime, a runner, a quantisation)."""
    if value is None and optional:
        return None
    if value not in known:
        raise ConfigError(f"Unknown {flag} {value!r}.", f"Use one of: {', '.join(known)}.")
    return value
