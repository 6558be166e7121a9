"""The layer-by-layer grid of experiment 2A ``cross_model_extended``: its cells and their nulls.

A grid compares every layer of one model with every layer of another (or, without the full grid,
the layers at the same relative depth). A full grid is many fits, so work is shared across cells:
each layer is prepared once per variant (:class:`PreparedLayer`: standardised features, one SVD
for the ridge projection, :class:`actspace.methods.ridge.RidgeSVD`, with PM1's closed-form
generalised cross-validation over a penalty grid; the U-centred Gram matrix and the neighbour
lists of :mod:`actspace.methods.similarity`), and every cell and every permutation of the null
reuses it. The null draws are shared too (:class:`Permutations`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actspace.core.resampling import permutation_p_value
from actspace.core.store import nearest_layer
from actspace.methods.ridge import RidgeSVD
from actspace.methods.similarity import (
    cka_from_grams,
    depth_to_layer,
    gram_norm,
    knn_indices,
    knn_membership,
    mutual_knn_from_neighbours,
    outlier_dimensions,
    remove_dimensions,
    rowwise_pearson,
    standardise,
    u_centred_gram,
)

# ---------------------------------------------------------------------------------------------
# which layers and cells


def layer_indices(n_layers: int) -> list[int]:
    """Every residual-stream layer of a model of ``n_layers`` blocks (0 = embeddings)."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be positive, got {n_layers}")
    return list(range(n_layers + 1))


def depth_aligned_pairs(
    n_layers_src: int,
    n_layers_tgt: int,
    layers_src: Sequence[int] | None = None,
    layers_tgt: Sequence[int] | None = None,
) -> list[tuple[int, int]]:
    """For each source layer k, the target layer at the same relative depth ``k / n_layers_src``.

    ``layers_src`` and ``layers_tgt`` are the stored layers (default: every layer); with fewer,
    the target layer is the stored one nearest to that depth (the lower one on a tie)."""
    sources = layer_indices(n_layers_src) if layers_src is None else list(layers_src)
    targets = layer_indices(n_layers_tgt) if layers_tgt is None else list(layers_tgt)
    return [
        (k, nearest_layer(targets, depth_to_layer(n_layers_tgt, k / n_layers_src))) for k in sources
    ]


def cells_needed(
    layers_a: list[int], layers_b: list[int], n_a: int, n_b: int, full_grid: bool
) -> tuple[set[tuple[int, int]], set[tuple[int, int]], set[tuple[int, int]]]:
    """Cells (la, lb) for a->b, for b->a, and their union (for the symmetric measures)."""
    if full_grid:
        every = set(itertools.product(layers_a, layers_b))
        return every, every, every
    forward = set(depth_aligned_pairs(n_a, n_b, layers_a, layers_b))
    backward = {(la, lb) for lb, la in depth_aligned_pairs(n_b, n_a, layers_b, layers_a)}
    return forward, backward, forward | backward


def empty_grid(rows: int, cols: int) -> list[list[float | None]]:
    """A grid of ``rows`` source layers x ``cols`` target layers, no cell computed yet."""
    return [[None] * cols for _ in range(rows)]


def best_cell(
    grid: list[list[float | None]], layers_src: list[int], layers_tgt: list[int]
) -> dict[str, Any]:
    """The layer pair of the grid's largest finite value (first on ties), and the value."""
    best: dict[str, Any] = {"source_layer": None, "target_layer": None, "value": None}
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            finite = value is not None and np.isfinite(value)
            if finite and (best["value"] is None or value > best["value"]):
                best = {
                    "source_layer": layers_src[i],
                    "target_layer": layers_tgt[j],
                    "value": float(value),
                }
    return best


# ---------------------------------------------------------------------------------------------
# one model's layers, prepared once per variant


@dataclass
class PreparedLayer:
    """What every cell needs from one layer: ridge inputs, U-centred Gram, neighbours."""

    x_train: np.ndarray  # standardised with the training items' statistics
    x_test: np.ndarray
    ridge: RidgeSVD
    x_test_v: np.ndarray  # x_test @ ridge.v
    gram: np.ndarray
    gram_norm: float
    neighbours: np.ndarray
    member: np.ndarray
    removed: list[int]  # outlier dimensions removed (empty for the standardised variant)
    removed_variance_share: float


