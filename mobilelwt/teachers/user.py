"""The user's own classifier as a teacher: ``--model path/to/file.py:factory`` or ``--model package.module:factory``.

``factory`` is any callable that returns an ``nn.Module`` mapping ``(N, 3, H, W)`` images to class logits; it is
called with ``num_classes=`` when its signature takes that keyword. Building the model runs the user's Python
code, so it is an explicit opt-in (:func:`trust_user_code`, the CLI's ``--trust-code``); a build directory records
the code's sha256, and its later stages load that exact file again without asking (and refuse a changed one).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mobilelwt.errors import ConfigError

_MODULE_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_trust = {"all": False, "sha256": set()}


def is_user_model(name: str) -> bool:
    """Registered teachers are plain names; a user model is ``source:factory``."""
    return ":" in name


def trust_user_code(enabled: bool = True) -> None:
    """Allow (or stop allowing) building models from user code in this process."""
    _trust["all"] = enabled


def trust_code_hash(sha256: str) -> None:
    """Allow exactly this file content (what a build directory recorded when the user opted in)."""
    _trust["sha256"].add(sha256)


@dataclass(frozen=True)
class UserModelSource:
    """Where a user model's code lives: the file (absolute), its sha256 and the factory's name."""

    reference: str  # canonical --model value: absolute file path or module path, ':' factory
    kind: str  # "file" or "module"
    location: str  # file path, or dotted module path
    file: Path
    factory: str
    sha256: str

    def describe(self) -> dict[str, str]:
        return {"reference": self.reference, "kind": self.kind, "file": str(self.file), "sha256": self.sha256}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_source(name: str) -> UserModelSource:
    """Parse ``name`` and find its file without running any of it."""
    location, _, factory = name.rpartition(":")
    if not location or not factory.isidentifier():
        raise ConfigError(
            f"--model {name!r} is neither a known model nor 'path/to/file.py:factory' / 'package.module:factory'.",
            "Name the file or module, a colon and the function that returns the model, e.g. --model net.py:build.",
        )
    if location.endswith(".py") or "/" in location or "\\" in location:
        path = Path(location).expanduser()
        if not path.is_file():
            raise ConfigError(f"Model file {location} does not exist.", "Check the path before the ':' in --model.")
        if path.suffix != ".py":
            raise ConfigError(f"Model file {location} is not a .py file.", "Point --model at a Python source file.")
        path = path.resolve()
        return UserModelSource(f"{path}:{factory}", "file", str(path), path, factory, _sha256(path))
    if not _MODULE_PATH.match(location):
        raise ConfigError(f"{location!r} is not a Python module path.", "Use --model package.module:factory.")
    try:
        found = importlib.util.find_spec(location)
    except (ImportError, ValueError) as exc:  # a parent package that cannot be imported
        raise ConfigError(
            f"Cannot find module {location} ({exc}).", "Check that it is installed or on PYTHONPATH."
        ) from None
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise ConfigError(
            f"Cannot find module {location}.", "Install it, add its folder to PYTHONPATH, or pass the file's path."
        )
    path = Path(found.origin).resolve()
    return UserModelSource(f"{location}:{factory}", "module", location, path, factory, _sha256(path))


def _check_trusted(source: UserModelSource) -> None:
    if _trust["all"] or source.sha256 in _trust["sha256"]:
        return
    raise ConfigError(
        f"Building --model {source.reference} runs the Python code in {source.file}; that needs your explicit consent.",
        "Pass --trust-code if you trust that file.",
    )


@functools.cache
def _load_factory(source: UserModelSource) -> Any:
    """Import the code (once per content) and return the factory."""
    try:
        if source.kind == "file":
            module_name = f"mobilelwt_user_model_{source.sha256[:16]}"
            spec = importlib.util.spec_from_file_location(module_name, source.file)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # dataclasses and pickling look their module up here
            sys.path.insert(0, str(source.file.parent))  # the file may import its neighbours
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(source.file.parent))
        else:
            module = importlib.import_module(source.location)
    except Exception as exc:  # any error in the user's module is theirs to fix: name it and where it happened
        sys.modules.pop(f"mobilelwt_user_model_{source.sha256[:16]}", None)
        raise ConfigError(
            f"Importing {source.location} failed: {type(exc).__name__}: {exc}{_where(exc, source.file)}.",
            "Fix the model code (run `python` on it to see the full traceback).",
        ) from None
    factory = getattr(module, source.factory, None)
    if not callable(factory):
        callables = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ConfigError(
            f"{source.location} has no function {source.factory!r}.",
            f"Name one of: {', '.join(callables) or '(none defined)'}.",
        )
    return factory


def _where(exc: BaseException, file: Path) -> str:
    lines = [f.lineno for f in _frames(exc) if Path(f.filename).resolve() == file]
    if isinstance(exc, SyntaxError) and exc.lineno:
        lines.append(exc.lineno)
    return f" (line {lines[-1]} of {file.name})" if lines else ""


def _frames(exc: BaseException) -> list[Any]:
    import traceback

    return list(traceback.extract_tb(exc.__traceback__))


def build_user_model(source: UserModelSource, num_classes: int | None) -> nn.Module:
    """Call the factory (with ``num_classes`` when it takes it) and check it returned a module."""
    _check_trusted(source)
    factory = _load_factory(source)
    kwargs = {}
    if num_classes is not None and _accepts_keyword(factory, "num_classes"):
        kwargs["num_classes"] = num_classes
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise ConfigError(
            f"{source.reference}() failed: {type(exc).__name__}: {exc}{_where(exc, source.file)}.",
            "Fix the factory, or check --num-classes.",
        ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{source.reference} returned {type(model).__name__}, not a torch.nn.Module.",
            "Make the factory return the model.",
        )
    return model


def _accepts_keyword(func: Any, keyword: str) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
