"""Sensitivity-aware planner: spend the MAC budget where the closed-form reconstruction error grows least.

For every candidate layer and rank, the replacement is initialised in closed form and its normalised error
against the teacher layer's output is measured on calibration images. A greedy search (as in AIMET's
compression-ratio selection) then lowers, step by step, the rank whose next step costs the least error per MAC
saved, until the plan meets the MAC target.
"""

from __future__ import annotations

import math

import torch

from mobilelwt.errors import ConfigError
from mobilelwt.layerwise import normalized_mse
from mobilelwt.modules import build_replacement
from mobilelwt.plan import Plan
from mobilelwt.planners._common import PlanningContext
from mobilelwt.planners._registry import PlanRequest, register_planner
from mobilelwt.progress import ProgressCallback, ProgressEvent, ignore_progress


def normalized_error(prediction: torch.Tensor, target: torch.Tensor) -> float:
    return float(normalized_mse(prediction, target))


@torch.no_grad()
def capture_io(
    model: torch.nn.Module, names: list[str], images: torch.Tensor
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Inputs and outputs of the named layers for ``images``."""
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name in names:

        def hook(_m, inputs, output, name=name):
            # cloned: an in-place ReLU after the layer would otherwise rewrite the captured output
            captured[name] = (inputs[0].detach(), output.detach().clone())

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        model.eval()(images)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def rank_grid(ranks: list[int], points: int, *, geometric: bool = False) -> list[int]:
    """``points`` of ``ranks`` (ascending), evenly spread, or (``geometric``) in equal ratios, which keeps small
    ranks, where an aggressive plan lives, as finely sampled as large ones."""
    if len(ranks) <= points:
        return ranks
    if not geometric:
        idx = torch.linspace(0, len(ranks) - 1, points).round().long().unique().tolist()
        return [ranks[i] for i in idx]
    wanted = torch.logspace(math.log10(ranks[0]), math.log10(ranks[-1]), points).tolist()
    chosen = sorted({min(ranks, key=lambda r, w=w: abs(math.log(r / w))) for w in wanted})
    return chosen


def plan_sensitivity(
    ctx: PlanningContext,
    mac_speedup: float,
    calibration: torch.Tensor,
    *,
    grid_points: int = 12,
    on_progress: ProgressCallback = ignore_progress,
) -> Plan:
    target = ctx.target_macs(mac_speedup)
    candidates = [c for c in ctx.candidates if ctx.kind_for(c)]
    io = capture_io(ctx.model, [c.name for c in candidates], calibration)
    # options[name]: (macs, error, rank) sorted from costly to cheap; rank None = keep the teacher layer
    options: dict[str, list[tuple[int, float, int | None]]] = {}
    for i, c in enumerate(candidates):
        kind = ctx.kind_for(c)
        x, y = io[c.name]
        layer_options = [(c.macs, 0.0, None)]
        for rank in reversed(rank_grid(ctx.ranks(c, kind), grid_points)):
            module = build_replacement(kind, ctx.layer(c), init=True, **ctx.params(kind, rank)).eval()
            with torch.no_grad():
                error = normalized_error(module(x), y)
            layer_options.append((ctx.macs(c, kind, rank), error, rank))
        options[c.name] = layer_options
        on_progress(ProgressEvent("sensitivity", i + 1, len(candidates), {"layer": c.name}))

    position = {name: 0 for name in options}
    total = ctx.teacher_macs
    while total > target:
        best, best_score = None, float("inf")
        for name, opts in options.items():
            pos = position[name]
            if pos + 1 >= len(opts):
                continue
            saved = opts[pos][0] - opts[pos + 1][0]
            added = max(opts[pos + 1][1] - opts[pos][1], 0.0)
            score = added / max(saved, 1)
            if saved > 0 and score < best_score:
                best, best_score = name, score
        if best is None:
            raise ctx.infeasible(mac_speedup, total)
        total -= options[best][position[best]][0] - options[best][position[best] + 1][0]
        position[best] += 1

    layers = {}
    errors = {}
    for c in candidates:
        macs, error, rank = options[c.name][position[c.name]]
        errors[c.name] = error
        if rank is not None:
            layers[c.name] = ctx.choice(c, ctx.kind_for(c), rank, closed_form_error=error)
    if not layers:
        raise ConfigError("The sensitivity planner replaced no layer.", "Raise --mac-speedup.")
    return ctx.plan("sensitivity", mac_speedup, layers, calibration_images=len(calibration), closed_form_errors=errors)


@register_planner("sensitivity", measured=False, summary="MACs allocated by each layer's closed-form error")
def _sensitivity(request: PlanRequest) -> Plan:
    return plan_sensitivity(request.ctx, request.mac_speedup, request.calibration(), on_progress=request.on_progress)
