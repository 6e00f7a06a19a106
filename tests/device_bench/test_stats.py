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


def test_new_fields_against_numpy_and_scipy_on_fixed_samples() -> None:
    import numpy as np
    from scipy import stats

    samples = [float(x) for x in [9.0, 9.5, 10.0, 10.0, 10.5, 11.0, 11.0, 12.0, 13.0, 40.0]]
    s = summarize(samples)
    assert s["trimmed_mean_ms"] == pytest.approx(stats.trim_mean(samples, 0.1))
    assert s["trimmed_mean_ms"] == pytest.approx(np.mean(sorted(samples)[1:-1]))  # 10 % off each end
    assert s["p99_ms"] == pytest.approx(np.percentile(samples, 99))
    assert s["p99_over_p50"] == pytest.approx(np.percentile(samples, 99) / np.median(samples))
    assert s["stable"] is False  # the 40 ms outlier: p99 far above the median
    assert summarize([10.0, 10.1, 9.9, 10.0, 10.05, 9.95])["stable"] is True


def test_speedup_interval_holds_the_ratio_and_agrees_with_a_plain_bootstrap() -> None:
    import numpy as np

    from device_bench.stats import speedup_ci

    rng = np.random.default_rng(3)
    teacher = list(10.0 + rng.gamma(2.0, 0.3, 60))
    student = list(2.5 + rng.gamma(2.0, 0.1, 60))
    low, high = speedup_ci(teacher, student)
    ratio = np.median(teacher) / np.median(student)
    assert low < ratio < high and high - low < 0.5
    plain = [  # the textbook two-sample percentile bootstrap, written out
        np.median(rng.choice(teacher, len(teacher))) / np.median(rng.choice(student, len(student))) for _ in range(4000)
    ]
    assert low == pytest.approx(np.percentile(plain, 2.5), rel=0.02)
    assert high == pytest.approx(np.percentile(plain, 97.5), rel=0.02)
    assert speedup_ci([10.0], [2.0]) == (5.0, 5.0)
