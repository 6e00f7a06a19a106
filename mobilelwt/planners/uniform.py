"""Uniform planner: every candidate layer keeps the same fraction of its MACs, chosen to meet the target."""

from __future__ import annotations

from mobilelwt.plan import LayerChoice, Plan
from mobilelwt.planners._common import PlanningContext
from mobilelwt.planners._registry import PlanRequest, register_planner


def _rank_within(ctx: PlanningContext, candidate, kind: str, budget: float) -> int:
    ranks = ctx.ranks(candidate, kind)
    lo, hi = 0, len(ranks) - 1  # largest rank whose MACs fit the budget (the smallest if none fits)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ctx.macs(candidate, kind, ranks[mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return ranks[lo]


def plan_uniform(ctx: PlanningContext, mac_speedup: float) -> Plan:
    """Every replaceable layer keeps the same fraction of its MACs, the largest that meets ``mac_speedup``."""
    target = ctx.target_macs(mac_speedup)
    kinds = {c.name: ctx.kind_for(c) for c in ctx.candidates}
    replaceable = [c for c in ctx.candidates if kinds[c.name]]

    def layers_for(fraction: float) -> dict[str, LayerChoice]:
        return {
            c.name: ctx.choice(
                c, kinds[c.name], _rank_within(ctx, c, kinds[c.name], fraction * c.macs), fraction=fraction
            )
            for c in replaceable
        }

    def total(layers: dict[str, LayerChoice]) -> int:
        return ctx.plan("uniform", mac_speedup, layers).student_macs

    smallest = layers_for(0.0)
    if total(smallest) > target:
        raise ctx.infeasible(mac_speedup, total(smallest))
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if total(layers_for(mid)) <= target:
            lo = mid
        else:
            hi = mid
    return ctx.plan("uniform", mac_speedup, layers_for(lo), fraction=lo)


@register_planner("uniform", measured=False, summary="every layer keeps the same share of its MACs")
def _uniform(request: PlanRequest) -> Plan:
    return plan_uniform(request.ctx, request.mac_speedup)
