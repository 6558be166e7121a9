"""behavior_edit's statistics: means and shifts with bootstrap intervals, perplexity ratios and
accuracy changes, all paired over the same prompts or texts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from actspace.core.resampling import bootstrap_ci
from actspace.methods.steering import Perplexity


# ------------------------------------------------------------------------------------ statistics
def mean_or_nan(values: np.ndarray) -> float:
    """The mean, or NaN for no values."""
    return float(np.mean(values)) if len(values) else float("nan")


def bootstrap_interval(
    statistic: Callable[..., float], *arrays: np.ndarray, n_boot: int, seed: int
) -> list:
    """The bootstrap 95% interval of ``statistic`` (NaNs when an array has fewer than 2 values)."""
    if any(len(a) < 2 for a in arrays):
        return [float("nan"), float("nan")]
    low, high = bootstrap_ci(statistic, *arrays, n_resamples=n_boot, seed=seed)
    return [low, high]


def mean_with_ci(values: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean and its bootstrap 95% interval."""
    values = np.asarray(values, dtype=float)
    return {
        "mean": mean_or_nan(values),
        "ci": bootstrap_interval(np.mean, values, n_boot=n_boot, seed=seed),
    }


def perplexity_ratio(
    base: Perplexity, other: Perplexity, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Perplexity with and without an intervention, their ratio and its paired bootstrap CI.

    Both are per-token perplexities over the same texts (resampled together); the token counts
    may differ slightly where a prefix changes how a text's first word is split.
    """
    if len(base.nll) != len(other.nll):
        raise ValueError("perplexities to compare must cover the same texts")

    def ratio(b: np.ndarray, bt: np.ndarray, o: np.ndarray, ot: np.ndarray, axis: int = -1):
        log_other = o.sum(axis=axis) / ot.sum(axis=axis)
        return np.exp(log_other - b.sum(axis=axis) / bt.sum(axis=axis))

    return {
        "perplexity": other.value,
        "baseline_perplexity": base.value,
        "ratio": other.value / base.value,
        "ratio_ci": bootstrap_interval(
            ratio, base.nll, base.tokens, other.nll, other.tokens, n_boot=n_boot, seed=seed
        ),
    }


def accuracy_change(
    base: np.ndarray, other: np.ndarray, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Accuracy with and without an intervention and the paired CI of the difference."""
    diff = other.astype(float) - base.astype(float)
    return {
        "accuracy": mean_or_nan(other.astype(float)),
        "baseline_accuracy": mean_or_nan(base.astype(float)),
        "delta": mean_or_nan(diff),
        "delta_ci": bootstrap_interval(np.mean, diff, n_boot=n_boot, seed=seed),
    }


def shift_summary(
    base: np.ndarray, other: np.ndarray, index: Sequence[int], *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Score and shift (other - base) over the prompts in ``index``, with paired CIs."""
    index = list(index)
    diff = other[index] - base[index]
    return {
        "score": mean_or_nan(other[index]),
        "score_ci": bootstrap_interval(np.mean, other[index], n_boot=n_boot, seed=seed),
        "shift": mean_or_nan(diff),
        "shift_ci": bootstrap_interval(np.mean, diff, n_boot=n_boot, seed=seed),
        "n": len(index),
    }
