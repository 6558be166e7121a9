"""Layer-by-layer alignment between models: ridge projection, debiased CKA and mutual kNN.

Experiment 2A ``cross_model_extended`` compares every ordered pair of models at every pair of
layers. Three measures, each against a permutation null that breaks the pairing of items:

- **held-out correlation after a ridge projection** (as in PM1, :mod:`actspace.methods.similarity`): a
  ridge map from the source layer to the target layer, fitted on training items, scored on
  held-out items as the mean per-item Pearson r across standardised target dimensions;
- **debiased linear CKA** (Song et al. 2012; Kornblith et al. 2019) on all selected items;
- **mutual k-nearest-neighbour alignment** (Huh et al. 2024, "The Platonic Representation
  Hypothesis"): the mean share of an item's k nearest neighbours (cosine, self excluded) that are
  its neighbours in both models. Chance level is ``k / (n - 1)``.

Features are standardised per dimension (the ridge with its training items' statistics, CKA and
kNN with all items'). Residual streams carry a few dimensions of very large variance ("rogue" or
outlier dimensions, Timkey & van Schijndel 2021); each measure is reported a second time with the
``n_outlier_dims`` largest-variance dimensions of every layer removed.

A full grid is many fits, so the primitives here share work across cells: one SVD of a source
layer serves every target layer and every permutation (:class:`RidgeSVD`: scikit-learn's
``Ridge``, with PM1's closed-form generalised cross-validation over a penalty grid), and each
layer's U-centred Gram matrix and neighbour lists are computed once and reused by every cell and
every permutation.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from actspace.core.resampling import mean_ci, permutation_p_value
from actspace.methods.similarity import DEFAULT_ALPHAS, RidgeSVD, depth_to_layer, rowwise_pearson

EXPERIMENT = "cross_model_extended"
VARIANTS = ("standardised", "outliers_removed")
#: Measures of a grid cell; the ridge correlation is directional, CKA and kNN are symmetric.
MEASURES = ("correlation", "cka", "mutual_knn")


class StoreLike(Protocol):
    """The part of :class:`actspace.core.store.ActivationStore` this module reads."""

    meta: dict
    n_items: int
    n_layers: int

    def layer(self, k: int, pooling: str = "last") -> np.ndarray: ...

    def scores(self) -> list[dict]: ...


# ---------------------------------------------------------------------------------------------
# layer grids


def layer_indices(n_layers: int) -> list[int]:
    """Every residual-stream layer of a model of ``n_layers`` blocks (0 = embeddings)."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be positive, got {n_layers}")
    return list(range(n_layers + 1))


def depth_aligned_pairs(n_layers_src: int, n_layers_tgt: int) -> list[tuple[int, int]]:
    """For each source layer k, the target layer at the same relative depth ``k / n_layers_src``."""
    return [
        (k, depth_to_layer(n_layers_tgt, k / n_layers_src)) for k in layer_indices(n_layers_src)
    ]


# ---------------------------------------------------------------------------------------------
# features


