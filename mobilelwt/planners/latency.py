"""Latency-aware planner: meet the target in *measured* latency on a runtime, not in MACs.

Replacement modules realise different fractions of their MAC cut (memory-bound FC layers, grouped convolutions
and depthwise layers realise less), so a plan that cuts MACs by X rarely runs X times faster. This planner times
the teacher and candidate students on the target runtime on this host (``measure`` lowers a model and returns
its median latency in ms), and raises the MAC reduction of the base planner by the measured shortfall until the
measured speedup meets the target. Measurements are cached by plan content, so a re-run times nothing twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from torch import nn

from mobilelwt.errors import ConfigError
from mobilelwt.io import read_json, write_json
from mobilelwt.plan import Plan, apply_plan
from mobilelwt.planners._common import PlanningContext
from mobilelwt.planners.uniform import plan_uniform
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress

LatencyProbe = Callable[[nn.Module], float]


class LatencyCache:
    """Median latencies keyed by (probe, model architecture); stored as JSON when ``path`` is given."""

    def __init__(self, path: Path | None, probe_key: str) -> None:
        self.path, self.probe_key = path, probe_key
        self.entries: dict[str, float] = read_json(path) if path and Path(path).is_file() else {}

    def key(self, description: dict) -> str:
        blob = json.dumps({"probe": self.probe_key, **description}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def get_or_measure(self, description: dict, measure: Callable[[], float]) -> tuple[float, bool]:
        key = self.key(description)
        if key in self.entries:
            return self.entries[key], True
        self.entries[key] = measure()
        if self.path:
            write_json(self.path, self.entries)
        return self.entries[key], False


def plan_latency(
    ctx: PlanningContext,
    speedup: float,
    *,
    measure: LatencyProbe,
    probe_key: str,
    cache_path: Path | None = None,
    base_planner: Callable[[PlanningContext, float], Plan] = plan_uniform,
    max_rounds: int = 6,
    margin: float = 0.05,
    on_progress: ProgressCallback = ignore_progress,
) -> Plan:
    """The least-compressed plan whose measured speedup is at least ``speedup × (1 + margin)``.

    The margin absorbs timing noise: a plan that only just meets the target in the search's short measurement
    tends to miss it in a longer one.
    """
    goal = speedup * (1.0 + margin)
    cache = LatencyCache(cache_path, probe_key)
    shape = {"model": ctx.model_name, "input_size": ctx.input_size, "num_classes": ctx.num_classes}
    teacher_ms, _ = cache.get_or_measure({**shape, "layers": {}}, lambda: measure(ctx.model))
    mac_target, rounds = speedup, []
    failed_below, met_at, best_plan = 1.0, None, None  # MAC targets known to miss / to meet the latency target
    for round_index in range(max_rounds):
        try:
            plan = base_planner(ctx, mac_target)
        except ConfigError:
            break
        layers = {name: {"module": c.module, **c.params} for name, c in plan.layers.items()}
        student_ms, cached = cache.get_or_measure(
            {**shape, "layers": layers}, lambda plan=plan: measure(apply_plan(ctx.model, plan, init=False))
        )
        achieved = teacher_ms / student_ms
        rounds.append(
            {
                "mac_target": mac_target,
                "mac_speedup": plan.mac_speedup,
                "student_ms": student_ms,
                "measured_speedup": achieved,
                "cached": cached,
            }
        )
        on_progress(ProgressEvent("latency search", round_index + 1, max_rounds, {"measured": achieved}))
        if achieved >= goal:
            met_at = mac_target
            if best_plan is None or plan.mac_speedup < best_plan.mac_speedup:
                best_plan = plan
                best_plan.details.update(teacher_ms=teacher_ms, student_ms=student_ms, measured_speedup=achieved)
        else:
            failed_below = max(failed_below, mac_target)
        if met_at is None:
            # the shortfall is what the runtime does not realise of the MAC cut: ask for that much more
            mac_target = plan.mac_speedup * (goal / achieved) * 1.02
        elif met_at / failed_below < 1.04 or goal <= achieved < goal * 1.03:
            break  # close enough: more rounds would only trade a sliver of accuracy for timing noise
        else:
            mac_target = (failed_below * met_at) ** 0.5  # overshot: cut less, keep more accuracy
    if best_plan is not None:
        best_plan.planner = "latency"
        best_plan.details.update(probe=probe_key, rounds=rounds)
        return best_plan
    floor = ctx.smallest_plan()  # the fastest plan there is: how far this model can go on this runtime
    floor_ms = measure(apply_plan(ctx.model, floor, init=False))
    best = max([teacher_ms / floor_ms, *(r["measured_speedup"] for r in rounds)])
    reachable = best / (1 + margin)
    raise ConfigError(
        f"Nothing to gain at {speedup}×: a measured {speedup}× speedup on {probe_key} is out of reach for "
        f"{ctx.model_name}; the fastest student there is runs {best:.2f}× faster than the teacher "
        f"({teacher_ms:.2f} ms). {time_holders(ctx, measure)}",
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
