"""A deterministic stand-in for a target runtime: latency from MACs and weights, no lowering, no noise.

Each Conv2d/Linear costs a per-call overhead plus time per MAC and per weight byte (memory-bound FC layers);
a whole network runs ``in_network`` times as fast as its layers timed alone, so a planner that trusts its
table alone misses, and must correct by what it measures.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mobilelwt.profile import profile_module


class FakeProbe:
    def __init__(
        self,
        *,
        per_mac_ns: float = 1.0,
        per_weight_ns: float = 0.5,
        overhead_ms: float = 0.01,
        in_network: float = 0.8,
        fixed_ms: float = 0.05,
        identity: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        ci: float = 0.02,
    ) -> None:
        self.per_mac_ns, self.per_weight_ns, self.overhead_ms = per_mac_ns, per_weight_ns, overhead_ms
        self.in_network, self.fixed_ms, self.ci = in_network, fixed_ms, ci
        self._identity = identity or {"device": "host", "cpu": "Fake CPU", "cpu_count": 2, "machine": "x86_64"}
        self._context = context or {"runtime": "fake", "runtime_version": "1", "precision": "fp32", "threads": 2}
        self.description = "fake runtime"
        self.timed: list[str] = []  # what was timed through time_modules
        self.compares = 0

    def facts(self) -> dict[str, Any]:
        return dict(self._identity)

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def context(self) -> dict[str, Any]:
        return dict(self._context)

    def alone_ms(self, module: nn.Module, input_shape: tuple[int, ...]) -> float:
        rows = profile_module(module, tuple(input_shape[1:]))
        ms = 0.0
        for row in rows:
            ms += (self.overhead_ms if row.macs else 0.0) + row.macs * self.per_mac_ns * 1e-6
        weights = sum(p.numel() for p in module.parameters())
        return ms + weights * 4 * self.per_weight_ns * 1e-6

    def network_ms(self, model: nn.Module, input_shape: tuple[int, ...]) -> float:
        return self.fixed_ms + self.in_network * self.alone_ms(model, input_shape)

    def time_modules(self, modules, input_shape, *, reference):
        self.timed.extend(modules)
        times = {name: self.alone_ms(m, input_shape) for name, m in modules.items()}
        out = {}
        for name, ms in times.items():
            entry: dict[str, Any] = {"median_ms": ms, "cv": 0.0, "runs": 6}
            if name != reference:
                ratio = times[reference] / ms
                entry.update(speedup=ratio, speedup_ci95=[ratio * (1 - self.ci), ratio * (1 + self.ci)])
            out[name] = entry
        out[reference].update(batches=2, decided=True)
        return out

    def compare(self, teacher, student, input_shape, *, target=None):
        self.compares += 1
        t, s = self.network_ms(teacher, input_shape), self.network_ms(student, input_shape)
        ratio = t / s
        return {"teacher_ms": t, "student_ms": s, "speedup": ratio,
                "speedup_ci95": [ratio * (1 - self.ci), ratio * (1 + self.ci)], "runs": 6, "batches": 2,
                "decided": True, "cv": [0.0, 0.0]}  # fmt: skip

    def layer(self, module, input_shape) -> float:
        return self.alone_ms(module, input_shape)


def fake_factory(probe: FakeProbe):
    """A ``latency_probe`` factory for :func:`mobilelwt.compress.compress` that always hands out ``probe``."""
    return lambda _target: probe


__all__ = ["FakeProbe", "fake_factory", "torch"]
