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
        measured = probe.compare(ctx.model, student, shape, target=speedup)
        low = measured["speedup_ci95"][0]
        if low >= speedup:  # an independent timing must agree (see the latency planner)
            measured = probe.compare(ctx.model, student, shape, target=speedup)
            low = min(low, measured["speedup_ci95"][0])
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
    floor = ctx.smallest_plan()  # the fastest plan there is: how far this model can go on this runtime
    fastest = probe.compare(ctx.model, apply_plan(ctx.model, floor, init=False), shape, target=speedup)
    reachable = max([fastest["speedup_ci95"][0], *(r["speedup_ci95"][0] for r in rounds)])
    raise ConfigError(
        f"Nothing to gain at {speedup}×: a measured {speedup}× speedup on {probe.description} is out of reach for "
        f"{ctx.model_name}; the fastest student there is runs {fastest['speedup']:.2f}× faster than the teacher "
        f"({fastest['teacher_ms']:.2f} ms). {time_holders(ctx, probe)}",
        f"Ask for at most --speedup {reachable:.2f}, or compress more layers (e.g. --compress-fc)."
        if reachable > 1.05
        else "Keep the teacher for this runtime: low-rank replacement does not make it faster (try another "
        "--conv-module or runtime, or a model whose time is in ordinary convolutions).",
    )


def time_holders(ctx: PlanningContext, measure: LatencyProbe, limit: int = 4) -> str:
    """Which teacher layers hold the time: each Conv2d/Linear timed alone on its own input, largest first.

    Only on the failure path: it lowers every layer once. A probe that cannot time single layers (no ``layer``
    method) gets the MAC shares instead.
    """
    layers = ctx.all_layers()
    time_layer = getattr(measure, "layer", None)
    if time_layer is None:
        return f"The layers that are never replaced hold most of the MACs: {ctx.kept_layers()}."
    timed = sorted(
        ((time_layer(ctx.layer(layer), (1, *layer.input_shape)), layer) for layer in layers), key=lambda x: -x[0]
    )
    total = sum(ms for ms, _ in timed) or float("nan")
    shown = ", ".join(
        f"{layer.name} {ms:.2f} ms ({100 * ms / total:.0f}%, {ctx.why_kept(layer) or 'replaceable'})"
        for ms, layer in timed[:limit]
    )
    kept = sum(ms for ms, layer in timed if ctx.why_kept(layer))
    return (
        f"Timed alone, the conv/linear layers take {total:.2f} ms; layers that are never replaced take "
        f"{kept:.2f} ms ({100 * kept / total:.0f}%); the largest: {shown}."
    )
