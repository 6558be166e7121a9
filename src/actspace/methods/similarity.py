"""Cross-model representational similarity: ridge projection correlation, debiased CKA, nulls.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Ridge penalties searched by generalised cross-validation on the training items.
#: Features are standardised, so ``X.T @ X`` scales with the number of items; the grid spans
#: from almost no shrinkage to predicting (nearly) the mean.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 6, 17))


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


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"activations must be [items, dims], got {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"both models need the same items, got {x.shape[0]} and {y.shape[0]}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("activations contain NaN or infinite values")
    return x, y


def _standardise(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centre and scale by the training rows' statistics; constant dimensions keep scale 1."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std < 1e-12] = 1.0
    return tuple((a - mean) / std for a in (train, *others))


def rowwise_pearson(a: np.ndarray, b: np.ndarray, undefined: float = 0.0) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``.

    A row with zero variance on either side gets ``undefined``: 0 by default, since a constant
    prediction explains nothing linearly.
    """
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    num = np.sum(a * b, axis=1)
    den = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1))
    out = np.full(a.shape[0], undefined, dtype=np.float64)
    ok = den > 1e-12
    out[ok] = num[ok] / den[ok]
    return out


def columnwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``a`` with that of ``b`` (NaN if constant)."""
    return rowwise_pearson(a.T, b.T, undefined=float("nan"))


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


def projection_with_null(
    X_src: np.ndarray,
    Y_tgt: np.ndarray,
    train_idx: np.ndarray | Sequence[int],
    test_idx: np.ndarray | Sequence[int],
    *,
    alpha: float | Sequence[float] = DEFAULT_ALPHAS,
    n_permutations: int = 5,
    seed: int = 0,
) -> tuple[ProjectionResult, np.ndarray]:
    """:func:`ridge_projection_correlation` and :func:`permutation_null` sharing one decomposition.

    Returns the observed result and the null's per-item correlations ``[n_permutations, n_test]``
    (an empty first axis when ``n_permutations`` is 0).
    """
    if n_permutations < 0:
        raise ValueError(f"n_permutations must be 0 or more, got {n_permutations}")
    x, y = _check_pair(X_src, Y_tgt)
    train, test = _split(x.shape[0], train_idx, test_idx)
    x_train, x_test = _standardise(x[train], x[test])
    y_train, y_test = _standardise(y[train], y[test])
    solver = RidgeSVD(x_train)
    pred, used = solver.fit_predict(y_train, x_test, alpha)
    observed = ProjectionResult(
        per_item=rowwise_pearson(pred, y_test),
        per_dimension=columnwise_pearson(pred, y_test),
        alpha=used,
    )
    rng = np.random.default_rng(seed)
    null = np.empty((n_permutations, test.size))
    for p in range(n_permutations):
        shuffled = y_train[rng.permutation(train.size)]
        pred, _ = solver.fit_predict(shuffled, x_test, alpha)
        null[p] = rowwise_pearson(pred, y_test)
    return observed, null


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


def _u_centre(gram: np.ndarray) -> np.ndarray:
    """U-centre a Gram matrix (Székely & Rizzo 2014), the centring behind unbiased HSIC."""
    n = gram.shape[0]
    g = gram.copy()
    np.fill_diagonal(g, 0.0)
    means = g.sum(axis=0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    g -= means[:, None]
    g -= means[None, :]
    np.fill_diagonal(g, 0.0)
    return g


def linear_cka_debiased(X: np.ndarray, Y: np.ndarray) -> float:
    """Debiased linear CKA between two representations of the same items.

    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels ``K = X Xᵀ``,
    ``L = Y Yᵀ`` and the unbiased HSIC estimator of Song et al. (2012), computed through
    U-centred Gram matrices as in Kornblith et al. (2019) and Nguyen et al. (2021). Unlike the
    biased estimator it is close to 0 for independent representations even when the dimension
    exceeds the number of items. It is invariant to orthogonal transforms and isotropic scaling
    of either side, and equals 1 for identical inputs. Needs at least 4 items; NaN when either
    side has no variance.
    """
    x, y = _check_pair(X, Y)
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 items, got {n}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    k = _u_centre(x @ x.T)
    ell = _u_centre(y @ y.T)
    hsic_xy = float(np.sum(k * ell))
    hsic_xx = float(np.sum(k * k))
    hsic_yy = float(np.sum(ell * ell))
    # The unbiased HSIC of a kernel with itself can dip below zero for tiny n; guard the root.
    denom = np.sqrt(max(hsic_xx, 0.0) * max(hsic_yy, 0.0))
    if denom <= 0.0:
        return float("nan")
    return hsic_xy / denom


def depth_to_layer(n_layers: int, relative_depth: float) -> int:
    """Layer index at ``relative_depth`` in [0, 1]: 0 = embeddings, ``n_layers`` = last block.

    Rounds half up, so depth 0.5 of a 5-block model is layer 3 (of 0..5).
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be positive, got {n_layers}")
    depth = float(relative_depth)
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"relative depth must lie in [0, 1], got {relative_depth}")
    return int(np.floor(depth * n_layers + 0.5))


def aligned_layers(n_layers_a: int, n_layers_b: int, relative_depth: float) -> tuple[int, int]:
    """Layer indices of two models at the same relative depth (index 0 = embeddings)."""
    return depth_to_layer(n_layers_a, relative_depth), depth_to_layer(n_layers_b, relative_depth)
