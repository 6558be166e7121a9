"""Bootstrap intervals, paired differences, permutation p-values and verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from actspace.core.resampling import (
    bootstrap_ci,
    mean_ci,
    paired_difference_ci,
    permutation_p_value,
    verdict,
)


def test_verdict_three_cases_and_edges() -> None:
    assert verdict(0.35, 0.45, 0.3) == "PASS"
    assert verdict(0.10, 0.25, 0.3) == "FAIL"
    assert verdict(0.25, 0.35, 0.3) == "INCONCLUSIVE"
    # touching the threshold is not lying above or below it
    assert verdict(0.3, 0.4, 0.3) == "INCONCLUSIVE"
    assert verdict(0.2, 0.3, 0.3) == "INCONCLUSIVE"
    assert verdict(float("nan"), 0.4, 0.3) == "INCONCLUSIVE"
    with pytest.raises(ValueError):
        verdict(0.5, 0.4, 0.3)


def test_bootstrap_ci_covers_true_mean_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    sample = rng.normal(loc=2.0, scale=1.0, size=400)
    low, high = bootstrap_ci(np.mean, sample, seed=7)
    assert low < 2.0 < high
    # width near 2 * 1.96 * sigma / sqrt(n) = 0.196
    assert 0.15 < high - low < 0.25
    assert bootstrap_ci(np.mean, sample, seed=7) == (low, high)
    assert bootstrap_ci(np.mean, sample, seed=8) != (low, high)


def test_bootstrap_ci_coverage_over_repeated_samples() -> None:
    """A 95% interval covers the true mean of an exponential in roughly 95% of samples."""
    rng = np.random.default_rng(3)
    hits = 0
    for trial in range(100):
        sample = rng.exponential(scale=1.0, size=80)
        low, high = bootstrap_ci(np.mean, sample, n_resamples=500, seed=trial)
        hits += low < 1.0 < high
    assert 85 <= hits <= 100


def test_bootstrap_ci_paired_statistic_and_constant_data() -> None:
    x = np.arange(50, dtype=float)
    y = 2 * x

    def ratio(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.sum(b) / np.sum(a))

    assert bootstrap_ci(ratio, x[1:], y[1:], n_resamples=200) == pytest.approx((2.0, 2.0))
    assert mean_ci(np.full(10, 0.7)) == pytest.approx((0.7, 0.7))
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_ci(np.mean, [1.0])
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_ci(ratio, x, y[:10])


def test_mean_ci_bca_method_and_nan_dropping() -> None:
    rng = np.random.default_rng(0)
    values = np.append(rng.normal(0.5, 0.1, size=200), np.nan)
    low, high = mean_ci(values, method="BCa")
    assert low < 0.5 < high


def test_paired_difference_ci_detects_a_shift() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=300)
    a, b = base + 0.5, base + rng.normal(scale=0.1, size=300)
    low, high = paired_difference_ci(np.mean, (a,), (b,))
    assert 0.48 < low < 0.5 < high < 0.52


def test_permutation_p_value() -> None:
    null = np.arange(9, dtype=float)  # 0..8
    assert permutation_p_value(100.0, null) == pytest.approx(0.1)
    assert permutation_p_value(-1.0, null) == pytest.approx(1.0)
    assert permutation_p_value(4.0, null, alternative="less") == pytest.approx(0.6)
    assert permutation_p_value(4.0, null, alternative="two-sided") == pytest.approx(1.0)
