"""What every target adapter shares: the Artifact record, typed errors, host timing."""

from __future__ import annotations

import os
import re
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.errors import MobileLWTError
from mobilelwt.hashing import sha256_file, tree_sha256
from mobilelwt.io import atomic_path

REWRITE_LAYER = (
    "Rewrite that layer with exportable torch ops (no numpy, no Python branches on tensor values), or export to "
    "another runtime."
)


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
    def from_path(cls, path: Path, fmt: str, runtime: str, precision: str, started: float, **summary: Any) -> Artifact:
        """Describe a file or a package directory (``.mlpackage``) that is already in place."""
        path = Path(path)
        seconds = time.perf_counter() - started
        return cls(path, fmt, runtime, precision, tree_bytes(path), tree_sha256(path), seconds, summary)

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


def tree_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished package directory into place; a previous one is removed only once the new one is complete."""
    final = Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


_OP_PATTERNS = (
    re.compile(r"aten\.(\w+?)(?:\.default|\.Tensor|\.Scalar|\.int)?\b"),
    re.compile(r"[Uu]nsupported (?:fx node|op(?:erator)?)[: ]+'?(\w+)"),
    re.compile(r"torch\.ops\.\w+\.(\w+)"),
)


def locate_ops(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[tuple[str, str, str]]:
    """(op, module path, module class) for every call in the exported graph of ``model``."""
    try:
        graph = torch.export.export(model.eval(), example_inputs).graph
    except Exception:
        return []
    found = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        stack = node.meta.get("nn_module_stack") or {}
        path, cls = next(reversed(stack.values()), ("", None)) if stack else ("", None)
        cls_name = getattr(cls, "__name__", str(cls).rsplit(".", 1)[-1].strip("'>")) if cls else "model"
        found.append((op, path.removeprefix("L['self'].") if path else "", cls_name))
    return found


def locate_unexportable(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> tuple[str, str] | None:
    """(module path, class) of the innermost module that ``torch.export`` cannot capture, or None.

    Used when export fails before any graph exists (numpy calls, data-dependent Python branches): each child is
    exported alone on the inputs it saw in an eager forward pass, descending into the first that fails; a
    module whose children all export holds the problem in its own ``forward``.
    """
    seen: dict[nn.Module, tuple[Any, ...]] = {}

    def record(module: nn.Module, args: tuple[Any, ...]) -> None:
        seen.setdefault(module, args)

    handles = [m.register_forward_pre_hook(record) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(*example_inputs)
    except Exception:
        return None
    finally:
        for handle in handles:
            handle.remove()

    def exports(module: nn.Module) -> bool:
        try:
            torch.export.export(module, seen[module])
        except Exception:
            return False
        return True

    if exports(model):
        return None
    path, current = "", model
    while True:
        failing = next(
            ((name, child) for name, child in current.named_children() if child in seen and not exports(child)), None
        )
        if failing is None:
            return path or "(top level)", type(current).__name__
        path = f"{path}.{failing[0]}" if path else failing[0]
        current = failing[1]


def describe_failing_op(
    exc: BaseException, model: nn.Module | None = None, example_inputs: tuple[torch.Tensor, ...] | None = None
) -> str:
    """'operator X in layer Y (Class): first line of the error' as far as the error and the graph tell."""
    text = str(exc)
    names = [m.group(1) for pattern in _OP_PATTERNS for m in pattern.finditer(text)]
    ops = locate_ops(model, example_inputs) if model is not None and example_inputs is not None else []
    match = None
    for name in names:  # an op the message names, found in the graph
        match = next((o for o in ops if o[0] == name or o[0].startswith(name)), None)
        if match:
            break
    if match is None:  # the message only describes it ("Only 1D FFT ..."): match its first line's words to op names
        words = set(re.findall(r"[a-z][a-z0-9]{2,}", first_line(exc).lower()))
        match = next((o for o in ops if words & (set(re.split(r"[_\d]+", o[0])) - {"default", ""})), None)
    detail = first_line(exc).rstrip(".")
    if match:
        op, path, cls = match
        return f"operator {op} in layer {path or '(top level)'} ({cls}): {detail}"
    if names:
        return f"operator {names[0]}: {detail}"
    if model is not None and example_inputs is not None and not ops:
        culprit = locate_unexportable(model, example_inputs)
        if culprit:
            return f"layer {culprit[0]} ({culprit[1]}) cannot be captured by torch.export: {detail}"
    return detail


_COMPUTE = re.compile(r"convolution|conv2d|addmm|\bmm\b|linear|matmul|bmm", re.IGNORECASE)


def is_compute_op(name: str) -> bool:
    """Ops that carry a network's MACs: off the delegate they are what makes a model slow."""
    return bool(_COMPUTE.search(name))


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
