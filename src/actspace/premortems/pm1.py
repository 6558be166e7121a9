"""Pre-mortem 1: cross-model similarity, read from one activation store per model.

:func:`run_pm1` returns the pre-mortem's ``results.json`` dictionary (the top-level keys every
pre-mortem shares, then details); :func:`summary_markdown` renders it for a person. It reads only
the activation store interface (:class:`actspace.core.store.StoreLike`): ``store.layer(k,
pooling) -> [items, d]``, ``store.n_layers`` (blocks; layer 0 is the embeddings), ``store.meta``
and, where present, ``store.scores()`` for the item ids.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from actspace.core.resampling import mean_ci, permutation_p_value
from actspace.core.results import now
from actspace.core.store import StoreLike
from actspace.methods.ridge import ProjectionResult, projection_with_null, ridge_alphas
from actspace.methods.similarity import depth_to_layer, linear_cka_debiased
from actspace.premortems.common import (
    check_fraction,
    headline,
    item_ids,
    n_items,
    no_value_headline,
    subsample,
)
from actspace.premortems.report import fmt, fmt_ci, header, verdict_sentence

DESCRIPTION = (
    "mean over ordered model pairs of the mean over held-out items of the Pearson "
    "correlation, across standardised target dimensions, between ridge-mapped and "
    "actual activations; bootstrap CI over held-out items"
)


def _check_stores(stores: Mapping[str, StoreLike]) -> int:
    """The number of items of stores that must hold the same items (refused otherwise)."""
    sizes = {name: n_items(store) for name, store in stores.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"PM1 needs the same items in every store, got item counts {sizes}")
    ids = {name: item_ids(store) for name, store in stores.items()}
    known = [(name, v) for name, v in ids.items() if v is not None]
    for name, v in known[1:]:
        if v != known[0][1]:
            raise ValueError(f"stores {known[0][0]!r} and {name!r} hold different items")
    return next(iter(sizes.values()))


def _split(m: int, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Held-out and training positions among ``m`` items (at least 4 on each side)."""
    order = rng.permutation(m)
    n_test = min(max(4, int(round(test_fraction * m))), m - 4)
    return np.sort(order[:n_test]), np.sort(order[n_test:])


def _pair_record(
    src: str,
    tgt: str,
    layers: Mapping[str, int],
    proj: ProjectionResult,
    null_means: np.ndarray,
    cka: float,
    *,
    n_bootstrap: int,
    ci_level: float,
    seed: int,
) -> dict[str, Any]:
    """One ordered pair's line of ``pairs``."""
    return {
        "source": src,
        "target": tgt,
        "source_layer": layers[src],
        "target_layer": layers[tgt],
        "correlation": proj.mean,
        "ci": list(mean_ci(proj.per_item, n_resamples=n_bootstrap, level=ci_level, seed=seed)),
        "correlation_per_dimension": proj.per_dimension_mean,
        "ridge_alpha": proj.alpha,
        "cka_debiased": cka,
        "permutation_null": float(null_means.mean()),
        "permutation_null_sd": float(null_means.std(ddof=1)) if null_means.size > 1 else 0.0,
        "permutation_p_value": permutation_p_value(proj.mean, null_means),
    }


