"""Wall-clock timing of callables, interleaved so that drift hits every one alike.

Pure Python (no torch, no runtime): the Python runner imports it on a device, and every host measurement uses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def interleaved_latency(
    runners: dict[str, Callable[[Any], Any]],
    example: Any,
    *,
    warmup: int = 5,
    rounds: int = 10,
    per_round: int = 5,
) -> dict[str, list[float]]:
    """Milliseconds per call for each runner: warm-up, then ``rounds`` rounds that run every runner in turn."""
    for run in runners.values():
        for _ in range(warmup):
            run(example)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(per_round):
                started = time.perf_counter()
                run(example)
                samples[name].append((time.perf_counter() - started) * 1000.0)
    return samples
