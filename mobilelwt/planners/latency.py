"""The uniform latency planner (``--planner latency-uniform``): scale a uniform MAC cut until the *measured*
speedup on the target meets the target.

Every layer keeps the same share of its MACs, whatever that costs in accuracy or buys in time; the default
``latency`` planner (:mod:`mobilelwt.planners.measured`) allocates per layer from measured tables instead. Both
decide only on interleaved teacher/student timings whose 95 % interval of the speedup is narrow enough to decide,
and accept a plan only when the interval's lower bound meets the target.
"""

from __future__ import annotations

from collections.abc import Callable

from mobilelwt.errors import ConfigError
from mobilelwt.plan import Plan, apply_plan
from mobilelwt.planners._common import PlanningContext
from mobilelwt.planners._registry import PlanRequest, register_planner
from mobilelwt.planners.reach import measure_confirmed, nothing_to_gain
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
    slack: float = 0.04,
    on_progress: ProgressCallback = ignore_progress,
) -> Plan:
    """The least-compressed uniform plan whose measured speedup has a 95 % lower bound of at least ``speedup``."""
    shape = (1, 3, ctx.input_size, ctx.input_size)
    mac_target, rounds = speedup, []
    failed_below, met_at, best = 1.0, None, None  # MAC targets known to miss / to meet the measured target
    for round_index in range(max_rounds):
        try:
            plan = base_planner(ctx, mac_target)
        except ConfigError:
            break
        student = apply_plan(ctx.model, plan, init=False)
        first, confirmation, low = measure_confirmed(probe, ctx.model, student, shape, speedup)
        measured = confirmation or first
        rounds.append({"mac_target": mac_target, "mac_speedup": plan.mac_speedup, **measured})
        on_progress(ProgressEvent("latency search", round_index + 1, max_rounds, {"measured": measured["speedup"]}))
        if low >= speedup:
            met_at = mac_target if met_at is None else min(met_at, mac_target)
            if best is None or plan.mac_speedup < best[0].mac_speedup:
                best = (plan, measured)
        else:
            failed_below = max(failed_below, mac_target)
        if met_at is None:
            # the shortfall is what the runtime does not realise of the MAC cut: ask for that much more
            mac_target = plan.mac_speedup * (speedup / max(low, 1e-6)) * 1.02
        elif met_at / failed_below < 1.04 or speedup <= low < speedup * (1 + slack):
            break  # close enough: more rounds would only trade a sliver of accuracy for timing noise
        else:
            mac_target = (failed_below * met_at) ** 0.5  # overshot: cut less, keep more accuracy
    if best is not None:
        plan, measured = best
        plan.planner = "latency-uniform"
        plan.details.update(target="measured speedup", probe=probe.description, rounds=rounds,
                            teacher_ms=measured["teacher_ms"], student_ms=measured["student_ms"],
                            measured_speedup=measured["speedup"], measured_ci95=measured["speedup_ci95"],
                            verified=True)  # fmt: skip
        return plan
    raise nothing_to_gain(ctx, speedup, probe, rounds)


@register_planner(
    "latency-uniform", measured=True, summary="uniform MAC shares, searched until the measured speedup meets the target"
)
def _latency_uniform(request: PlanRequest) -> Plan:
    return plan_latency_uniform(
        request.ctx, request.speedup, probe=request.latency_probe(), on_progress=request.on_progress
    )
