"""A ridge map between two activation spaces, and the one reading of a ``ridge_alpha`` setting.

The configuration's ``ridge_alpha`` (PM1's and experiment 2A's) is ``auto`` (search
:data:`DEFAULT_ALPHAS` by generalised cross-validation on the training items), a fixed positive
penalty, or a grid of them; :func:`ridge_alphas` turns any of these (or the same as command-line
text, ``0.1,1,10``) into what the solvers take, and :func:`resolve_alpha` picks the penalty a fit
uses.

:class:`AffineMap` is the map that activation transfer writes into a model: ridge on standardised
features (the solver of :mod:`actspace.methods.similarity`, as PM1), predictions in the target's
own units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from actspace.methods.alignment import scale_statistics
from actspace.methods.similarity import DEFAULT_ALPHAS, RidgeSVD, rowwise_pearson


def ridge_alphas(value: str | float | Sequence[float]) -> float | tuple[float, ...]:
    """A ``ridge_alpha`` setting as the solvers take it: ``auto`` is :data:`DEFAULT_ALPHAS`.

    Accepts a number, a list of numbers, ``auto``, or text of comma-separated numbers; one value is
    returned as a float, several as a tuple. Raises ValueError for anything else or a penalty that
    is not positive.
    """
    if isinstance(value, str):
        if value.strip() == "auto":
            return DEFAULT_ALPHAS
        try:
            values = tuple(float(part) for part in value.split(","))
        except ValueError:
            raise ValueError(
                f"ridge_alpha must be a number, a comma-separated list or 'auto', got {value!r}"
            ) from None
    elif np.ndim(value) == 0:
        values = (float(value),)  # type: ignore[arg-type]
    else:
        values = tuple(float(v) for v in value)  # type: ignore[union-attr]
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"ridge_alpha values must be positive, got {value!r}")
    return values[0] if len(values) == 1 else values


def resolve_alpha(ridge: RidgeSVD, y_train: np.ndarray, alpha: float | Sequence[float]) -> float:
    """A fixed penalty as is; a grid searched by generalised cross-validation."""
    if np.ndim(alpha) == 0:
        return float(alpha)  # type: ignore[arg-type]
    return ridge.select_alpha(y_train, [float(a) for a in alpha])  # type: ignore[union-attr]


class AffineMap:
    """Ridge map between two activation spaces, in the scikit-learn estimator style.

    Inputs and targets are standardised with the training items' statistics; the penalty is
    fixed or chosen from a grid by generalised cross-validation on standardised targets (so every
    target dimension counts equally); predictions are returned in the target's own units, ready
    to be written into its residual stream.
    """

    def __init__(self, alpha: float | Sequence[float] = DEFAULT_ALPHAS) -> None:
        self.alpha = alpha

    def fit(self, x: np.ndarray, y: np.ndarray) -> AffineMap:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"need [items, d] arrays over the same items, got {x.shape}, {y.shape}"
            )
        if x.shape[0] < 4:
            raise ValueError(f"an affine map needs at least 4 training items, got {x.shape[0]}")
        self.x_mean_, self.x_std_ = scale_statistics(x)
        self.y_mean_, self.y_std_ = scale_statistics(y)
        xs = (x - self.x_mean_) / self.x_std_
        ys = (y - self.y_mean_) / self.y_std_
        ridge = RidgeSVD(xs)
        self.alpha_ = resolve_alpha(ridge, ys, self.alpha)
        self.coef_, self.intercept_ = ridge.coef(ys, self.alpha_)
        return self

    def predict_standardised(self, x: np.ndarray) -> np.ndarray:
        """Predictions in the target's standardised units."""
        xs = (np.asarray(x, dtype=np.float64) - self.x_mean_) / self.x_std_
        return xs @ self.coef_ + self.intercept_

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions in the target's units."""
        return self.predict_standardised(x) * self.y_std_ + self.y_mean_

    def score(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Held-out agreement: mean per-item correlation (PM1's unit) and R² (standardised)."""
        pred = self.predict_standardised(x)
        truth = (np.asarray(y, dtype=np.float64) - self.y_mean_) / self.y_std_
        residual = np.sum((truth - pred) ** 2)
        total = np.sum((truth - truth.mean(axis=0)) ** 2)
        return {
            "correlation": float(rowwise_pearson(pred, truth).mean()),
            "r2": float(1.0 - residual / total) if total > 0 else float("nan"),
        }
