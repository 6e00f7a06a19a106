"""The uniform latency planner (``--planner latency-uniform``): scale a uniform MAC cut until the *measured*
speedup on the target meets the target.

Every layer keeps the same share of its MACs, whatever that costs in accuracy or buys in time; the default
``latency`` planner (:mod:`mobilelwt.planners.measured`) allocates per layer from measured tables instead. Both
decide only on timings by the one protocol, and accept a plan only when its interval holds the target or lies above
it, and not above the target's band (an overshoot costs accuracy the user did not ask to spend).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mobilelwt.errors import ConfigError
from mobilelwt.plan import Plan, apply_plan
from mobilelwt.planners._common import PlanningContext
from mobilelwt.planners._registry import PlanRequest, register_planner
from mobilelwt.planners.reach import (
    MEETS,
    OVERSHOOTS,
    band_of,
    first_meet_settles,
    measure_confirmed,
    nothing_to_gain,
    rel_width_of,
)
from mobilelwt.planners.table import LatencyProbe
from mobilelwt.planners.uniform import plan_uniform
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress


def plan_latency_uniform(
    ctx: PlanningContext,
    speedup: float,
    *,
    probe: LatencyProbe,
    base_planner: Callable[[PlanningContext, float], Plan] = plan_uniform,
    max_rounds: int = 6,
    band: float | None = None,
    on_progress: ProgressCallback = ignore_progress,
) -> Plan:
    """The least-compressed uniform plan whose measured speedup meets ``speedup`` (the interval holds the target
    or lies above it, but not above the target's band: an overshoot is cut back)."""
    shape = (1, 3, ctx.input_size, ctx.input_size)
    width, settles = band_of(probe, band), first_meet_settles(probe, band)
    aim_share = rel_width_of(probe)  # aimed just above the target, whatever the band: the slower end is more accurate
    mac_target, rounds = speedup, []
    below, above = 1.0, math.inf  # MAC targets known to miss / to overshoot the measured target
    best: tuple[Plan, dict] | None = None
    nearest_over: tuple[Plan, dict] | None = None
    for round_index in range(max_rounds):
        try:
            plan = base_planner(ctx, mac_target)
        except ConfigError:
            break
        student = apply_plan(ctx.model, plan, init=False)
        first, confirmation, verdict = measure_confirmed(probe, ctx.model, student, shape, speedup, width)
        measured = confirmation or first
        rounds.append({"mac_target": mac_target, "mac_speedup": plan.mac_speedup, "verdict": verdict, **measured})
        on_progress(ProgressEvent("latency search", round_index + 1, max_rounds, {"measured": measured["speedup"]}))
        if verdict == MEETS:
            if best is None or plan.mac_speedup < best[0].mac_speedup:
                best = (plan, measured)
            if settles or measured["speedup_ci95"][0] < speedup * (1 + aim_share / 2):
                break  # a cheaper plan would miss: the interval already reaches down to the target
            above = min(above, mac_target)
        elif verdict == OVERSHOOTS:
            above = min(above, mac_target)
            if nearest_over is None or measured["speedup"] < nearest_over[1]["speedup"]:
                nearest_over = (plan, measured)
        else:
            below = max(below, mac_target)
        if above < math.inf and above / below < 1.02:
            break
        # the runtime realises part of a MAC cut: scale the MAC target by the shortfall or the excess
        aim = plan.mac_speedup * speedup * (1 + aim_share / 2) / max(measured["speedup"], 1e-6)
        mac_target = aim if below < aim < above else math.sqrt(below * min(above, 4 * below))
    chosen, overshoot = (best, False) if best is not None else (nearest_over, True)
    if chosen is not None:
        plan, measured = chosen
        plan.planner = "latency-uniform"
        plan.details.update(target="measured speedup", probe=probe.description, rounds=rounds,
                            teacher_ms=measured["teacher_ms"], student_ms=measured["student_ms"],
                            measured_speedup=measured["speedup"], measured_ci95=measured["speedup_ci95"],
                            cache=measured.get("cache"), verified=True, overshoot=overshoot,
                            band=width)  # fmt: skip
        return plan
    raise nothing_to_gain(ctx, speedup, probe, rounds)


@register_planner(
    "latency-uniform", measured=True, summary="uniform MAC shares, searched until the measured speedup meets the target"
)
def _latency_uniform(request: PlanRequest) -> Plan:
    return plan_latency_uniform(
        request.ctx,
        request.speedup,
        probe=request.latency_probe(),
        band=request.band,
        on_progress=request.on_progress,
    )
