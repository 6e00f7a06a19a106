"""Choose one option per layer: the least total accuracy cost whose predicted latency fits a budget.

A multiple-choice knapsack solved exactly by dynamic programming over latency. Every option's latency is rounded
*up* to the grid, so a solution that fits on the grid also fits in milliseconds: the predicted total never
exceeds the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Option:
    """One way to run a layer: its accuracy cost (0 for the teacher layer), predicted ms, and what it is."""

    cost: float
    ms: float
    choice: Any = None  # None: keep the teacher layer


def allocate(options: dict[str, list[Option]], budget_ms: float, *, bins: int = 4000) -> dict[str, Option] | None:
    """The cheapest choice of one option per layer with total ms ≤ ``budget_ms``; None when nothing fits."""
    if not options:
        return {}
    if not math.isfinite(budget_ms) or budget_ms <= 0:
        return None
    step = budget_ms / bins
    names = list(options)
    best = np.full(bins + 1, np.inf)  # best[b]: least cost of the layers so far using exactly b grid steps
    best[0] = 0.0
    picks = []
    for name in names:
        merged = np.full(bins + 1, np.inf)
        pick = np.full(bins + 1, -1, dtype=np.int64)
        for index, option in enumerate(options[name]):
            width = math.ceil(option.ms / step - 1e-9) if option.ms > 0 else 0
            if width > bins:
                continue
            shifted = np.full(bins + 1, np.inf)
            shifted[width:] = best[: bins + 1 - width] + option.cost
            better = shifted < merged
            merged[better], pick[better] = shifted[better], index
        best = merged
        picks.append(pick)
    if not np.isfinite(best).any():
        return None
    position = int(np.argmin(best))
    chosen: dict[str, Option] = {}
    for name, pick in zip(reversed(names), reversed(picks), strict=True):
        option = options[name][int(pick[position])]
        chosen[name] = option
        position -= math.ceil(option.ms / step - 1e-9) if option.ms > 0 else 0
    return {name: chosen[name] for name in names}


def total_ms(chosen: dict[str, Option]) -> float:
    return sum(option.ms for option in chosen.values())
