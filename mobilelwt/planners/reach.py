"""What both latency planners share: a timing that must be confirmed before it counts, and the answer when a
measured target is out of reach (how far the model goes there, and which layers hold the time)."""

from __future__ import annotations

from typing import Any

from torch import nn

from mobilelwt.errors import OutOfReachError
from mobilelwt.plan import apply_plan
from mobilelwt.planners._common import PlanningContext
from mobilelwt.planners.table import LatencyProbe

MEETS, MISSES, OVERSHOOTS = "meets", "misses", "overshoots"
DEFAULT_REL_WIDTH = 0.05


def rel_width_of(probe: LatencyProbe) -> float:
    """The share a probe's intervals are narrowed to (its timing policy's), which is also the target's band."""
    policy = getattr(probe, "policy", None)
    return float(getattr(policy, "rel_width", DEFAULT_REL_WIDTH))


def judge(interval: list[float] | tuple[float, float], target: float, rel_width: float) -> str:
    """A measured speedup against its target: it *misses* when the whole interval lies below the target,
    *overshoots* when the whole interval lies above the target's band (target × (1 + rel_width)), else it *meets*
    it (the target lies in the interval, or just below it)."""
    low, high = interval
    if high < target:
        return MISSES
    if low > target * (1 + rel_width):
        return OVERSHOOTS
    return MEETS


def band_of(probe: LatencyProbe, band: float | None) -> float:
    """The share above a target that still meets it: ``band`` when given (a frontier rung spans the ladder's
    step), else the probe's timing width."""
    return rel_width_of(probe) if band is None else band


def first_meet_settles(probe: LatencyProbe, band: float | None) -> bool:
    """A band wider than the timing width is a rung of a ladder, one sample of the trade-off curve: the first
    plan that meets it is taken, where a user's target looks on for the most accurate plan within its band."""
    return band is not None and band > rel_width_of(probe)


def measure_confirmed(
    probe: LatencyProbe,
    teacher: nn.Module,
    student: nn.Module,
    shape: tuple[int, ...],
    target: float,
    band: float | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """Teacher vs student timed by the probe's protocol; when that meets ``target`` (within ``band``, see
    :func:`band_of`), an independent timing (the student's program loaded afresh, timed again) must agree, since
    one run's interval says nothing of what moves between runs. Returns the first timing, the confirmation (None
    when not needed) and the verdict that counts (the confirmation's, when there is one)."""
    width = band_of(probe, band)
    first = probe.compare(teacher, student, shape, target=target)
    verdict = judge(first["speedup_ci95"], target, width)
    confirmation = None
    if verdict == MEETS:
        confirmation = probe.compare(teacher, student, shape, target=target)
        verdict = judge(confirmation["speedup_ci95"], target, width)
    return first, confirmation, verdict


def nothing_to_gain(
    ctx: PlanningContext,
    speedup: float,
    probe: LatencyProbe,
    rounds: list[dict[str, Any]],
    fastest: dict[str, Any] | None = None,
    *,
    holders: bool = True,
) -> OutOfReachError:
    """How far the model can go on this target, and which layers hold the time. ``fastest``: a timing of the
    fastest student already made (otherwise every layer at its smallest rank is timed now); ``holders``: False
    leaves out which layers hold the time (it lowers every layer once)."""
    shape = (1, 3, ctx.input_size, ctx.input_size)
    if fastest is None:
        fastest = probe.compare(ctx.model, apply_plan(ctx.model, ctx.smallest_plan(), init=False), shape,
                                target=speedup)  # fmt: skip
    reachable = max([r["speedup_ci95"][0] for r in rounds if "speedup_ci95" in r] + [fastest["speedup_ci95"][0]])
    return OutOfReachError(
        f"Nothing to gain at {speedup}×: a measured {speedup}× speedup on {probe.description} is out of reach for "
        f"{ctx.model_name}; the fastest student there is runs {fastest['speedup']:.2f}× faster than the teacher "
        f"(95% CI {fastest['speedup_ci95'][0]:.2f}–{fastest['speedup_ci95'][1]:.2f}×, teacher "
        f"{fastest['teacher_ms']:.2f} ms).{' ' + time_holders(ctx, probe) if holders else ''}",
        f"Ask for at most --speedup {reachable:.2f} (the best lower bound measured), or compress more layers "
        "(e.g. --compress-fc)."
        if reachable > 1.05
        else "Keep the teacher for this runtime: low-rank replacement does not make it faster (try another "
        "--conv-module or runtime, or a model whose time is in ordinary convolutions).",
        reachable=reachable,
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
