"""Bootstrap intervals of statistics that some resamples of a small held-out set leave undefined."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from actspace.core.resampling import cluster_bootstrap_ci

#: The level of every interval branch 2B reports.
CI_LEVEL = 0.95


def defined_ci(
    statistic: Callable[..., Any],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> list[float | None]:
    """Paired percentile bootstrap interval over the resamples where ``statistic`` is defined.

    :func:`actspace.core.resampling.bootstrap_ci` returns NaN as soon as one resample is undefined
    (an AUROC of a resample holding one class, an accuracy among answered items when a resample
    answers none), which on small held-out sets is nearly always. Here such resamples are left
    out; when more than half are undefined the interval is unknown (None, None). ``statistic``
    is called vectorised when it takes an ``axis`` keyword.
    """
    data = [np.asarray(array) for array in arrays]
    n = data[0].shape[0]
    if n < 2 or any(array.shape[0] != n for array in data):
        raise ValueError("defined_ci needs paired arrays of at least 2 observations")
    index = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        if "axis" in inspect.signature(statistic).parameters:
            values = np.asarray(statistic(*[array[index] for array in data], axis=-1), float)
        else:
            values = np.array([statistic(*[array[row] for array in data]) for row in index], float)
    values = values[np.isfinite(values)]
    if values.size * 2 < n_resamples:
        return [None, None]
    tail = (1.0 - level) / 2.0
    return [float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))]


def difference(statistic: Callable[..., Any], k: int) -> Callable[..., Any]:
    """``statistic(*first k arrays) - statistic(*the rest)``, vectorised like ``statistic``."""

    def diff(*arrays: np.ndarray, axis: int = -1) -> Any:
        return statistic(*arrays[:k], axis=axis) - statistic(*arrays[k:], axis=axis)

    return diff


def item_ci(
    statistic: Callable[..., Any],
    *arrays: np.ndarray,
    groups: np.ndarray | None,
    n_resamples: int = 1000,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> list[float | None]:
    """:func:`defined_ci` over held-out items, or over their groups where some items share one.

    Items that share a group (two facts about one entity, ``a+b`` and ``b+a``) are not
    independent units: where ``groups`` has repeats, whole groups are resampled
    (:func:`actspace.core.resampling.cluster_bootstrap_ci`), and an interval it cannot give is
    (None, None).
    """
    if groups is None or np.unique(np.asarray(groups)).size == np.asarray(groups).size:
        return defined_ci(statistic, *arrays, n_resamples=n_resamples, level=level, seed=seed)
    low, high = cluster_bootstrap_ci(
        statistic, *arrays, groups=groups, n_resamples=n_resamples, level=level, seed=seed
    )
    if not (np.isfinite(low) and np.isfinite(high)):
        return [None, None]
    return [float(low), float(high)]


def hit_balanced_accuracy(y: np.ndarray, hits: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Balanced accuracy from per-item hits in [0, 1] (1: predicted right), along ``axis``.

    With 0/1 hits this is the balanced accuracy; with fractional hits (the share of random
    directions that get an item right) it is their expected balanced accuracy, since balanced
    accuracy is linear in the hits. A resample that lacks one class scores the other's recall,
    as :func:`actspace.methods.probes.balanced_accuracy` does.
    """
    t = np.asarray(y).astype(bool)
    h = np.asarray(hits, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.stack(
            [
                np.asarray(np.sum(h * t, axis=axis) / np.sum(t, axis=axis), dtype=float),
                np.asarray(np.sum(h * ~t, axis=axis) / np.sum(~t, axis=axis), dtype=float),
            ]
        )
        defined = np.isfinite(rates)
        out = np.where(defined, rates, 0.0).sum(axis=0) / defined.sum(axis=0)
    return float(out) if np.ndim(out) == 0 else out
