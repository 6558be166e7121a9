"""How well probabilities of being right are calibrated: Brier score, log loss, reliability data."""

from __future__ import annotations

from typing import Any

import numpy as np


def brier_score(y_true: np.ndarray, prob: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Mean squared error of probabilities against 0/1 outcomes along ``axis``."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(prob, dtype=float)
    out = np.mean((p - y) ** 2, axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def log_loss(y_true: np.ndarray, prob: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of 0/1 outcomes under probabilities ``prob``."""
    y = np.asarray(y_true, dtype=float)
    p = np.clip(np.asarray(prob, dtype=float), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def reliability(y_true: np.ndarray, prob: np.ndarray, n_bins: int) -> dict[str, Any]:
    """Reliability-diagram data over ``n_bins`` equal-width bins of predicted probability.

    Per bin: item count, mean predicted probability and observed share correct (None when
    empty). ``ece`` is the expected calibration error, the count-weighted mean gap.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(prob, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    sum_p = np.bincount(index, weights=p, minlength=n_bins)
    sum_y = np.bincount(index, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = sum_p / count
        observed = sum_y / count
    gaps = np.where(count > 0, np.abs(observed - mean_p), 0.0)
    ece = float(np.sum(count * gaps) / max(int(count.sum()), 1))
    return {
        "bin_edges": edges.tolist(),
        "count": count.astype(int).tolist(),
        "mean_predicted": [
            None if c == 0 else float(v) for c, v in zip(count, mean_p, strict=True)
        ],
        "observed": [None if c == 0 else float(v) for c, v in zip(count, observed, strict=True)],
        "ece": ece,
    }


def calibration(
    y_true: np.ndarray, prob: np.ndarray, *, base_rate: float, n_bins: int
) -> dict[str, Any]:
    """Brier score, its skill against always forecasting ``base_rate``, log loss, ECE, diagram."""
    y = np.asarray(y_true, dtype=float)
    brier = float(brier_score(y, prob))
    reference = float(brier_score(y, np.full(y.shape, base_rate)))
    diagram = reliability(y, prob, n_bins)
    return {
        "brier": brier,
        "brier_base_rate": reference,
        "brier_skill": float(1.0 - brier / reference) if reference > 0 else None,
        "log_loss": log_loss(y, prob),
        "ece": diagram["ece"],
        "reliability": diagram,
    }
