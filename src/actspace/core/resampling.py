"""Confidence intervals, verdicts and small resampling helpers shared by every experiment.

Intervals are nonparametric bootstrap intervals over the experiment's unit (items, as a rule),
computed with :func:`scipy.stats.bootstrap` and seeded with a :class:`numpy.random.Generator`, so
the same seed gives the same interval. The default method is the *percentile* interval: the metrics
here are bounded (correlations, accuracies, rates) and often near a bound, where the BCa correction
is unstable and undefined for constant data; ``method="BCa"`` is available where it fits.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats as _stats

Verdict = Literal["PASS", "INCONCLUSIVE", "FAIL"]  # as actspace.plan.VERDICTS


def _as_arrays(arrays: Sequence[np.ndarray | Sequence[float]]) -> list[np.ndarray]:
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one data array")
    out = [np.asarray(array) for array in arrays]
    for array in out:
        if array.ndim != 1:
            raise ValueError(f"bootstrap data must be one-dimensional, got shape {array.shape}")
        if array.shape[0] < 2:
            raise ValueError(f"bootstrap needs at least 2 observations, got {array.shape[0]}")
    return out


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray | Sequence[float],
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    paired: bool = True,
    method: Literal["percentile", "BCa", "basic"] = "percentile",
) -> tuple[float, float]:
    """Two-sided bootstrap confidence interval of ``statistic(*arrays)``.

    ``arrays`` are one-dimensional samples. With ``paired=True`` (the default) they are resampled
    together, index by index: pass ``(y_true, y_pred)`` for a per-item metric. With
    ``paired=False`` each array is resampled on its own (independent groups). ``statistic`` takes
    the arrays positionally; if it also takes an ``axis`` keyword, scipy calls it vectorised.

    Returns ``(low, high)``; either bound is NaN when the statistic is NaN on the resamples.
    """
    data = _as_arrays(arrays)
    if paired and len({array.shape[0] for array in data}) > 1:
        raise ValueError("paired bootstrap needs arrays of equal length")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        # Constant data give a zero-width interval, which is the right answer, not a warning.
        warnings.simplefilter("ignore", category=_stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        result = _stats.bootstrap(
            tuple(data),
            statistic,
            n_resamples=n_resamples,
            paired=paired,
            confidence_level=level,
            method=method,
            rng=rng,
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_ci(
    values: np.ndarray | Sequence[float],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    method: Literal["percentile", "BCa", "basic"] = "percentile",
) -> tuple[float, float]:
    """Bootstrap interval of the mean of ``values`` (NaNs dropped)."""
    array = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    return bootstrap_ci(
        np.mean, array, n_resamples=n_resamples, level=level, seed=seed, method=method
    )


def paired_difference_ci(
    statistic: Callable[..., float],
    arrays_a: Sequence[np.ndarray | Sequence[float]],
    arrays_b: Sequence[np.ndarray | Sequence[float]],
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval of ``statistic(*arrays_a) - statistic(*arrays_b)`` on the same resampled items.

    Both argument lists hold per-item arrays over the same items (for example
    ``(y_true, probe_pred)`` and ``(y_true, baseline_pred)``); one set of resampled indices is
    used for both, so the interval reflects the paired comparison.
    """
    k = len(arrays_a)
    if k == 0 or len(arrays_b) == 0:
        raise ValueError("paired_difference_ci needs data for both sides")

    def difference(*arrays: np.ndarray) -> float:
        return float(statistic(*arrays[:k]) - statistic(*arrays[k:]))

    return bootstrap_ci(
        difference, *arrays_a, *arrays_b, n_resamples=n_resamples, level=level, seed=seed
    )


def permutation_p_value(
    observed: float,
    null: np.ndarray | Sequence[float],
    alternative: Literal["greater", "less", "two-sided"] = "greater",
) -> float:
    """Monte Carlo p-value of ``observed`` against null draws, ``(1 + hits) / (1 + n)``.

    The +1 counts the observed value as one draw of the null, so the p-value is never zero
    (Phipson & Smyth 2010).
    """
    draws = np.asarray(null, dtype=float)
    if draws.size == 0:
        raise ValueError("permutation_p_value needs at least one null draw")
    if alternative == "greater":
        hits = np.sum(draws >= observed)
    elif alternative == "less":
        hits = np.sum(draws <= observed)
    elif alternative == "two-sided":
        centre = float(np.mean(draws))
        hits = np.sum(np.abs(draws - centre) >= abs(observed - centre))
    else:
        raise ValueError(f"alternative must be greater, less or two-sided, got {alternative!r}")
    return float((1 + hits) / (1 + draws.size))


def verdict(ci_low: float, ci_high: float, threshold: float) -> Verdict:
    """PASS when the whole interval lies above ``threshold``, FAIL when below, else INCONCLUSIVE.

    "Lies above" is strict: an interval that touches the threshold straddles it. A NaN bound
    means the interval is unknown, which is INCONCLUSIVE.
    """
    low, high = float(ci_low), float(ci_high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return "INCONCLUSIVE"
    if low > high:
        raise ValueError(f"ci_low {low} exceeds ci_high {high}")
    if low > threshold:
        return "PASS"
    if high < threshold:
        return "FAIL"
    return "INCONCLUSIVE"


def corrected_t_ci(
    estimates: np.ndarray | Sequence[float],
    *,
    n_train: int,
    n_test: int,
    level: float = 0.95,
) -> tuple[float, float]:
    """Interval of the mean of repeated cross-fitting estimates (Nadeau and Bengio 2003).

    ``estimates`` holds one value per (repeat, fold) fit, each measured on that fold's held-out
    items. The folds' training sets overlap, so their estimates are correlated and the plain
    variance of their mean understates the uncertainty; the *corrected resampled t* inflates it
    to ``(1/J + n_test/n_train) * s**2`` (J estimates), which includes the variability of the
    fit itself, and uses Student's t with J - 1 degrees of freedom. NaN estimates are dropped; a
    NaN interval comes back when fewer than two remain.
    """
    values = np.asarray(estimates, dtype=float)
    values = values[np.isfinite(values)]
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    if values.size < 2:
        return float("nan"), float("nan")
    j = values.size
    variance = (1.0 / j + n_test / n_train) * float(values.var(ddof=1))
    half = float(_stats.t.ppf(0.5 + level / 2, df=j - 1)) * float(np.sqrt(variance))
    centre = float(values.mean())
    return centre - half, centre + half


def cluster_bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray | Sequence[float],
    groups: np.ndarray | Sequence[Any],
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)`` that resamples whole groups.

    Items that share a group (pairs about one entity, items from one source) are not independent;
    drawing groups with replacement and keeping every item of a drawn group gives an interval
    that says so. With every item its own group this is the ordinary paired bootstrap.
    """
    data = _as_arrays(arrays)
    labels = np.asarray(groups)
    if any(array.shape[0] != labels.shape[0] for array in data):
        raise ValueError("cluster_bootstrap_ci needs one group label per item")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    _, codes = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    if len(members) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        for b in range(n_resamples):
            chosen = rng.integers(0, len(members), size=len(members))
            index = np.concatenate([members[g] for g in chosen])
            draws[b] = statistic(*(array[index] for array in data))
    alpha = (1.0 - level) / 2
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(low), float(high)
