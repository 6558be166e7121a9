"""Representational similarity of two models' activations on the same items, without a fitted map.

- **Features**: per-dimension standardisation (:func:`scale_statistics`, :func:`standardise`; the
  one implementation, also behind the ridge map of :mod:`actspace.methods.ridge`), and the removal
  of the few dimensions of very large variance that residual streams carry ("rogue" or outlier
  dimensions, Timkey & van Schijndel 2021; :func:`outlier_dimensions`, :func:`remove_dimensions`).
- **Pearson correlation** of matching rows or columns (:func:`rowwise_pearson`,
  :func:`columnwise_pearson`): the unit in which a ridge map's held-out predictions are scored.
- **Debiased linear CKA** (Song et al. 2012; Kornblith et al. 2019) from U-centred Gram matrices
  (:func:`u_centred_gram`). :func:`linear_cka_debiased` compares two representations at once
  (PM1); experiment 2A computes each Gram once per representation and reuses it for every
  partner and every permutation of a null (:func:`gram_norm`, :func:`cka_from_grams`). Both read
  the same U-centred Grams; they differ only in the last rounding of the denominator
  (``sqrt(a·b)`` against ``sqrt(a)·sqrt(b)``), and each keeps the arithmetic its numbers were
  first computed with.
- **Mutual k-nearest-neighbour alignment** (Huh et al. 2024, "The Platonic Representation
  Hypothesis"): the mean share of an item's k nearest neighbours (cosine, self excluded) that are
  its neighbours in both representations; chance level is ``k / (n - 1)``. Neighbour lists are
  computed once per representation (:func:`knn_indices`, :func:`knn_membership`) and a permuted
  null only relabels them (:func:`mutual_knn_from_neighbours`).
- **Layers at the same relative depth** of two models (:func:`depth_to_layer`,
  :func:`aligned_layers`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------
# inputs and features


def check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two finite [items, dims] arrays over the same items, as float64 (refused otherwise)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"activations must be [items, dims], got {x.shape} and {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"both models need the same items, got {x.shape[0]} and {y.shape[0]}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("activations contain NaN or infinite values")
    return x, y


def scale_statistics(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of ``reference``; constant columns get scale 1."""
    mean = reference.mean(axis=0)
    std = reference.std(axis=0)
    std[std < 1e-12] = 1.0
    return mean, std