def run_pm1(
    stores: Mapping[str, StoreLike],
    *,
    layer_depth: float,
    pooling: str,
    n_samples: int | None,
    test_fraction: float,
    ridge_alpha: float | Sequence[float] | Literal["auto"],
    n_permutations: int,
    n_bootstrap: int,
    threshold: float,
    seed: int,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Correlation after a learned linear projection between every ordered pair of models.

    The keywords are the keys of ``premortems.pm1`` (and the study's seed). For each ordered pair
    (source, target) at the same relative depth, a ridge map is fitted on the training items and
    scored on the held-out items (per-item Pearson r across standardised target dimensions; see
    :mod:`actspace.methods.ridge`). The metric is the mean over ordered pairs of the mean
    over held-out items; its interval bootstraps the held-out items (each item's value is its
    mean over pairs, so pairs stay matched). Debiased linear CKA (all selected items) and a
    permutation null (training items shuffled) are reported beside it.
    """
    started, date = time.perf_counter(), now()
    names = list(stores)
    if len(names) < 2:
        reason = (
            "PM1 compares the activations of two or more models; this study has one "
            f"({', '.join(names)}), so cross-model similarity cannot be measured"
        )
        record = no_value_headline(
            "pm1",
            reason=reason,
            threshold=threshold,
            ci_level=ci_level,
            started=started,
            date=date,
            description=DESCRIPTION,
        )
        return {**record, "models": names, "pooling": pooling, "seed": seed}
    check_fraction("test_fraction", test_fraction)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be positive, got {n_permutations}")
    alpha = ridge_alphas(ridge_alpha)
    n = _check_stores(stores)

    rng = np.random.default_rng(seed)
    items = subsample(n, n_samples, rng)
    m = items.size
    if m < 8:
        raise ValueError(f"PM1 needs at least 8 items, got {m}")
    test, train = _split(m, test_fraction, rng)

    layers = {
        name: depth_to_layer(int(store.n_layers), layer_depth) for name, store in stores.items()
    }
    acts = {
        name: np.asarray(store.layer(layers[name], pooling), dtype=np.float64)[items]
        for name, store in stores.items()
    }
    cka = {
        (a, b): linear_cka_debiased(acts[a], acts[b]) for a, b in itertools.combinations(names, 2)
    }
    boot = {"n_bootstrap": n_bootstrap, "ci_level": ci_level, "seed": seed}
    pairs: list[dict[str, Any]] = []
    observed_items, null_items = [], []
    for index, (src, tgt) in enumerate(itertools.permutations(names, 2)):
        proj, null = projection_with_null(
            acts[src],
            acts[tgt],
            train,
            test,
            alpha=alpha,
            n_permutations=n_permutations,
            seed=seed + 1000 * (index + 1),
        )
        observed_items.append(proj.per_item)
        null_items.append(null.mean(axis=0))
        pair_cka = cka.get((src, tgt), cka.get((tgt, src)))
        pairs.append(_pair_record(src, tgt, layers, proj, null.mean(axis=1), pair_cka, **boot))

    per_item = np.mean(observed_items, axis=0)
    per_item_null = np.mean(null_items, axis=0)

    def ci(values: np.ndarray) -> tuple[float, float]:
        return mean_ci(values, n_resamples=n_bootstrap, level=ci_level, seed=seed)

    interval, null_ci, diff_ci = ci(per_item), ci(per_item_null), ci(per_item - per_item_null)
    return {
        **headline(
            "pm1",
            value=float(per_item.mean()),
            ci=interval,
            ci_level=ci_level,
            threshold=threshold,
            n=test.size,
            started=started,
            date=date,
            description=DESCRIPTION,
        ),
        "models": names,
        "layer_depth": float(layer_depth),
        "pooling": pooling,
        "layers": layers,
        "n_layers": {name: int(store.n_layers) for name, store in stores.items()},
        "n_items": int(m),
        "n_train": int(train.size),
        "n_test": int(test.size),
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "n_permutations": n_permutations,
        "correlation_per_dimension": float(
            np.mean([p["correlation_per_dimension"] for p in pairs])
        ),
        "cka_debiased": float(np.mean(list(cka.values()))),
        "cka_pairs": [{"models": [a, b], "cka_debiased": v} for (a, b), v in cka.items()],
        "permutation_null": {"value": float(per_item_null.mean()), "ci": list(null_ci)},
        "difference_from_null": {
            "value": float((per_item - per_item_null).mean()),
            "ci": list(diff_ci),
        },
        "pairs": pairs,
    }


def summary_markdown(results: Mapping[str, Any]) -> str:
    """The person-readable summary of a PM1 results dictionary."""
    lines = header(results)
    if results["value"] is None:
        return "\n".join([*lines, f"No value: {results['reason']}.", ""])
    lines += [
        f"Models: {', '.join(results['models'])}; relative depth {results['layer_depth']} "
        f"({', '.join(f'{k}: layer {v}' for k, v in results['layers'].items())}), "
        f"pooling `{results['pooling']}`; {results['n_train']} training and "
        f"{results['n_test']} held-out items.",
        "",
        "| source | target | r (per item) | 95% CI | r (per dim) | null r | p | CKA (debiased) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in results["pairs"]:
        lines.append(
            f"| {p['source']} (L{p['source_layer']}) | {p['target']} (L{p['target_layer']}) "
            f"| {fmt(p['correlation'])} | {fmt_ci(p['ci'])} "
            f"| {fmt(p['correlation_per_dimension'])} "
            f"| {fmt(p['permutation_null'])} | {fmt(p['permutation_p_value'])} "
            f"| {fmt(p['cka_debiased'])} |"
        )
    null = results["permutation_null"]
    diff = results["difference_from_null"]
    lines += [
        "",
        f"Permutation null (training items shuffled, {results['n_permutations']} permutations): "
        f"{fmt(null['value'])} {fmt_ci(null['ci'])}; observed minus null {fmt(diff['value'])} "
        f"{fmt_ci(diff['ci'])}. Mean debiased linear CKA: {fmt(results['cka_debiased'])}.",
        "",
        verdict_sentence(results)
        + (
            " A linear map carries held-out activations between the models, so cross-model "
            "transfer (branch 2A) has a basis."
            if results["verdict"] == "PASS"
            else " A linear map does not reliably carry held-out activations between the models "
            "at this depth."
        ),
    ]
    return "\n".join(lines) + "\n"