def prepare_layer(
    raw: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    k: int,
    n_outlier_dims: int = 0,
    rng: np.random.Generator | None = None,
) -> PreparedLayer:
    """Standardise one layer's activations (optionally without its outlier dimensions).

    ``rng`` breaks exact ties among neighbours (see :func:`knn_indices`).
    """
    raw = np.asarray(raw, dtype=np.float64)
    dims = outlier_dimensions(raw[train], n_outlier_dims)
    variance = raw[train].var(axis=0)
    share = float(variance[dims].sum() / variance.sum()) if variance.sum() > 0 else 0.0
    x = remove_dimensions(raw, dims)
    x_train = standardise(x[train])
    x_test = standardise(x[test], x[train])
    full = standardise(x)
    gram = u_centred_gram(full)
    neighbours = knn_indices(full, k, rng)
    ridge = RidgeSVD(x_train)
    return PreparedLayer(
        x_train=x_train,
        x_test=x_test,
        ridge=ridge,
        x_test_v=x_test @ ridge.v,
        gram=gram,
        gram_norm=gram_norm(gram),
        neighbours=neighbours,
        member=knn_membership(neighbours),
        removed=[int(d) for d in dims],
        removed_variance_share=share,
    )


@dataclass
class Permutations:
    """The shared null draws: permutations of all items (CKA, kNN) and of training items (ridge)."""

    items: list[np.ndarray]
    train: list[np.ndarray]

    @classmethod
    def draw(cls, n_items: int, n_train: int, n: int, seed: int) -> Permutations:
        rng = np.random.default_rng(seed)
        return cls(
            items=[rng.permutation(n_items) for _ in range(n)],
            train=[rng.permutation(n_train) for _ in range(n)],
        )


def symmetric_cell(a: PreparedLayer, b: PreparedLayer, perms: Permutations) -> dict[str, Any]:
    """CKA and mutual kNN of one layer pair with their permutation nulls."""
    cka = cka_from_grams(a.gram, b.gram, a.gram_norm, b.gram_norm)
    cka_null = np.array(
        [cka_from_grams(a.gram, b.gram, a.gram_norm, b.gram_norm, p) for p in perms.items]
    )
    knn = mutual_knn_from_neighbours(a.member, b.neighbours)
    knn_null = np.array(
        [mutual_knn_from_neighbours(a.member, b.neighbours, p) for p in perms.items]
    )
    return {
        "cka": cka,
        "cka_null": float(np.mean(cka_null)),
        "cka_p": permutation_p_value(cka, cka_null) if np.isfinite(cka) else float("nan"),
        "mutual_knn": knn,
        "mutual_knn_null": float(np.mean(knn_null)),
        "mutual_knn_p": permutation_p_value(knn, knn_null),
    }


def ridge_cell(
    src: PreparedLayer,
    tgt: PreparedLayer,
    perms: Permutations,
    alpha: float | Sequence[float],
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Held-out projection correlation source -> target and its null; also the per-item values.

    The null refits with the training targets shuffled (a penalty grid is searched again for
    each permutation), as PM1's null does. Returns ``(cell, per_item, per_item_null)``, the last
    two over held-out items: the real correlation and the null's, averaged over permutations.
    """
    # tgt.x_train is standardised on the training items, so it is centred: no intercept
    pred, used = src.ridge.fit_predict_centred(tgt.x_train, src.x_test_v, alpha)
    per_item = rowwise_pearson(pred, tgt.x_test)
    value = float(per_item.mean())
    null_items = np.array(
        [
            rowwise_pearson(
                src.ridge.fit_predict_centred(tgt.x_train[p], src.x_test_v, alpha)[0],
                tgt.x_test,
            )
            for p in perms.train
        ]
    )
    null = np.array([float(row.mean()) for row in null_items])
    cell = {
        "correlation": value,
        "correlation_null": float(np.mean(null)),
        "correlation_p": permutation_p_value(value, null),
        "ridge_alpha": used,
    }
    return cell, per_item, null_items.mean(axis=0)
