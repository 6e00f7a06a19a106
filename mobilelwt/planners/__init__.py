"""Planners choose, for a target speedup, which layers get which replacement at which rank."""

from __future__ import annotations

from mobilelwt.planners._common import PlanningContext
from mobilelwt.planners.sensitivity import plan_sensitivity
from mobilelwt.planners.uniform import plan_uniform

PLANNERS = ("latency", "latency-uniform", "uniform", "sensitivity")

__all__ = ["PLANNERS", "PlanningContext", "plan_sensitivity", "plan_uniform"]