def standardise(x: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Centre and scale each column by the mean and sd of ``reference`` (default ``x``).

    Constant columns keep scale 1 (they become zero after centring).
    """
    mean, std = scale_statistics(x if reference is None else reference)
    return (x - mean) / std


def outlier_dimensions(x: np.ndarray, n: int) -> np.ndarray:
    """Indices (ascending) of the ``n`` dimensions of largest variance of ``x`` ([items, d])."""
    x = np.asarray(x)
    if n < 0:
        raise ValueError(f"the number of outlier dimensions must be non-negative, got {n}")
    if n >= x.shape[1]:
        raise ValueError(f"cannot remove {n} of {x.shape[1]} dimensions: none would remain")
    if n == 0:
        return np.zeros(0, dtype=int)
    variance = x.var(axis=0)
    order = np.argsort(-variance, kind="stable")
    return np.sort(order[:n])


def remove_dimensions(x: np.ndarray, dims: np.ndarray | Sequence[int]) -> np.ndarray:
    """``x`` without the columns ``dims``."""
    keep = np.ones(x.shape[1], dtype=bool)
    keep[np.asarray(dims, dtype=int)] = False
    return x[:, keep]


# ---------------------------------------------------------------------------------------------
# Pearson correlation


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


# ---------------------------------------------------------------------------------------------
# debiased linear CKA from U-centred Gram matrices


def u_centred_gram(x: np.ndarray) -> np.ndarray:
    """The U-centred linear Gram matrix of ``x`` ([items, d]); needs at least 4 items."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 items, got {n}")
    gram = x @ x.T
    np.fill_diagonal(gram, 0.0)
    means = gram.sum(axis=0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    gram -= means[:, None]
    gram -= means[None, :]
    np.fill_diagonal(gram, 0.0)
    return gram


def cka_from_grams(
    k: np.ndarray, ell: np.ndarray, k_norm: float, ell_norm: float, perm: np.ndarray | None = None
) -> float:
    """Debiased CKA of two U-centred Grams (``*_norm``: :func:`gram_norm` of each).

    The estimator of :func:`linear_cka_debiased`, for Grams computed once and reused. With
    ``perm`` the items of the second representation are relabelled, which U-centring commutes
    with, so the permuted Gram need not be centred again.
    """
    if k_norm <= 0.0 or ell_norm <= 0.0:
        return float("nan")
    other = ell if perm is None else ell[np.ix_(perm, perm)]
    return float(np.sum(k * other) / (k_norm * ell_norm))


def gram_norm(gram: np.ndarray) -> float:
    """``sqrt(max(HSIC(K, K), 0))`` up to the common factor that CKA cancels."""
    return float(np.sqrt(max(float(np.sum(gram * gram)), 0.0)))


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
    x, y = check_pair(X, Y)
    # Centring the columns first leaves the U-centred Gram unchanged in exact arithmetic, but not
    # in its last bits: PM1's reported values were computed this way, so it stays.
    k = u_centred_gram(x - x.mean(axis=0))
    ell = u_centred_gram(y - y.mean(axis=0))
    hsic_xy = float(np.sum(k * ell))
    hsic_xx = float(np.sum(k * k))
    hsic_yy = float(np.sum(ell * ell))
    # The unbiased HSIC of a kernel with itself can dip below zero for tiny n; guard the root.
    # One root of the product, where cka_from_grams multiplies two roots: the same value up to
    # the last bit, and each caller keeps the rounding its numbers were computed with.
    denom = np.sqrt(max(hsic_xx, 0.0) * max(hsic_yy, 0.0))
    if denom <= 0.0:
        return float("nan")
    return hsic_xy / denom


# ---------------------------------------------------------------------------------------------
# mutual k-nearest neighbours


def knn_indices(x: np.ndarray, k: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """The ``k`` nearest neighbours of every item by cosine similarity, self excluded: [n, k].

    Exact ties (items with identical vectors, or a layer that is the same for every item, such
    as the embedding of a shared last token) are broken at random with ``rng``; give the two
    models independent generators, so that ties count as chance agreement rather than as the
    same index order in both.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must lie in 1..{n - 1} for {n} items, got {k}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms > 1e-12, norms, 1.0)
    sim = unit @ unit.T
    if rng is not None:
        sim += rng.uniform(0.0, 1e-9, size=sim.shape)
    np.fill_diagonal(sim, -np.inf)
    return np.argpartition(-sim, k - 1, axis=1)[:, :k]


def knn_membership(neighbours: np.ndarray) -> np.ndarray:
    """Boolean [n, n]: entry (i, j) says whether j is among the neighbours of i."""
    n = neighbours.shape[0]
    member = np.zeros((n, n), dtype=bool)
    member[np.arange(n)[:, None], neighbours] = True
    return member


def mutual_knn_from_neighbours(
    member_x: np.ndarray, neighbours_y: np.ndarray, perm: np.ndarray | None = None
) -> float:
    """Mean share of each item's neighbours in ``y`` that are also its neighbours in ``x``.

    ``perm`` relabels the items of ``y`` (row i of ``y`` becomes row ``perm[i]``): the null.
    """
    n, k = neighbours_y.shape
    rows = np.arange(n)[:, None]
    if perm is None:
        hits = member_x[rows, neighbours_y]
    else:
        inverse = np.argsort(perm)
        hits = member_x[rows, inverse[neighbours_y[perm]]]
    return float(hits.sum() / (n * k))


def mutual_knn_alignment(x: np.ndarray, y: np.ndarray, k: int = 10, seed: int = 0) -> float:
    """Mutual k-nearest-neighbour alignment of two representations of the same items."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"both sides need the same items, got {x.shape[0]} and {y.shape[0]}")
    rng_x, rng_y = np.random.default_rng(seed).spawn(2)
    return mutual_knn_from_neighbours(
        knn_membership(knn_indices(x, k, rng_x)), knn_indices(y, k, rng_y)
    )


# ---------------------------------------------------------------------------------------------
# layers at the same relative depth


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
