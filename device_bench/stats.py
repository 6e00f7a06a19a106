"""Latency statistics that survive noisy machines: medians, percentiles, spread, a bootstrap CI, outliers."""

from __future__ import annotations

import math
import random
import statistics
from typing import Any


def percentile(samples: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]), as numpy's default."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def bootstrap_median_ci(
    samples: list[float], *, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median."""
    if len(samples) < 2:
        value = samples[0] if samples else math.nan
        return value, value
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(samples, k=len(samples))) for _ in range(resamples))
    tail = (1.0 - confidence) / 2.0
    return percentile(medians, 100 * tail), percentile(medians, 100 * (1 - tail))


def outlier_fraction(samples: list[float]) -> float:
    """Share of samples outside Tukey's fences (1.5 IQR beyond the quartiles)."""
    if len(samples) < 4:
        return 0.0
    q1, q3 = percentile(samples, 25), percentile(samples, 75)
    fence = 1.5 * (q3 - q1)
    return sum(1 for s in samples if s < q1 - fence or s > q3 + fence) / len(samples)


def summarize(samples: list[float]) -> dict[str, Any]:
    """Every statistic a latency record carries (milliseconds in, milliseconds out)."""
    if not samples:
        raise ValueError("no samples")
    mean = statistics.fmean(samples)
    stdev = statistics.stdev(samples) if len(samples) > 1 else 0.0
    low, high = bootstrap_median_ci(samples)
    return {
        "runs": len(samples),
        "median_ms": statistics.median(samples),
        "p10_ms": percentile(samples, 10),
        "p90_ms": percentile(samples, 90),
        "mean_ms": mean,
        "stdev_ms": stdev,
        "cv": stdev / mean if mean else math.nan,
        "min_ms": min(samples),
        "max_ms": max(samples),
        "median_ci95_ms": [low, high],
        "outlier_fraction": outlier_fraction(samples),
    }
