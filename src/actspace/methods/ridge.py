"""The ridge map between two models' activation spaces: solver, penalty setting, held-out score.

One idea, used three ways: PM1's correlation after projection and the ridge cells of experiment 2A
``cross_model_extended`` (:func:`projection_with_null`, on :class:`RidgeSVD`), and the map that
activation transfer writes into a model (:class:`AffineMap`). Measures of similarity without a
fitted map (standardisation, Pearson correlation, CKA, mutual kNN) are
:mod:`actspace.methods.similarity`'s.

The configuration's ``ridge_alpha`` (PM1's and experiment 2A's) is ``auto`` (search
:data:`DEFAULT_ALPHAS` by generalised cross-validation on the training items), a fixed positive
penalty, or a grid of them; :func:`ridge_alphas` turns any of these (or the same as command-line
text, ``0.1,1,10``) into what the solvers take, and :func:`resolve_alpha` picks the penalty a fit
uses.

Unit of the correlation after projection
----------------------------------------
A ridge map is fitted from one model's activations to the other's on training items; on
held-out items we compare the mapped vectors with the actual ones. Both sides are standardised
per dimension with the *training* items' mean and standard deviation, so no dimension dominates
by scale (residual streams have a few very large "rogue" dimensions) and the mean vector is not
counted as shared structure (predicting the training mean gives a correlation of zero, not a
high one).

The headline unit is the **item**: for each held-out item, the Pearson correlation across target
dimensions between its mapped and its actual standardised vector. The experiment's value is the
mean of these per-item correlations, and its bootstrap interval resamples items, as the plan asks.
The per-dimension view, the Pearson correlation across held-out items for each target dimension
(the usual encoding-model score), is returned alongside for reporting.

The ridge solver
----------------
The map is ridge regression without intercept on the standardised (hence centred) data, which is
exactly scikit-learn's ``Ridge(alpha, fit_intercept=True)`` on the same data. It is solved through
one thin SVD of the training features, ``X = U S Vᵀ``: the penalty is chosen by generalised
cross-validation (Golub, Heath & Wahba 1979) over a grid, in closed form in the reduced space, and
each permutation of the null reuses the same decomposition (permuting the target rows only changes
``Uᵀ Y``). With hundreds of target dimensions this is one to two orders of magnitude faster than
``RidgeCV``'s exact leave-one-out, which forms the full prediction matrix for every penalty.
:class:`HeldOutMap` keeps one source's decomposition on one split for every target it is mapped
to. PM1's null keeps the penalty chosen on the real targets (``null_alpha="observed"``), so its
999 permutations are one fixed linear smoother applied to permuted rows; experiment 2A's null
searches the grid again for each permutation (``"search"``, the default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from actspace.methods.similarity import (
    check_pair,
    columnwise_pearson,
    rowwise_pearson,
    scale_statistics,
    standardise,
)

#: Ridge penalties searched by generalised cross-validation on the training items.
#: Features are standardised, so ``X.T @ X`` scales with the number of items; the grid spans
#: from almost no shrinkage to predicting (nearly) the mean.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 6, 17))

# ---------------------------------------------------------------------------------------------
# the ridge_alpha setting


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


# ---------------------------------------------------------------------------------------------
# the solver


@dataclass(frozen=True)
class ProjectionResult:
    """Held-out agreement between mapped and actual target activations."""

    per_item: np.ndarray  # [n_test] Pearson r across target dimensions, one per held-out item
    per_dimension: np.ndarray  # [d_target] Pearson r across held-out items (NaN: constant dim)
    alpha: float  # the ridge penalty used

    @property
    def mean(self) -> float:
        """Mean per-item correlation (the headline number)."""
        return float(np.mean(self.per_item))

    @property
    def per_dimension_mean(self) -> float:
        """Mean per-dimension correlation over the dimensions where it is defined."""
        finite = self.per_dimension[np.isfinite(self.per_dimension)]
        return float(np.mean(finite)) if finite.size else float("nan")


class RidgeSVD:
    """Ridge regression from one fixed design matrix to many targets, by one thin SVD.

    ``x_train`` must be column-centred (standardised); targets are centred here. The fit equals
    scikit-learn's ``Ridge(alpha, fit_intercept=True)``. With a grid of penalties the choice is
    made by generalised cross-validation
    (``n·RSS / (n - 1 - df)²``, one penalty shared by all targets). PM1 and experiment 2A's
    ``cross_model_extended`` share it, so cells at PM1's layers reproduce PM1's numbers.
    """

    def __init__(self, x_train: np.ndarray) -> None:
        x = np.asarray(x_train, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"the design matrix must be [items >= 2, dims], got {x.shape}")
        self.n = x.shape[0]
        # The thin SVD through the eigendecomposition of the smaller Gram matrix (faster than a
        # direct SVD); directions with a negligible singular value carry no fit and are dropped.
        wide = x.shape[1] > x.shape[0]
        eigenvalues, vectors = np.linalg.eigh(x @ x.T if wide else x.T @ x)
        keep = eigenvalues > max(float(eigenvalues.max()), 0.0) * 1e-12
        s = np.sqrt(eigenvalues[keep])
        if wide:
            u = vectors[:, keep]
            v = (x.T @ u) / s
        else:
            v = vectors[:, keep]
            u = (x @ v) / s
        self.u, self.s, self.v = u, s, v

    def gcv_alpha(self, uty: np.ndarray, total: float, alphas: Sequence[float]) -> float:
        """The penalty with the smallest GCV score, from ``Uᵀy`` and ``‖y‖²`` of centred targets.

        ``RSS = ‖y‖² - ‖Uᵀy‖² + ‖(1 - d) ⊙ Uᵀy‖²`` with ``d = s² / (s² + α)`` and ``df = Σ d``;
        the 1 in ``n - 1 - df`` is the intercept's degree of freedom. First best on ties.
        """
        s2 = self.s**2
        energy = np.sum(uty**2, axis=1)
        outside = max(total - float(energy.sum()), 0.0)
        best, best_score = float(alphas[0]), np.inf
        for alpha in alphas:
            d = s2 / (s2 + alpha)
            room = self.n - 1.0 - float(d.sum())
            if room <= 1e-9:
                continue
            score = self.n * (outside + float(np.sum((1.0 - d) ** 2 * energy))) / room**2
            if score < best_score:
                best, best_score = float(alpha), score
        return best

    def select_alpha(self, y_train: np.ndarray, alphas: Sequence[float]) -> float:
        """The penalty of ``alphas`` that generalised cross-validation prefers for ``y_train``."""
        y = np.asarray(y_train, dtype=np.float64)
        y = y - y.mean(axis=0)
        return self.gcv_alpha(self.u.T @ y, float(np.sum(y * y)), [float(a) for a in alphas])

    def coef(self, y_train: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """``(weights [d_x, d_y], intercept [d_y])`` of the ridge fit with penalty ``alpha``."""
        y = np.asarray(y_train, dtype=np.float64)
        mean = y.mean(axis=0)
        weights = self.v @ ((self.s / (self.s**2 + alpha))[:, None] * (self.u.T @ (y - mean)))
        return weights, mean

    def predict(self, y_train: np.ndarray, x_test: np.ndarray, alpha: float) -> np.ndarray:
        """Predictions for ``x_test`` (centred like ``x_train``) of the fit to ``y_train``."""
        weights, intercept = self.coef(y_train, alpha)
        return np.asarray(x_test, dtype=np.float64) @ weights + intercept

    def fit_predict_centred(
        self, y_train: np.ndarray, x_test_v: np.ndarray, alpha: float | Sequence[float]
    ) -> tuple[np.ndarray, float]:
        """Predictions and penalty for centred ``y_train``; ``x_test_v`` is ``x_test @ self.v``.

        A grid is searched by GCV on these targets, so a permuted null searches it again, as
        PM1's null does.
        """
        uty = self.u.T @ y_train
        if np.ndim(alpha) == 0:
            used = float(alpha)
        else:
            used = self.gcv_alpha(uty, float(np.sum(y_train * y_train)), list(alpha))
        return (x_test_v * (self.s / (self.s**2 + used))) @ uty, used

    def fit_predict(
        self, y_train: np.ndarray, x_test: np.ndarray, alpha: float | Sequence[float]
    ) -> tuple[np.ndarray, float]:
        """Predictions for ``x_test`` (standardised like ``x_train``) from centred ``y_train``,
        and the penalty used (chosen by GCV when given a grid)."""
        grid = [float(a) for a in np.ravel(alpha)]
        if not grid or min(grid) <= 0:
            raise ValueError(f"ridge penalties must be positive, got {grid}")
        x_test_v = np.asarray(x_test, dtype=np.float64) @ self.v
        return self.fit_predict_centred(y_train, x_test_v, alpha)


def resolve_alpha(ridge: RidgeSVD, y_train: np.ndarray, alpha: float | Sequence[float]) -> float:
    """A fixed penalty as is; a grid searched by generalised cross-validation."""
    if np.ndim(alpha) == 0:
        return float(alpha)  # type: ignore[arg-type]
    return ridge.select_alpha(y_train, [float(a) for a in alpha])  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# held-out correlation after projection, and its permutation null


def _split(
    n: int, train_idx: np.ndarray | Sequence[int], test_idx: np.ndarray | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    train = np.asarray(train_idx, dtype=int)
    test = np.asarray(test_idx, dtype=int)
    if train.size < 2 or test.size < 2:
        raise ValueError(f"need at least 2 train and 2 test items, got {train.size}/{test.size}")
    if np.intersect1d(train, test).size:
        raise ValueError("train and test items overlap")
    if train.min() < 0 or test.min() < 0 or max(train.max(), test.max()) >= n:
        raise ValueError(f"item indices out of range for {n} items")
    return train, test


class HeldOutMap:
    """One source representation on one train/test split, standardised with the training items'
    statistics and decomposed once, so that every target (and every permutation of a target's
    training rows) reuses the decomposition: PM1 maps each source to several targets, and from
    several representations, on every fold."""

    def __init__(
        self,
        X_src: np.ndarray,
        train_idx: np.ndarray | Sequence[int],
        test_idx: np.ndarray | Sequence[int],
    ) -> None:
        x, _ = check_pair(X_src, np.zeros((np.shape(X_src)[0], 0)))
        self.train, self.test = _split(x.shape[0], train_idx, test_idx)
        self.n = x.shape[0]
        self.solver = RidgeSVD(standardise(x[self.train]))
        self.x_test_v = standardise(x[self.test], x[self.train]) @ self.solver.v

    def score(
        self,
        Y_tgt: np.ndarray,
        *,
        alpha: float | Sequence[float] = DEFAULT_ALPHAS,
        n_permutations: int = 0,
        seed: int = 0,
        null_alpha: Literal["search", "observed"] = "search",
    ) -> tuple[ProjectionResult, np.ndarray]:
        """The held-out agreement of the map to ``Y_tgt`` and its shuffled-items null (see
        :func:`projection_with_null`)."""
        if n_permutations < 0:
            raise ValueError(f"n_permutations must be 0 or more, got {n_permutations}")
        if null_alpha not in ("search", "observed"):
            raise ValueError(f"null_alpha must be 'search' or 'observed', got {null_alpha!r}")
        y, _ = check_pair(Y_tgt, np.zeros((np.shape(Y_tgt)[0], 0)))
        if y.shape[0] != self.n:
            raise ValueError(f"both models need the same items, got {self.n} and {y.shape[0]}")
        grid = [float(a) for a in np.ravel(alpha)]
        if not grid or min(grid) <= 0:
            raise ValueError(f"ridge penalties must be positive, got {grid}")
        train, test, solver = self.train, self.test, self.solver
        y_train, y_test = standardise(y[train]), standardise(y[test], y[train])
        pred, used = solver.fit_predict_centred(y_train, self.x_test_v, alpha)
        observed = ProjectionResult(
            per_item=rowwise_pearson(pred, y_test),
            per_dimension=columnwise_pearson(pred, y_test),
            alpha=used,
        )
        rng = np.random.default_rng(seed)
        if null_alpha == "observed" and n_permutations > 0:
            return observed, _fixed_penalty_null(
                solver, self.x_test_v, y_train, y_test, used, n_permutations, rng
            )
        null = np.empty((n_permutations, test.size))
        for p in range(n_permutations):
            shuffled = y_train[rng.permutation(train.size)]
            pred, _ = solver.fit_predict_centred(shuffled, self.x_test_v, alpha)
            null[p] = rowwise_pearson(pred, y_test)
        return observed, null


def projection_with_null(
    X_src: np.ndarray,
    Y_tgt: np.ndarray,
    train_idx: np.ndarray | Sequence[int],
    test_idx: np.ndarray | Sequence[int],
    *,
    alpha: float | Sequence[float] = DEFAULT_ALPHAS,
    n_permutations: int = 5,
    seed: int = 0,
    null_alpha: Literal["search", "observed"] = "search",
) -> tuple[ProjectionResult, np.ndarray]:
    """:func:`ridge_projection_correlation` and :func:`permutation_null` sharing one decomposition.

    Returns the observed result and the null's per-item correlations ``[n_permutations, n_test]``
    (an empty first axis when ``n_permutations`` is 0). With ``null_alpha="search"`` every
    permutation searches a penalty grid again (experiment 2A's null); with ``"observed"`` every
    permutation keeps the penalty chosen on the unshuffled targets, so the whole null is one
    fixed linear smoother applied to permuted rows (:func:`_fixed_penalty_null`): PM1's 999
    permutations then cost about as much as a few fits.
    """
    check_pair(X_src, Y_tgt)
    return HeldOutMap(X_src, train_idx, test_idx).score(
        Y_tgt, alpha=alpha, n_permutations=n_permutations, seed=seed, null_alpha=null_alpha
    )


def _fixed_penalty_null(
    solver: RidgeSVD,
    x_test_v: np.ndarray,
    y_train: np.ndarray,
    y_test: np.ndarray,
    alpha: float,
    n_permutations: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-item held-out correlations ``[n_permutations, n_test]`` with shuffled training targets.

    With a fixed penalty the held-out prediction is linear in the (centred) training targets,
    ``pred = A Uᵀ Y`` with ``A = (X_test V) diag(s / (s² + α))``: the decomposition is computed
    once and each permutation only permutes the rows of ``Y``. The product is taken in the
    cheaper order: through the ``[n_test, n_train]`` smoother ``A Uᵀ`` when the held-out set is
    small against the rank (wide activations, few items), else through ``Uᵀ Y_perm``.
    """
    a = x_test_v * (solver.s / (solver.s**2 + alpha))
    n_test, rank = a.shape
    n_train = y_train.shape[0]
    smoother = a @ solver.u.T if n_test * n_train <= rank * (n_train + n_test) else None
    null = np.empty((n_permutations, n_test))
    for p in range(n_permutations):
        shuffled = y_train[rng.permutation(n_train)]
        pred = smoother @ shuffled if smoother is not None else a @ (solver.u.T @ shuffled)
        null[p] = rowwise_pearson(pred, y_test)
    return null


def ridge_projection_correlation(
    X_src: np.ndarray,
    Y_tgt: np.ndarray,
    train_idx: np.ndarray | Sequence[int],
    test_idx: np.ndarray | Sequence[int],
    alpha: float | Sequence[float] = DEFAULT_ALPHAS,
) -> ProjectionResult:
    """Fit ridge ``Y ≈ X W`` on ``train_idx`` and correlate predictions with truth on ``test_idx``.

    ``alpha`` is a fixed penalty, or a grid searched by generalised cross-validation on the
    training items only (one penalty shared by all targets). See the module docstring for the
    solver and for the units of the returned correlations.
    """
    observed, _ = projection_with_null(
        X_src, Y_tgt, train_idx, test_idx, alpha=alpha, n_permutations=0
    )
    return observed


def permutation_null(
    X_src: np.ndarray,
    Y_tgt: np.ndarray,
    train_idx: np.ndarray | Sequence[int],
    test_idx: np.ndarray | Sequence[int],
    *,
    n_permutations: int = 5,
    seed: int = 0,
    alpha: float | Sequence[float] = DEFAULT_ALPHAS,
) -> np.ndarray:
    """Per-item correlations after projection when the training items are shuffled.

    Before each fit the target rows of the training items are permuted, which breaks the pairing
    of items between the models while keeping both marginal distributions; the map is then
    evaluated on the held-out items with their true pairing, by the same procedure (including
    the penalty search) as :func:`ridge_projection_correlation`.

    Returns ``[n_permutations, n_test]``; its mean is the null level of the headline metric.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be positive, got {n_permutations}")
    _, null = projection_with_null(
        X_src, Y_tgt, train_idx, test_idx, alpha=alpha, n_permutations=n_permutations, seed=seed
    )
    return null


# ---------------------------------------------------------------------------------------------
# the map that activation transfer writes into a model


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
