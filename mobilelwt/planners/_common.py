"""What the planners share: candidate options (module kind × rank) with their MACs, cached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from mobilelwt.errors import ConfigError, OutOfReachError
from mobilelwt.modules import REPLACEMENTS
from mobilelwt.plan import Candidate, LayerChoice, Plan, allowed_kinds, replacement_macs, trace


@dataclass
class PlanningContext:
    """A teacher and its candidate layers; MACs of options are computed once and cached."""

    model_name: str
    model: nn.Module
    input_size: int
    num_classes: int
    candidates: list[Candidate]
    teacher_macs: int
    conv_module: str = "lowrank_spatial"
    linear_module: str = "factorized_linear"
    groups: int = 4

    def __post_init__(self) -> None:
        self._macs: dict[tuple[str, str, int], int] = {}
        for kind in (self.conv_module, self.linear_module):
            REPLACEMENTS.get(kind)

    @property
    def fixed_macs(self) -> int:
        return self.teacher_macs - sum(c.macs for c in self.candidates)

    def layer(self, candidate: Candidate) -> nn.Module:
        return self.model.get_submodule(candidate.name)

    def kind_for(self, candidate: Candidate) -> str | None:
        layer = self.layer(candidate)
        kinds = allowed_kinds(candidate, layer)
        preferred = self.linear_module if isinstance(layer, nn.Linear) else self.conv_module
        if preferred in kinds:
            return preferred
        return kinds[0] if kinds else None

    def params(self, kind: str, rank: int) -> dict[str, Any]:
        return {"rank": rank, "groups": self.groups} if kind == "grouped" else {"rank": rank}

    def ranks(self, candidate: Candidate, kind: str) -> list[int]:
        """Ranks worth considering, ascending, up to the one whose module costs as much as the layer."""
        layer = self.layer(candidate)
        if kind == "depthwise_separable":
            grid = list(range(1, 17))
        else:
            step = 8 * self.groups if kind == "grouped" else 8
            top = getattr(REPLACEMENTS.get(kind), "max_rank", lambda _layer: 4096)(layer)
            grid = list(range(step, max(step, top) + 1, step))
        useful = [r for r in grid if self.macs(candidate, kind, r) < candidate.macs]
        return useful or grid[:1]

    def macs(self, candidate: Candidate, kind: str, rank: int) -> int:
        key = (candidate.name, kind, rank)
        if key not in self._macs:
            self._macs[key] = replacement_macs(
                kind, self.layer(candidate), candidate.input_shape, self.params(kind, rank)
            )
        return self._macs[key]

    def target_macs(self, mac_speedup: float) -> int:
        """The student's MAC budget for a MAC reduction of ``mac_speedup``."""
        if mac_speedup <= 1.0:
            raise ConfigError(f"--mac-speedup must be above 1, got {mac_speedup}.", "Pass e.g. --mac-speedup 4.")
        return int(self.teacher_macs / mac_speedup)

    def choice(self, candidate: Candidate, kind: str, rank: int, **notes: Any) -> LayerChoice:
        return LayerChoice(
            module=kind,
            params=self.params(kind, rank),
            teacher_macs=candidate.macs,
            student_macs=self.macs(candidate, kind, rank),
            notes=notes,
        )

    def plan(self, planner: str, target: float, layers: dict[str, LayerChoice], **details: Any) -> Plan:
        """The plan of ``layers``; ``target`` is what the planner was asked to meet (its kind in ``details``)."""
        student = self.fixed_macs + sum(c.macs for c in self.candidates if c.name not in layers)
        student += sum(choice.student_macs for choice in layers.values())
        return Plan(
            model=self.model_name,
            input_size=self.input_size,
            num_classes=self.num_classes,
            target_speedup=target,
            planner=planner,
            layers=layers,
            teacher_macs=self.teacher_macs,
            student_macs=student,
            details=details,
        )

    def smallest_plan(self) -> Plan:
        """Every replaceable layer at its smallest rank: the most a plan can cut."""
        layers = {}
        for candidate in self.candidates:
            kind = self.kind_for(candidate)
            if kind:
                layers[candidate.name] = self.choice(candidate, kind, self.ranks(candidate, kind)[0])
        return self.plan("smallest", float("nan"), layers)

    def all_layers(self) -> list[Candidate]:
        """Every Conv2d/Linear of the teacher in execution order, replaceable or not."""
        if not hasattr(self, "_all_layers"):
            self._all_layers = trace(self.model, self.input_size)
        return self._all_layers

    def why_kept(self, layer: Candidate) -> str | None:
        """Why a layer is never replaced (None for a replaceable one)."""
        if any(c.name == layer.name for c in self.candidates):
            return None if self.kind_for(layer) else "grouped/depthwise"
        module = self.layer(layer)
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            return "grouped/depthwise"
        if layer.name == self.all_layers()[-1].name:
            return "classifier head"
        if isinstance(module, nn.Conv2d) and layer.input_shape[0] <= 4:
            return "first conv"
        return "FC (--no-compress-fc)" if isinstance(module, nn.Linear) else "kept"

    def kept_layers(self, limit: int = 3) -> str:
        """The never-replaced layers that cost the most MACs, with their share and why they are kept."""
        kept = sorted(
            ((layer, why) for layer in self.all_layers() if (why := self.why_kept(layer))), key=lambda x: -x[0].macs
        )
        if not kept:
            return "none"
        shown = ", ".join(
            f"{layer.name} ({why}, {100 * layer.macs / self.teacher_macs:.0f}%)" for layer, why in kept[:limit]
        )
        return shown + (f" and {len(kept) - limit} more" if len(kept) > limit else "")

    def infeasible(self, mac_speedup: float, best: int) -> OutOfReachError:
        kept_macs = sum(x.macs for x in self.all_layers() if self.why_kept(x))
        return OutOfReachError(
            f"A {mac_speedup}× MAC reduction is out of reach for {self.model_name}: even the smallest modules leave "
            f"{best / 1e6:.1f} M of {self.teacher_macs / 1e6:.1f} M MACs ({self.teacher_macs / best:.2f}×); the "
            f"layers that are never replaced cost {kept_macs / 1e6:.1f} M, most of all {self.kept_layers()}.",
            f"Ask for at most --mac-speedup {self.teacher_macs / best:.2f}.",
            reachable=self.teacher_macs / best,
        )
