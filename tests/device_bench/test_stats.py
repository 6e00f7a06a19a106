import pytest

from device_bench.stats import bootstrap_median_ci, outlier_fraction, percentile, summarize


def test_percentiles_match_linear_interpolation() -> None:
    samples = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert percentile(samples, 50) == 5.5 and percentile(samples, 10) == pytest.approx(1.9)
    assert percentile(samples, 90) == pytest.approx(9.1) and percentile(samples, 0) == 1.0


def test_summary_of_known_samples() -> None:
    samples = [10.0] * 8 + [11.0, 30.0]
    s = summarize(samples)
    assert s["median_ms"] == 10.0 and s["mean_ms"] == pytest.approx(12.1) and s["runs"] == 10
    assert s["stdev_ms"] == pytest.approx(6.29727, rel=1e-5) and s["cv"] == pytest.approx(0.520435, rel=1e-5)
    assert s["outlier_fraction"] == pytest.approx(0.2)  # 11 and 30 lie beyond an IQR of 0
    low, high = s["median_ci95_ms"]
    assert low <= 10.0 <= high


def test_bootstrap_interval_narrows_with_more_samples() -> None:
    import random

    rng = random.Random(1)
    few = [rng.gauss(10, 1) for _ in range(10)]
    many = [rng.gauss(10, 1) for _ in range(400)]
    width = lambda s: bootstrap_median_ci(s)[1] - bootstrap_median_ci(s)[0]  # noqa: E731
    assert width(many) < width(few)
    assert outlier_fraction([1.0, 2.0, 3.0]) == 0.0
