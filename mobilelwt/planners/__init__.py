"""Planners choose, for a target, which layers get which replacement at which rank.

Each planner registers itself in :data:`PLANNERS` (``mobilelwt.planners._registry``) with what its number
means: a measured ``speedup`` on the latency target, or a ``mac_speedup``. Importing this package registers all.
"""

from __future__ import annotations

from mobilelwt.planners import latency, measured, sensitivity, uniform  # noqa: F401  (registers the planners)
from mobilelwt.planners._common import PlanningContext
from mobilelwt.planners._registry import PLANNERS, Planner, PlanRequest, register_planner
from mobilelwt.planners.memory import PlanMemory
from mobilelwt.planners.sensitivity import plan_sensitivity
from mobilelwt.planners.uniform import plan_uniform

__all__ = ["PLANNERS", "PlanMemory", "PlanRequest", "Planner", "PlanningContext", "plan_sensitivity", "plan_uniform",
           "register_planner"]  # fmt: skip
