"""What the plans of one search share: whole-student timings and the last corrected estimate of the rest.

A frontier plans one target per rung against one latency table. A plan timed at one rung is the same student at
the next (same layers, same modules, same ranks), and the time of everything the table does not see (the *rest*)
is a property of the model on the target, not of the rung; so the next rung starts from what the last one learnt
instead of from the table's first guess, and does not time again a plan whose timing already decides it. The
accuracy proxy (every candidate's closed-form error on the calibration images, and each layer's sensitivity) depends
on the teacher, the candidates and the images only, never on the target: it is computed once for all the rungs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mobilelwt.plan import Plan


@dataclass
class PlanMemory:
    """Timings by plan key (the plan and the record of the round that timed it), and the rest the last search
    ended on."""

    timings: dict[str, tuple[Plan, dict[str, Any]]] = field(default_factory=dict)
    rest_ms: float | None = None
    reused: int = 0  # rounds answered from memory instead of timed
    proxies: dict[str, tuple[dict[str, dict[str, float]], dict[str, float]]] = field(default_factory=dict)
    proxies_reused: int = 0  # plans whose accuracy proxy came from here instead of being computed

    def recall(self, key: str) -> dict[str, Any] | None:
        known = self.timings.get(key)
        return known[1] if known is not None else None

    def remember(self, key: str, plan: Plan, record: dict[str, Any]) -> None:
        self.timings[key] = (plan, record)

    def most_accurate(self, meets: Callable[[dict[str, Any]], bool]) -> tuple[str, Plan, dict[str, Any]] | None:
        """The plan of least proxy error among those whose record ``meets`` (a target), if any."""
        found = [(key, plan, record) for key, (plan, record) in self.timings.items() if meets(record)]
        return min(found, key=lambda item: item[2]["proxy_cost"], default=None)

    def proxy(
        self, key: str, compute: Callable[[], tuple[dict[str, dict[str, float]], dict[str, float]]]
    ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """The accuracy proxy (closed-form errors, layer weights) keyed by what it was computed from, computed once."""
        if key in self.proxies:
            self.proxies_reused += 1
        else:
            self.proxies[key] = compute()
        return self.proxies[key]
