"""Compression plans: which layer (by dotted name) gets which replacement module at which rank.

The stages follow Torch-Pruning/AIMET: :func:`trace` finds the candidate layers, a planner chooses per-layer
modules and ranks (data), :func:`apply_plan` performs the surgery on any fresh copy of the teacher.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilelwt.errors import ConfigError
from mobilelwt.io import write_json
from mobilelwt.modules import REPLACEMENTS, build_replacement
from mobilelwt.profile import layer_macs, profile_module, shape_forward

PLAN_FORMAT = "mobilelwt.plan/1"
CONV_KINDS = ("lowrank_spatial", "bottleneck", "grouped", "depthwise_separable")
LINEAR_KINDS = ("factorized_linear",)


@dataclass(frozen=True)
class Candidate:
    """A layer that a replacement may take over, with what it costs in the teacher."""

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    macs: int
    params: int


@dataclass
class LayerChoice:
    module: str
    params: dict[str, Any]
    teacher_macs: int = 0
    student_macs: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    model: str
    input_size: int
    num_classes: int
    target_speedup: float
    planner: str
    layers: dict[str, LayerChoice]
    teacher_macs: int = 0
    student_macs: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def mac_speedup(self) -> float:
        return self.teacher_macs / self.student_macs if self.student_macs else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        if data.get("format") != PLAN_FORMAT:
            raise ConfigError(f"Not a mobilelwt plan (format {data.get('format')!r}).", f"Expected {PLAN_FORMAT}.")
        fields = {k: v for k, v in data.items() if k != "format"}
        fields["layers"] = {name: LayerChoice(**choice) for name, choice in data["layers"].items()}
        return cls(**fields)

    def save(self, path: Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Plan:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"Plan {path} does not exist.", "Run `mobilelwt compress` first.") from None
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            raise ConfigError(f"Plan {path} is not valid ({exc}).", "Re-run `mobilelwt compress`.") from None


def trace(model: nn.Module, input_size: int, *, skip: Iterable[str] = ()) -> list[Candidate]:
    """Conv2d and Linear layers in execution order with their input/output shapes and MACs (shape-only)."""
    skip = set(skip)
    found: list[Candidate] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        name = names[module]
        if name in skip or any(c.name == name for c in found):  # a module called twice is one layer
            return
        params = sum(p.numel() for p in module.parameters(recurse=False))
        found.append(
            Candidate(
                name,
                type(module).__name__,
                tuple(inputs[0].shape[1:]),
                tuple(output.shape[1:]),
                layer_macs(module, output),
                params,
            )
        )

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        shape_forward(model, (3, input_size, input_size), restart=found.clear)
    finally:
        for handle in handles:
            handle.remove()
    return found


def default_candidates(model: nn.Module, input_size: int, head: str) -> list[Candidate]:
    """Every conv and linear layer except the first conv (3 input channels: little to gain, much to lose)
    and the classifier head (its size is the class count)."""
    layers = trace(model, input_size, skip=[head])
    return [c for c in layers if not (c.type == "Conv2d" and c.input_shape[0] <= 4)]


def allowed_kinds(candidate: Candidate, layer: nn.Module) -> tuple[str, ...]:
    if isinstance(layer, nn.Linear):
        return LINEAR_KINDS
    assert isinstance(layer, nn.Conv2d)
    if layer.groups != 1:
        return ()
    if layer.kernel_size == (1, 1):
        return ("bottleneck",)
    return CONV_KINDS


def replacement_macs(kind: str, layer: nn.Module, input_shape: tuple[int, ...], params: dict[str, Any]) -> int:
    """MACs of the replacement ``kind`` with ``params`` for ``layer`` (built shape-only on the meta device)."""
    with torch.device("meta"):
        module = build_replacement(kind, layer, init=False, **params)
    return sum(row.macs for row in profile_module(module, input_shape))


def apply_plan(model: nn.Module, plan: Plan, *, init: bool = True, inplace: bool = False) -> nn.Module:
    """Replace every planned layer of ``model`` (a teacher) by its module; ``init`` uses the closed forms."""
    student = model if inplace else copy.deepcopy(model)
    for name, choice in plan.layers.items():
        try:
            layer = student.get_submodule(name)
        except AttributeError:
            raise ConfigError(
                f"The plan names layer {name!r}, which {plan.model} does not have.",
                "Use a plan made for this model.",
            ) from None
        REPLACEMENTS.get(choice.module)
        student.set_submodule(name, build_replacement(choice.module, layer, init=init, **choice.params))
    return student
