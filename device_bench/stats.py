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


STABLE_CV = 0.10  # at most 10 % spread ...
STABLE_TAIL = 1.5  # ... and p99 within 1.5x the median: steady enough to compare


def summarize(samples: list[float]) -> dict[str, Any]:
    """Every statistic a latency record carries (milliseconds in, milliseconds out)."""
    if not samples:
        raise ValueError("no samples")
    import numpy as np
    from scipy import stats

    values = np.asarray(samples, dtype=float)
    mean = float(values.mean())
    stdev = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    low, high = bootstrap_median_ci(samples)
    median = float(np.median(values))
    p99 = float(np.percentile(values, 99))
    cv = stdev / mean if mean else math.nan
    return {
        "runs": len(samples),
        "median_ms": median,
        "p10_ms": float(np.percentile(values, 10)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": p99,
        "mean_ms": mean,
        "trimmed_mean_ms": float(stats.trim_mean(values, 0.1)),  # 10 % cut from each end
        "stdev_ms": stdev,
        "cv": cv,
        "p99_over_p50": p99 / median if median else math.nan,
        "stable": bool(cv <= STABLE_CV and p99 <= STABLE_TAIL * median),
        "min_ms": float(values.min()),
        "max_ms": float(values.max()),
        "median_ci95_ms": [low, high],
        "outlier_fraction": outlier_fraction(samples),
    }


def speedup_ci(
    teacher_ms: list[float], student_ms: list[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval of the speedup (teacher median / student median), both samples resampled
    independently (``scipy.stats.bootstrap``, percentile): the interval the headline speedup deserves."""
    import numpy as np
    from scipy import stats

    if len(teacher_ms) < 2 or len(student_ms) < 2:
        value = float(np.median(teacher_ms) / np.median(student_ms)) if teacher_ms and student_ms else math.nan
        return value, value

    def ratio(t: np.ndarray, s: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(t, axis=axis) / np.median(s, axis=axis)

    result = stats.bootstrap(
        (np.asarray(teacher_ms, dtype=float), np.asarray(student_ms, dtype=float)),
        ratio,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        paired=False,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def process_speedup(
    processes: list[tuple[list[float], list[float]]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """The speedup over several processes, each ``(teacher_ms, student_ms)``: the geometric mean of the
    processes' ratios of medians, and a two-level bootstrap interval (processes resampled, then each one's runs),
    so that the spread *between* processes, which a single process's interval cannot see, widens it."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ratios = np.array([np.median(t) / np.median(s) for t, s in processes], dtype=float)
    within = np.empty((len(processes), resamples))
    for index, (teacher, student) in enumerate(processes):
        t, s = np.asarray(teacher, dtype=float), np.asarray(student, dtype=float)
        within[index] = np.median(t[rng.integers(0, len(t), (resamples, len(t)))], axis=1) / np.median(
            s[rng.integers(0, len(s), (resamples, len(s)))], axis=1
        )
    picked = rng.integers(0, len(processes), (resamples, len(processes)))
    draws = within[picked, rng.integers(0, resamples, picked.shape)]
    combined = np.exp(np.log(draws).mean(axis=1))
    tail = (1.0 - confidence) / 2.0
    point = float(np.exp(np.log(ratios).mean()))
    return point, float(np.quantile(combined, tail)), float(np.quantile(combined, 1 - tail))


def artifact_accuracy(artifact: dict[str, Any], teacher: dict[str, Any] | None) -> dict[str, Any]:
    """top-1 measured on the artifact; for a student, its drop from the teacher's file on the same images with
    the paired interval."""
    validation = artifact.get("validation") or {}
    hits = validation.get("hits") or ""
    if not hits:
        return {"top1": None, "images": 0}
    own = {"top1": 100.0 * hits.count("1") / len(hits), "images": len(hits)}
    reference = ((teacher or {}).get("validation") or {}).get("hits") or ""
    if teacher is None or len(reference) != len(hits):
        return own
    # lazy: the evaluation module imports torch, which the device runner (a user of this module) runs without
    from mobilelwt.evaluation import paired_drop

    paired = paired_drop(reference, hits)
    return {**own, "drop": paired["top1_drop"], "drop_ci95": paired["top1_drop_ci95"]}
