"""The planner registry: each planner registers itself with what its number means and one entry point.

A planner meets either a *measured* speedup on a latency target (``speedup``, timed teacher vs student) or a
MAC reduction (``mac_speedup``); the two never share a name. Every planner is called the same way, with a
:class:`PlanRequest` that carries what any of them may need (built lazily where it costs time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mobilelwt.errors import ConfigError
from mobilelwt.plan import Plan
from mobilelwt.planners._common import PlanningContext
from mobilelwt.planners.memory import PlanMemory
from mobilelwt.planners.table import LatencyProbe
from mobilelwt.progress import ProgressCallback, ignore_progress
from mobilelwt.registry import Registry


@dataclass
class PlanRequest:
    """What a planner is asked: the teacher's layers, the target, and the means to meet it."""

    ctx: PlanningContext
    speedup: float | None = None  # a measured speedup on the latency target
    mac_speedup: float | None = None  # a MAC reduction
    calibration: Callable[[], torch.Tensor] = lambda: torch.empty(0)  # calibration images, loaded when asked
    probe: Callable[[], LatencyProbe] | None = None  # the latency target, connected when asked
    table_path: Path | None = None  # the build's latency table
    shared_table: Path | None = None  # a latency table shared between builds (read and extended)
    allow_foreign_table: bool = False
    kinds: tuple[str, ...] = ()  # candidate module kinds for convolutions
    grid_points: int = 8
    band: float | None = None  # the share above the target that still meets it (None: the timing width)
    memory: PlanMemory | None = None  # timings shared with the other plans of one search (a frontier's rungs)
    on_progress: ProgressCallback = field(default=ignore_progress)

    def latency_probe(self) -> LatencyProbe:
        if self.probe is None:
            raise ConfigError(
                "The latency planner needs a target to time candidates on.", "Run it from the CLI or pass a probe."
            )
        return self.probe()


@dataclass(frozen=True)
class Planner:
    """One registered planner."""

    name: str
    measured: bool  # True: meets ``speedup`` as measured on the target; False: meets ``mac_speedup``
    run: Callable[[PlanRequest], Plan]
    summary: str


PLANNERS: Registry[Planner] = Registry("planner")


def register_planner(name: str, *, measured: bool, summary: str) -> Callable[[Callable[[PlanRequest], Plan]], Callable]:
    """Decorator: register ``run`` as planner ``name``."""

    def decorator(run: Callable[[PlanRequest], Plan]) -> Callable[[PlanRequest], Plan]:
        PLANNERS.add(name, Planner(name, measured, run, summary))
        return run

    return decorator
