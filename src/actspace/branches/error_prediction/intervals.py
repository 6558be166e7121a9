"""Bootstrap intervals of statistics that some resamples of a small held-out set leave undefined."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

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
