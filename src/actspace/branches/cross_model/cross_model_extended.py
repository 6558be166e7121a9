"""Experiment 2A ``cross_model_extended``: layer-by-layer alignment between every pair of models.

Every ordered pair of models is compared at every pair of layers (or, without the full grid, at
the layers of the same relative depth). Three measures, each against a permutation null that
breaks the pairing of items:

- **held-out correlation after a ridge projection** (as in PM1, :mod:`actspace.methods.ridge`):
  a ridge map from the source layer to the target layer, fitted on training items, scored on
  held-out items as the mean per-item Pearson r across standardised target dimensions;
- **debiased linear CKA** on all selected items (:mod:`actspace.methods.similarity`);
- **mutual k-nearest-neighbour alignment** (:mod:`actspace.methods.similarity`): the mean share of
  an item's k nearest neighbours that are its neighbours in both models; chance is ``k / (n - 1)``.

Features are standardised per dimension (the ridge with its training items' statistics, CKA and
kNN with all items'). Residual streams carry a few dimensions of very large variance; each measure
is reported a second time with the ``n_outlier_dims`` largest-variance dimensions of every layer
removed. The cells and their shared work are :mod:`actspace.branches.cross_model.layer_grid`;
this module runs the experiment, assembles its results and writes its summary.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from actspace import plan
from actspace.branches.cross_model.layer_grid import (
    Permutations,
    PreparedLayer,
    best_cell,
    cells_needed,
    depth_aligned_pairs,
    empty_grid,
    prepare_layer,
    ridge_cell,
    symmetric_cell,
)
from actspace.core import criteria
from actspace.core.groups import store_groups
from actspace.core.resampling import mean_ci
from actspace.core.results import no_value_result, no_value_summary, now
from actspace.core.splits import group_cut, group_order
from actspace.core.store import StoreLike, nearest_layer, stored_layers
from actspace.methods.ridge import ridge_alphas
from actspace.methods.similarity import aligned_layers

EXPERIMENT = plan.experiment("cross_model_extended").name
HEADLINE_METRIC = "heldout_projection_correlation_at_layer_depth"
VARIANTS = ("standardised", "outliers_removed")
#: Measures of a grid cell; the ridge correlation is directional, CKA and kNN are symmetric.
MEASURES = ("correlation", "cka", "mutual_knn")


def split_items(
    n: int,
    n_samples: int | None,
    test_fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(items, train, test)``: a seeded subsample and split, every group of ``groups`` (one
    label per store item) on one side; items that share no group split as they always did.

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
    item_groups = None if groups is None else np.asarray(groups)[items]
    order = group_order(item_groups, m, rng)
    n_test = min(max(4, int(round(test_fraction * m))), m - 4)
    n_test = group_cut(order, item_groups, n_test)
    if min(n_test, m - n_test) < 4:
        raise ValueError(f"{m} items in their groups leave fewer than 4 on one side of the split")
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


def run_cross_model_extended(
    stores: Mapping[str, StoreLike],
    *,
    pooling: str,
    n_samples: int | None,
    test_fraction: float,
    ridge_alpha: str | float | list[float],
    k: int,
    n_permutations: int,
    n_outlier_dims: int,
    layer_depth: float,
    full_grid: bool,
    n_bootstrap: int,
    seed: int,
    ci_level: float = 0.95,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every ordered model pair x every layer pair: correlation, CKA, mutual kNN and nulls.

    The keywords are the keys of ``experiments.cross_model_extended`` (``ridge_alpha`` as the
    configuration gives it: ``auto``, a penalty or a grid) and the study's ``seed``.

    Returns ``(results, figure_data)``: ``results`` holds the headline (PM1's metric at
    ``layer_depth``, over ordered pairs), the model-pair matrices, the depth-aligned cells and the
    best-aligned layer pairs; ``figure_data`` holds the full layer-by-layer grids per pair.
    """
    started, date = time.perf_counter(), now()
    if not 0.0 <= layer_depth <= 1.0:
        raise ValueError(f"layer_depth must lie in [0, 1], got {layer_depth}")
    alpha = ridge_alphas(ridge_alpha)
    names = list(stores)
    if len(names) < 2:
        reason = (
            "cross-model alignment compares two or more models; this study has one "
            f"({', '.join(names)})"
        )
        record = no_value_result(
            EXPERIMENT, HEADLINE_METRIC, reason, started=started, date=date, models=names
        )
        return record, {"curves": {}}
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be positive, got {n_permutations}")
    sizes = {name: int(store.n_items) for name, store in stores.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every store must hold the same items, got item counts {sizes}")
    check_same_items(stores)
    groups = store_groups(next(iter(stores.values())))
    n = next(iter(sizes.values()))
    items, train, test = split_items(n, n_samples, test_fraction, seed, groups)
    if k >= items.size:
        raise ValueError(f"k={k} must be below the number of items ({items.size})")
    depth = {name: int(store.n_layers) for name, store in stores.items()}
    # the stored layers (every layer unless extract.layers chose fewer); grids are indexed by
    # position in them, results name layers by number
    layers = {name: stored_layers(stores[name]) for name in names}
    at = {name: {layer: i for i, layer in enumerate(layers[name])} for name in names}

    def aligned(src: str, tgt: str) -> tuple[int, int]:
        """The stored layers nearest to ``layer_depth`` in both models."""
        ls, lt = aligned_layers(depth[src], depth[tgt], layer_depth)
        return nearest_layer(layers[src], ls), nearest_layer(layers[tgt], lt)

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
            v: {key: empty_grid(len(layers[a]), len(layers[b])) for key in keys} for v in VARIANTS
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
        forward, backward, union = cells_needed(layers[a], layers[b], depth[a], depth[b], full_grid)
        heat = aligned(a, b)
        forward, backward, union = forward | {heat}, backward | {heat}, union | {heat}
        for variant in VARIANTS:
            prep_a, prep_b = prepare_model(a, variant), prepare_model(b, variant)
            ab, ba = grids[(a, b)][variant], grids[(b, a)][variant]
            for la, lb in sorted(union):
                ia, ib = at[a][la], at[b][lb]
                for key, value in symmetric_cell(prep_a[ia], prep_b[ib], perms).items():
                    ab[key][ia][ib] = value
                    ba[key][ib][ia] = value
                if (la, lb) in forward:
                    cell, per_item, per_item_null = ridge_cell(prep_a[ia], prep_b[ib], perms, alpha)
                    for key, value in cell.items():
                        ab[key][ia][ib] = value
                    if (la, lb) == heat:
                        heat_items[(a, b, variant)] = per_item
                        heat_null_items[(a, b, variant)] = per_item_null
                if (la, lb) in backward:
                    cell, per_item, per_item_null = ridge_cell(prep_b[ib], prep_a[ia], perms, alpha)
                    for key, value in cell.items():
                        ba[key][ib][ia] = value
                    if (la, lb) == heat:
                        heat_items[(b, a, variant)] = per_item
                        heat_null_items[(b, a, variant)] = per_item_null
            del prep_a, prep_b

    pairs, aligned_rows, best_rows = [], [], []
    for src, tgt in itertools.permutations(names, 2):
        ls, lt = aligned(src, tgt)
        pair: dict[str, Any] = {"source": src, "target": tgt, "layer_depth_cell": [ls, lt]}
        for variant in VARIANTS:
            grid = grids[(src, tgt)][variant]
            per_item = heat_items[(src, tgt, variant)]
            pair[variant] = {
                **{key: grid[key][at[src][ls]][at[tgt][lt]] for key in keys},
                "correlation_ci": list(
                    mean_ci(per_item, n_resamples=n_bootstrap, level=ci_level, seed=seed)
                ),
                "best": {
                    measure: best_cell(grid[measure], layers[src], layers[tgt])
                    for measure in MEASURES
                },
            }
            for layer_s, layer_t in depth_aligned_pairs(
                depth[src], depth[tgt], layers[src], layers[tgt]
            ):
                aligned_rows.append(
                    {
                        "source": src,
                        "target": tgt,
                        "variant": variant,
                        "source_layer": layer_s,
                        "target_layer": layer_t,
                        "relative_depth": layer_s / depth[src],
                        **{key: grid[key][at[src][layer_s]][at[tgt][layer_t]] for key in keys},
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
        "metric": HEADLINE_METRIC,
        "value": headline,
        "ci": list(mean_ci(headline_items, n_resamples=n_bootstrap, level=ci_level, seed=seed)),
        "ci_level": ci_level,
        "n": int(test.size),
        "success": None,
        **criteria.held_out_record(
            True,
            f"the layer pair of every model pair is fixed by the configured relative depth "
            f"{layer_depth:g} and the ridge penalty is chosen by generalised cross-validation on "
            f"the {train.size} training items; the {test.size} held-out items choose nothing "
            "(the best-aligned layer pairs reported beside the headline are chosen on them and "
            "are descriptive)",
        ),
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
                "depth_aligned": [
                    list(p)
                    for p in depth_aligned_pairs(depth[src], depth[tgt], layers[src], layers[tgt])
                ],
                **{variant: grids[(src, tgt)][variant] for variant in VARIANTS},
            }
            for src, tgt in itertools.permutations(names, 2)
        ],
    }
    results["duration_s"] = round(time.perf_counter() - started, 3)
    return results, figure_data


# ---------------------------------------------------------------------------------------------
# summary


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def summary_markdown(results: Mapping[str, Any]) -> str:
    """A page for a person: the model-pair table at the configured depth and the best cells."""
    if results["value"] is None:
        return no_value_summary("Cross-model alignment, extended (2A)", results)
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
        f"(95% CI [{_fmt(results['ci'][0])}, {_fmt(results['ci'][1])}], n = {results['n']}). "
        "Descriptive: no success criterion. Held out: "
        f"{results['selection']}.",
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