def standardise(x: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Centre and scale each column by the mean and sd of ``reference`` (default ``x``).

    Constant columns keep scale 1 (they become zero after centring).
    """
    ref = x if reference is None else reference
    mean = ref.mean(axis=0)
    std = ref.std(axis=0)
    std[std < 1e-12] = 1.0
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
# ridge projection, one SVD per source layer


def resolve_alpha(ridge: RidgeSVD, y_train: np.ndarray, alpha: float | Sequence[float]) -> float:
    """A fixed penalty as is; a grid searched by generalised cross-validation."""
    if np.ndim(alpha) == 0:
        return float(alpha)
    return ridge.select_alpha(y_train, [float(a) for a in alpha])


# ---------------------------------------------------------------------------------------------
# debiased CKA from U-centred Gram matrices


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
    """Debiased CKA of two U-centred Grams (``*_norm``: the root of each one's self-HSIC sum).

    With ``perm`` the items of the second representation are relabelled, which U-centring
    commutes with, so the permuted Gram need not be centred again.
    """
    if k_norm <= 0.0 or ell_norm <= 0.0:
        return float("nan")
    other = ell if perm is None else ell[np.ix_(perm, perm)]
    return float(np.sum(k * other) / (k_norm * ell_norm))


def gram_norm(gram: np.ndarray) -> float:
    """``sqrt(max(HSIC(K, K), 0))`` up to the common factor that CKA cancels."""
    return float(np.sqrt(max(float(np.sum(gram * gram)), 0.0)))


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


# ---------------------------------------------------------------------------------------------
# the experiment


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def split_items(
    n: int, n_samples: int | None, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(items, train, test)``: PM1's seeded subsample and split, so aligned cells match PM1.

    ``items`` indexes the store; ``train`` and ``test`` index ``items``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    if n_samples is None or n_samples >= n:
        items = np.arange(n)
    elif n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    else:
        items = np.sort(rng.choice(n, size=n_samples, replace=False))
    m = items.size
    if m < 8:
        raise ValueError(f"cross-model alignment needs at least 8 items, got {m}")
    order = rng.permutation(m)
    n_test = min(max(4, int(round(test_fraction * m))), m - 4)
    return items, np.sort(order[n_test:]), np.sort(order[:n_test])


def check_same_items(stores: Mapping[str, StoreLike]) -> None:
    """Raise ValueError unless every store holds the same item ids in the same order."""
    reference: tuple[str, list[str]] | None = None
    for name, store in stores.items():
        ids = [str(row.get("id")) for row in store.scores()]
        if len(ids) != int(store.n_items):
            raise ValueError(f"store {name!r}: {len(ids)} score rows for {store.n_items} items")
        if reference is None:
            reference = (name, ids)
        elif ids != reference[1]:
            raise ValueError(
                f"stores {reference[0]!r} and {name!r} hold different items or a different order"
            )


def _grid(rows: int, cols: int) -> list[list[float | None]]:
    return [[None] * cols for _ in range(rows)]


def _cells_needed(
    layers_a: list[int], layers_b: list[int], n_a: int, n_b: int, full_grid: bool
) -> tuple[set[tuple[int, int]], set[tuple[int, int]], set[tuple[int, int]]]:
    """Cells (la, lb) for a->b, for b->a, and their union (for the symmetric measures)."""
    if full_grid:
        every = set(itertools.product(layers_a, layers_b))
        return every, every, every
    forward = set(depth_aligned_pairs(n_a, n_b))
    backward = {(la, lb) for lb, la in depth_aligned_pairs(n_b, n_a)}
    return forward, backward, forward | backward


def _best(grid: list[list[float | None]], layers_src: list[int], layers_tgt: list[int]) -> dict:
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


def run_cross_model_extended(
    stores: Mapping[str, StoreLike],
    *,
    pooling: str = "last",
    n_samples: int | None = None,
    test_fraction: float = 0.3,
    ridge_alpha: float | Sequence[float] = DEFAULT_ALPHAS,
    k: int = 10,
    n_permutations: int = 5,
    n_outlier_dims: int = 3,
    layer_depth: float = 0.5,
    full_grid: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every ordered model pair x every layer pair: correlation, CKA, mutual kNN and nulls.

    Returns ``(results, figure_data)``: ``results`` holds the headline (PM1's metric at
    ``layer_depth``, over ordered pairs), the model-pair matrices, the depth-aligned cells and the
    best-aligned layer pairs; ``figure_data`` holds the full layer-by-layer grids per pair.
    """
    started, date = time.perf_counter(), _now()
    names = list(stores)
    if len(names) < 2:
        raise ValueError(f"cross-model alignment needs at least two models, got {len(names)}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be positive, got {n_permutations}")
    sizes = {name: int(store.n_items) for name, store in stores.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every store must hold the same items, got item counts {sizes}")
    check_same_items(stores)
    items, train, test = split_items(next(iter(sizes.values())), n_samples, test_fraction, seed)
    if k >= items.size:
        raise ValueError(f"k={k} must be below the number of items ({items.size})")
    depth = {name: int(store.n_layers) for name, store in stores.items()}
    layers = {name: layer_indices(depth[name]) for name in names}
    perms = Permutations.draw(items.size, train.size, n_permutations, seed + 7919)

    # per ordered pair and variant: grids of every measure, plus per-item values at layer_depth
    grids: dict[tuple[str, str], dict[str, dict[str, list]]] = {}
    heat_items: dict[tuple[str, str, str], np.ndarray] = {}
    heat_null_items: dict[tuple[str, str, str], np.ndarray] = {}
    outliers: dict[str, dict[str, list]] = {name: {} for name in names}
    keys = [
        "correlation",
        "correlation_null",
        "correlation_p",
        "ridge_alpha",
        "cka",
        "cka_null",
        "cka_p",
        "mutual_knn",
        "mutual_knn_null",
        "mutual_knn_p",
    ]
    for a, b in itertools.permutations(names, 2):
        grids[(a, b)] = {
            v: {key: _grid(len(layers[a]), len(layers[b])) for key in keys} for v in VARIANTS
        }

    def prepare_model(name: str, variant: str) -> list[PreparedLayer]:
        n_out = n_outlier_dims if variant == "outliers_removed" else 0
        prepared = [
            prepare_layer(
                np.asarray(stores[name].layer(layer, pooling), dtype=np.float64)[items],
                train,
                test,
                k=k,
                n_outlier_dims=n_out,
                # independent tie-breaking per model and layer, the same in every pair
                rng=np.random.default_rng([seed, names.index(name), layer]),
            )
            for layer in layers[name]
        ]
        if n_out:
            outliers[name] = {
                "dims": [p.removed for p in prepared],
                "variance_share": [p.removed_variance_share for p in prepared],
            }
        return prepared

    # One unordered pair at a time, so only two models' layers are held in memory.
    for a, b in itertools.combinations(names, 2):
        forward, backward, union = _cells_needed(
            layers[a], layers[b], depth[a], depth[b], full_grid
        )
        heat = aligned_layer_pair(depth[a], depth[b], layer_depth)
        forward, backward, union = forward | {heat}, backward | {heat}, union | {heat}
        for variant in VARIANTS:
            prep_a, prep_b = prepare_model(a, variant), prepare_model(b, variant)
            ab, ba = grids[(a, b)][variant], grids[(b, a)][variant]
            for la, lb in sorted(union):
                for key, value in symmetric_cell(prep_a[la], prep_b[lb], perms).items():
                    ab[key][la][lb] = value
                    ba[key][lb][la] = value
                if (la, lb) in forward:
                    cell, per_item, per_item_null = ridge_cell(
                        prep_a[la], prep_b[lb], perms, ridge_alpha
                    )
                    for key, value in cell.items():
                        ab[key][la][lb] = value
                    if (la, lb) == heat:
                        heat_items[(a, b, variant)] = per_item
                        heat_null_items[(a, b, variant)] = per_item_null
                if (la, lb) in backward:
                    cell, per_item, per_item_null = ridge_cell(
                        prep_b[lb], prep_a[la], perms, ridge_alpha
                    )
                    for key, value in cell.items():
                        ba[key][lb][la] = value
                    if (la, lb) == heat:
                        heat_items[(b, a, variant)] = per_item
                        heat_null_items[(b, a, variant)] = per_item_null
            del prep_a, prep_b

    pairs, aligned_rows, best_rows = [], [], []
    for src, tgt in itertools.permutations(names, 2):
        ls, lt = aligned_layer_pair(depth[src], depth[tgt], layer_depth)
        pair: dict[str, Any] = {"source": src, "target": tgt, "layer_depth_cell": [ls, lt]}
        for variant in VARIANTS:
            grid = grids[(src, tgt)][variant]
            per_item = heat_items[(src, tgt, variant)]
            pair[variant] = {
                **{key: grid[key][ls][lt] for key in keys},
                "correlation_ci": list(
                    mean_ci(per_item, n_resamples=n_bootstrap, level=ci_level, seed=seed)
                ),
                "best": {
                    measure: _best(grid[measure], layers[src], layers[tgt]) for measure in MEASURES
                },
            }
            for layer_s, layer_t in depth_aligned_pairs(depth[src], depth[tgt]):
                aligned_rows.append(
                    {
                        "source": src,
                        "target": tgt,
                        "variant": variant,
                        "source_layer": layer_s,
                        "target_layer": layer_t,
                        "relative_depth": layer_s / depth[src],
                        **{key: grid[key][layer_s][layer_t] for key in keys},
                    }
                )
            best_rows.append(
                {
                    "source": src,
                    "target": tgt,
                    "variant": variant,
                    **{f"{measure}_best": pair[variant]["best"][measure] for measure in MEASURES},
                }
            )
        pairs.append(pair)

    matrices = {
        variant: {
            measure: [
                [
                    None
                    if a == b
                    else next(
                        p[variant][measure] for p in pairs if p["source"] == a and p["target"] == b
                    )
                    for b in names
                ]
                for a in names
            ]
            for measure in (*MEASURES, "correlation_null", "cka_null", "mutual_knn_null")
        }
        for variant in VARIANTS
    }
    best_matrices = {
        variant: {
            measure: [
                [
                    None
                    if a == b
                    else next(
                        p[variant]["best"][measure]["value"]
                        for p in pairs
                        if p["source"] == a and p["target"] == b
                    )
                    for b in names
                ]
                for a in names
            ]
            for measure in MEASURES
        }
        for variant in VARIANTS
    }
    headline = float(np.mean([p["standardised"]["correlation"] for p in pairs]))
    headline_items = np.mean(
        [heat_items[(p["source"], p["target"], VARIANTS[0])] for p in pairs], 0
    )
    headline_null_items = np.mean(
        [heat_null_items[(p["source"], p["target"], VARIANTS[0])] for p in pairs], 0
    )
    results = {
        "experiment": EXPERIMENT,
        "name": EXPERIMENT,
        "metric": "heldout_projection_correlation_at_layer_depth",
        "value": headline,
        "ci": list(mean_ci(headline_items, n_resamples=n_bootstrap, level=ci_level, seed=seed)),
        "ci_level": ci_level,
        "n": int(test.size),
        "duration_s": 0.0,
        "date": date,
        "metric_description": (
            "mean over ordered model pairs, at the configured relative depth, of the held-out "
            "per-item Pearson correlation between ridge-mapped and actual standardised target "
            "activations (PM1's metric); bootstrap CI over held-out items"
        ),
        "models": names,
        "n_layers": depth,
        "pooling": pooling,
        "n_items": int(items.size),
        "n_train": int(train.size),
        "n_test": int(test.size),
        "k": int(k),
        "mutual_knn_chance": k / (items.size - 1),
        "n_permutations": int(n_permutations),
        "n_outlier_dims": int(n_outlier_dims),
        "layer_depth": float(layer_depth),
        "full_grid": bool(full_grid),
        "seed": int(seed),
        "variants": list(VARIANTS),
        "model_pair_matrices": {"models": names, "at_layer_depth": matrices, "best": best_matrices},
        "pairs": pairs,
        "depth_aligned": aligned_rows,
        "best_aligned_layer_pairs": best_rows,
        "outlier_dimensions": outliers,
        "comparison": {
            "description": (
                "held-out per-item correlation between ridge-mapped and actual standardised "
                f"target activations at relative depth {layer_depth}, averaged over the "
                f"{len(pairs)} ordered model pairs (the headline's per-item values), against the "
                "same item's correlation under the permutation null (training targets shuffled, "
                f"averaged over {n_permutations} refits), per held-out item"
            ),
            "kind": "paired",
            "unit": "item",
            "a": [float(v) for v in headline_items],
            "b": [float(v) for v in headline_null_items],
            "label_a": "ridge projection",
            "label_b": "permutation null",
            "binary": False,
            "scale": 1.0,
        },
    }
    figure_data = {
        "experiment": EXPERIMENT,
        "models": names,
        "variants": list(VARIANTS),
        "measures": list(MEASURES),
        "model_pair_heatmap": results["model_pair_matrices"],
        "layer_grids": [
            {
                "source": src,
                "target": tgt,
                "source_layers": layers[src],
                "target_layers": layers[tgt],
                "depth_aligned": [list(p) for p in depth_aligned_pairs(depth[src], depth[tgt])],
                **{variant: grids[(src, tgt)][variant] for variant in VARIANTS},
            }
            for src, tgt in itertools.permutations(names, 2)
        ],
    }
    results["duration_s"] = round(time.perf_counter() - started, 3)
    return results, figure_data


def aligned_layer_pair(n_layers_a: int, n_layers_b: int, relative_depth: float) -> tuple[int, int]:
    """The layers of two models at one relative depth (as PM1 picks them)."""
    return depth_to_layer(n_layers_a, relative_depth), depth_to_layer(n_layers_b, relative_depth)


# ---------------------------------------------------------------------------------------------
# summary


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def summary_markdown(results: Mapping[str, Any]) -> str:
    """A page for a person: the model-pair table at the configured depth and the best cells."""
    lines = [
        "# Cross-model alignment, extended (2A)",
        "",
        f"Models: {', '.join(results['models'])}; pooling `{results['pooling']}`; "
        f"{results['n_items']} shared items ({results['n_train']} train / {results['n_test']} "
        f"held out for the ridge projection); k = {results['k']} for mutual kNN (chance "
        f"{_fmt(results['mutual_knn_chance'])}); {results['n_permutations']} permutations per "
        f"null; seed {results['seed']}.",
        "",
        f"**Headline:** mean held-out correlation after a ridge projection at relative depth "
        f"{results['layer_depth']}: **{_fmt(results['value'])}** "
        f"(95% CI [{_fmt(results['ci'][0])}, {_fmt(results['ci'][1])}], n = {results['n']}).",
        "",
    ]
    for variant in results["variants"]:
        title = (
            "standardised features"
            if variant == "standardised"
            else f"without the {results['n_outlier_dims']} largest-variance dimensions per layer"
        )
        lines += [
            f"## At relative depth {results['layer_depth']}, {title}",
            "",
            "| Source | Target | Layers | Correlation (null) | CKA (null) | Mutual kNN (null) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for pair in results["pairs"]:
            cell = pair[variant]
            ls, lt = pair["layer_depth_cell"]
            lines.append(
                f"| {pair['source']} | {pair['target']} | {ls} -> {lt} "
                f"| {_fmt(cell['correlation'])} ({_fmt(cell['correlation_null'])}) "
                f"| {_fmt(cell['cka'])} ({_fmt(cell['cka_null'])}) "
                f"| {_fmt(cell['mutual_knn'])} ({_fmt(cell['mutual_knn_null'])}) |"
            )
        lines += [
            "",
            "Best-aligned layer pairs (source layer -> target layer: value):",
            "",
            "| Source | Target | Correlation | CKA | Mutual kNN |",
            "| --- | --- | --- | --- | --- |",
        ]
        for pair in results["pairs"]:
            best = pair[variant]["best"]
            cells = [
                f"{best[m]['source_layer']} -> {best[m]['target_layer']}: {_fmt(best[m]['value'])}"
                for m in MEASURES
            ]
            lines.append(f"| {pair['source']} | {pair['target']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Layer 0 is the embedding output; layer k the output of block k. The full "
        "layer-by-layer grids of every measure and null are in `figure_data.json`.",
    ]
    return "\n".join(lines) + "\n"
