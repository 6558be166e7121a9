"""Pre-mortem 1: cross-model similarity, read from one activation store per model, decided
against a surface-feature control.

:func:`run_pm1` returns the pre-mortem's ``results.json`` dictionary (the top-level keys every
pre-mortem shares, then details); :func:`summary_markdown` renders it for a person. It reads only
the activation store interface (:class:`actspace.core.store.StoreLike`): ``store.layer(k,
pooling) -> [items, d]``, ``store.n_layers`` (blocks; layer 0 is the embeddings), ``store.meta``
and, where present, ``store.scores()`` for the item ids and their groups.

Why a control: a ridge map between two unrelated representations that share one per-item scalar
(the last token's identity, the position, the length) already reaches the plan's threshold. The
same map from the *source model's token embeddings* (layer 0, which carries only what the input's
tokens are) to the target's chosen layer measures how much of the metric the input's surface
already explains; the controlled verdict asks that the model's processing add to it.

Why cross-fitting: an interval over the held-out items of one fit leaves out the variability of
the fit. Every number here is the mean of K x R grouped folds (every item held out once per
repeat, items of one group in one fold), with the Nadeau and Bengio (2003) corrected resampled t
interval over the folds (:func:`actspace.core.resampling.corrected_t_ci`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from actspace.core.groups import n_groups, store_groups
from actspace.core.resampling import cluster_bootstrap_ci, corrected_t_ci, permutation_p_value
from actspace.core.results import now
from actspace.core.splits import Fold, grouped_folds
from actspace.core.store import StoreLike, nearest_stored_layer
from actspace.methods.ridge import HeldOutMap, ridge_alphas
from actspace.methods.similarity import depth_to_layer, linear_cka_debiased
from actspace.premortems.common import (
    control_record,
    controlled_test,
    headline,
    item_ids,
    n_items,
    no_value_headline,
    subsample,
)
from actspace.premortems.report import fmt, fmt_ci, header

DESCRIPTION = (
    "mean over ordered model pairs of the mean over held-out items of the Pearson "
    "correlation, across standardised target dimensions, between ridge-mapped and "
    "actual activations; mean of K x R grouped cross-fitting folds, Nadeau-Bengio corrected "
    "resampled t interval"
)

#: Fewest permutations for which the shuffled-items null's p-value is reported: with fewer,
#: the smallest attainable p-value, 1 / (1 + n), is 0.01 or more and says little.
MIN_PERMUTATIONS_FOR_P = 99

#: The control's candidates: the source model's layer 0 (token embeddings), in two poolings.
CONTROLS = {
    "embeddings_pooled": "the source model's token embeddings (layer 0) pooled as the metric "
    "pools (for `last`: the last token's embedding)",
    "embeddings_mean": "the source model's token embeddings (layer 0) mean-pooled over the "
    "context (a bag of tokens)",
}
CONTROL_NAME = "surface-feature control (source token embeddings -> target layer)"
STATISTIC = "PM1 minus surface-feature control"


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


def _groups(stores: Mapping[str, StoreLike], items: np.ndarray) -> np.ndarray:
    """The selected items' groups, from the first store; every store must group them alike."""
    names = list(stores)
    labels = store_groups(stores[names[0]])
    for name in names[1:]:
        if not np.array_equal(store_groups(stores[name]), labels):
            raise ValueError(
                f"store {name!r} groups its items differently from store {names[0]!r}; PM1 "
                "needs one grouping of the shared items"
            )
    return labels[items]


def _control_inputs(
    stores: Mapping[str, StoreLike], items: np.ndarray, pooling: str
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Each control candidate's representation of every model, and why any is missing."""
    pooled = {
        name: np.asarray(store.layer(0, pooling), dtype=np.float64)[items]
        for name, store in stores.items()
    }
    candidates = {"embeddings_pooled": pooled}
    if pooling == "mean":
        return candidates, {"embeddings_mean": "the metric pools by mean: the same as (i)"}
    mean: dict[str, np.ndarray] = {}
    for name, store in stores.items():
        try:
            mean[name] = np.asarray(store.layer(0, "mean"), dtype=np.float64)[items]
        except ValueError as error:  # the store was extracted without mean pooling
            return candidates, {"embeddings_mean": f"not available in store {name!r}: {error}"}
    candidates["embeddings_mean"] = mean
    return candidates, {}


def _cross_fit(
    acts: Mapping[str, np.ndarray],
    controls: Mapping[str, Mapping[str, np.ndarray]],
    folds: Sequence[Fold],
    *,
    alpha: float | tuple[float, ...],
    n_permutations: int,
    seed: int,
) -> dict[str, Any]:
    """Every fold's held-out correlations of the metric and of each control candidate.

    Per fold and ordered pair (source, target): the ridge map from the source's chosen layer
    (metric) or from a control candidate (source layer 0) to the target's chosen layer, fitted on
    the fold's training items and scored on its held-out items. On the first fold the metric's
    map also gets its shuffled-items null (penalty fixed at the one chosen on the real targets).
    """
    pairs = list(itertools.permutations(acts, 2))
    n_folds, m = len(folds), next(iter(acts.values())).shape[0]
    metric = np.empty((len(pairs), n_folds))
    per_dim = np.empty((len(pairs), n_folds))
    alphas = np.empty((len(pairs), n_folds))
    control = {c: np.empty((len(pairs), n_folds)) for c in controls}
    item_sum, item_count = np.zeros(m), np.zeros(m)
    nulls: list[np.ndarray] = []
    for f, fold in enumerate(folds):
        # each source representation is standardised and decomposed once per fold
        maps = {src: HeldOutMap(x, fold.train, fold.test) for src, x in acts.items()}
        control_maps = {
            (c, src): HeldOutMap(x, fold.train, fold.test)
            for c, inputs in controls.items()
            for src, x in inputs.items()
        }
        fold_items = np.zeros(fold.test.size)
        for p, (src, tgt) in enumerate(pairs):
            proj, null = maps[src].score(
                acts[tgt],
                alpha=alpha,
                n_permutations=n_permutations if f == 0 else 0,
                seed=seed + 1000 * (p + 1),
                null_alpha="observed",
            )
            if f == 0:
                nulls.append(null.mean(axis=1))
            metric[p, f], per_dim[p, f], alphas[p, f] = (
                proj.mean,
                proj.per_dimension_mean,
                proj.alpha,
            )
            fold_items += proj.per_item / len(pairs)
            for c in controls:
                result, _ = control_maps[c, src].score(acts[tgt], alpha=alpha)
                control[c][p, f] = result.mean
        item_sum[fold.test] += fold_items
        item_count[fold.test] += 1
    return {
        "pairs": pairs,
        "metric": metric,
        "per_dimension": per_dim,
        "alphas": alphas,
        "control": control,
        "item_values": item_sum / np.maximum(item_count, 1),
        "null": np.asarray(nulls),  # [pairs, n_permutations]
    }


def _null_summary(observed: float, draws: np.ndarray, n_permutations: int) -> dict[str, Any]:
    """Mean, sd and Monte Carlo p-value (None below MIN_PERMUTATIONS_FOR_P) of null draws."""
    enough = n_permutations >= MIN_PERMUTATIONS_FOR_P
    return {
        "observed": float(observed),
        "mean": float(draws.mean()),
        "sd": float(draws.std(ddof=1)) if draws.size > 1 else 0.0,
        "p_value": permutation_p_value(observed, draws) if enough else None,
    }


def _pair_records(
    fits: Mapping[str, Any],
    layers: Mapping[str, int],
    cka: Mapping[tuple[str, str], float],
    chosen: str,
    interval: Callable[[np.ndarray], tuple[float, float]],
    n_permutations: int,
) -> list[dict[str, Any]]:
    """One record per ordered pair: its cross-fitted correlation, control and null."""
    pairs = []
    for p, (src, tgt) in enumerate(fits["pairs"]):
        metric, control = fits["metric"][p], fits["control"][chosen][p]
        pairs.append(
            {
                "source": src,
                "target": tgt,
                "source_layer": layers[src],
                "target_layer": layers[tgt],
                "correlation": float(metric.mean()),
                "ci": list(interval(metric)),
                "correlation_per_dimension": float(np.nanmean(fits["per_dimension"][p])),
                "ridge_alpha": float(fits["alphas"][p, 0]),
                "correlation_by_fold": [float(r) for r in metric],
                "ridge_alphas_by_fold": [float(a) for a in fits["alphas"][p]],
                "cka_debiased": cka.get((src, tgt), cka.get((tgt, src))),
                "control": {c: float(v[p].mean()) for c, v in fits["control"].items()},
                "difference_from_control": float((metric - control).mean()),
                "difference_ci": list(interval(metric - control)),
                "shuffled_null": _null_summary(metric[0], fits["null"][p], n_permutations),
            }
        )
    return pairs


def run_pm1(
    stores: Mapping[str, StoreLike],
    *,
    layer_depth: float,
    pooling: str,
    n_samples: int | None,
    folds: int,
    repeats: int,
    ridge_alpha: float | Sequence[float] | Literal["auto"],
    n_permutations: int,
    n_bootstrap: int,
    threshold: float,
    seed: int,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Correlation after a learned linear projection between every ordered pair of models,
    against the same map from the source's token embeddings.

    The keywords are the keys of ``premortems.pm1`` (and the study's seed). Items: a seeded
    subsample of ``n_samples``, split into ``folds`` grouped folds ``repeats`` times. For each
    fold and ordered pair (source, target) at the same relative depth, a ridge map is fitted on
    the training items and scored on the held-out items (per-item Pearson r across standardised
    target dimensions; see :mod:`actspace.methods.ridge`). A fold's estimate is the mean over its
    held-out items of the per-item mean over pairs; the value is the mean of the K x R fold
    estimates with the corrected resampled t interval (the plan verdict reads it). The control
    (the stronger of two layer-0 representations of the source, by its cross-fitted mean) is
    fitted and scored on the same folds; the controlled verdict needs the corrected-t interval of
    the per-fold differences metric - control above 0. Debiased linear CKA (all selected items),
    a shuffled-items null on the first fold, and the held-out items' cluster bootstrap interval
    without refitting (``n_bootstrap`` resamples of groups; for comparison) are reported beside.
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
    if folds < 2 or repeats < 1:
        raise ValueError(f"folds must be 2 or more and repeats 1 or more, got {folds}, {repeats}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be positive, got {n_permutations}")
    alpha = ridge_alphas(ridge_alpha)
    n = _check_stores(stores)

    rng = np.random.default_rng(seed)
    items = subsample(n, n_samples, rng)
    m = items.size
    if m < 8:
        raise ValueError(f"PM1 needs at least 8 items, got {m}")
    groups = _groups(stores, items)
    splits = grouped_folds(m, n_folds=folds, n_repeats=repeats, seed=seed, groups=groups)
    smallest = min(min(f.test.size, f.train.size) for f in splits)
    if smallest < 4:
        raise ValueError(
            f"folds: {folds} folds of {m} items in {n_groups(groups)} groups leave a fold with "
            f"{smallest} items on one side; PM1 needs at least 4 (fewer folds or more items)"
        )
    n_train = int(round(np.mean([f.train.size for f in splits])))
    n_test = int(round(np.mean([f.test.size for f in splits])))

    # the layer at the configured depth, or the stored layer nearest to it (extract.layers)
    layers = {
        name: nearest_stored_layer(store, depth_to_layer(int(store.n_layers), layer_depth))
        for name, store in stores.items()
    }
    acts = {
        name: np.asarray(store.layer(layers[name], pooling), dtype=np.float64)[items]
        for name, store in stores.items()
    }
    candidates, unavailable = _control_inputs(stores, items, pooling)
    fits = _cross_fit(
        acts, candidates, splits, alpha=alpha, n_permutations=n_permutations, seed=seed
    )

    def interval(estimates: np.ndarray) -> tuple[float, float]:
        return corrected_t_ci(estimates, n_train=n_train, n_test=n_test, level=ci_level)

    metric_folds = fits["metric"].mean(axis=0)
    control_folds = {c: v.mean(axis=0) for c, v in fits["control"].items()}
    chosen = max(control_folds, key=lambda c: float(control_folds[c].mean()))
    differences = metric_folds - control_folds[chosen]
    control_ci = interval(control_folds[chosen])
    cka = {
        (a, b): linear_cka_debiased(acts[a], acts[b]) for a, b in itertools.combinations(names, 2)
    }
    pairs = _pair_records(fits, layers, cka, chosen, interval, n_permutations)
    items_ci = cluster_bootstrap_ci(
        np.mean,
        fits["item_values"],
        groups=groups,
        n_resamples=n_bootstrap,
        level=ci_level,
        seed=seed,
    )
    return {
        **headline(
            "pm1",
            value=float(metric_folds.mean()),
            ci=interval(metric_folds),
            ci_level=ci_level,
            threshold=threshold,
            n=m,
            started=started,
            date=date,
            description=DESCRIPTION,
            control=control_record(
                CONTROL_NAME,
                f"the same ridge map and folds from {CONTROLS[chosen]} to the target's chosen "
                "layer: what the input's tokens alone carry across the models",
                float(control_folds[chosen].mean()),
                control_ci,
            ),
            controlled=controlled_test(
                STATISTIC, float(differences.mean()), interval(differences), 0.0
            ),
        ),
        "models": names,
        "layer_depth": float(layer_depth),
        "pooling": pooling,
        "layers": layers,
        "n_layers": {name: int(store.n_layers) for name, store in stores.items()},
        "n_items": int(m),
        "n_groups": n_groups(groups),
        "folds": folds,
        "repeats": repeats,
        "n_train": n_train,
        "n_test": n_test,
        "interval_method": (
            f"Nadeau and Bengio (2003) corrected resampled t over the {len(splits)} fold "
            f"estimates (variance x (1/{len(splits)} + {n_test}/{n_train}), t with "
            f"{len(splits) - 1} df)"
        ),
        "seed": seed,
        "correlation_per_dimension": float(
            np.mean([p["correlation_per_dimension"] for p in pairs])
        ),
        "cka_debiased": float(np.mean(list(cka.values()))),
        "cka_pairs": [{"models": [a, b], "cka_debiased": v} for (a, b), v in cka.items()],
        "control_candidates": _candidates(control_folds, candidates, chosen, interval),
        "control_unavailable": unavailable,
        "control_used": chosen,
        "items_only_ci": {
            "ci": list(items_ci),
            "n_bootstrap": n_bootstrap,
            "note": "cluster bootstrap of the held-out items' values (groups resampled) around "
            "the fitted maps, without refitting: narrower, for comparison; not the verdict's",
        },
        "shuffled_null": {
            **_null_summary(metric_folds[0], fits["null"].mean(axis=0), n_permutations),
            "n_permutations": n_permutations,
            "fold": {"repeat": splits[0].repeat, "fold": splits[0].fold},
            "note": "target's training rows shuffled against the source on the first fold, "
            "penalty fixed at the one chosen on the real targets; the p-value is reported only "
            f"with {MIN_PERMUTATIONS_FOR_P} or more permutations (None otherwise)",
        },
        "fold_estimates": _fold_estimates(splits, metric_folds, control_folds, differences),
        "pairs": pairs,
    }


def _fold_estimates(
    splits: Sequence[Fold],
    metric: np.ndarray,
    control: Mapping[str, np.ndarray],
    differences: np.ndarray,
) -> list[dict[str, Any]]:
    """Every fit's estimates: the metric, each control candidate and the difference."""
    return [
        {
            "repeat": fold.repeat,
            "fold": fold.fold,
            "n_train": int(fold.train.size),
            "n_test": int(fold.test.size),
            "metric": float(metric[f]),
            "control": {c: float(v[f]) for c, v in control.items()},
            "difference": float(differences[f]),
        }
        for f, fold in enumerate(splits)
    ]


def _candidates(
    control_folds: Mapping[str, np.ndarray],
    inputs: Mapping[str, Mapping[str, np.ndarray]],
    chosen: str,
    interval: Callable[[np.ndarray], tuple[float, float]],
) -> dict[str, Any]:
    """Each control candidate's cross-fitted value, whether it is the one used, and the models
    where it is the same vector for every item (one last token for all: it carries nothing)."""
    return {
        c: {
            "description": CONTROLS[c],
            "value": float(v.mean()),
            "ci": list(interval(v)),
            "used": c == chosen,
            "constant_in": [name for name, x in inputs[c].items() if not np.ptp(x, axis=0).any()],
        }
        for c, v in control_folds.items()
    }


def _verdict_lines(results: Mapping[str, Any]) -> list[str]:
    """Both verdicts, and what each reads, in words."""
    plan, controlled = results["plan_verdict"], results["controlled_verdict"]
    test = results["controlled"]
    words = {
        "PASS": "lies entirely above",
        "FAIL": "lies entirely below",
        "INCONCLUSIVE": "straddles",
    }
    lines = [
        f"Plan verdict: **{plan}**: the {int(round(100 * results['ci_level']))}% interval "
        f"{words[plan]} the threshold {fmt(results['threshold'], 2)}"
        + (" (INCONCLUSIVE counts as FAIL at the gate)." if plan == "INCONCLUSIVE" else "."),
        f"Controlled verdict: **{controlled}**: metric minus control "
        f"{fmt(test['value'])} {fmt_ci(test['ci'])}, "
        + ("above 0." if test["passed"] else "not above 0."),
    ]
    if controlled == "PASS":
        lines.append(
            "A linear map carries held-out activations between the models beyond what their "
            "input's tokens carry, so cross-model transfer (branch 2A) has a basis."
        )
    elif plan == "PASS":
        lines.append(
            "The map reaches the plan's threshold, but not shown to carry more than the "
            "source's token embeddings alone carry to the target: the agreement is not shown "
            "to come from the models' processing."
        )
    else:
        lines.append(
            "A linear map does not reliably carry held-out activations between the models at "
            "this depth."
        )
    return lines


def summary_markdown(results: Mapping[str, Any]) -> str:
    """The person-readable summary of a PM1 results dictionary: the plan metric, the control
    (both candidates), their difference, both verdicts and the shuffled-items null."""
    lines = header(results)
    if results["value"] is None:
        return "\n".join([*lines, f"No value: {results['reason']}.", ""])
    lines += [
        f"Models: {', '.join(results['models'])}; relative depth {results['layer_depth']} "
        f"({', '.join(f'{k}: layer {v}' for k, v in results['layers'].items())}), "
        f"pooling `{results['pooling']}`; {results['n_items']} items in {results['n_groups']} "
        f"groups, {results['folds']} grouped folds x {results['repeats']} repeats (about "
        f"{results['n_train']} training and {results['n_test']} held-out items per fit). "
        f"Interval: {results['interval_method']}.",
        "",
        "| source | target | r (per item) | 95% CI | control r | difference | 95% CI "
        "| null r (first fold) | p | CKA (debiased) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    used = results["control_used"]
    for p in results["pairs"]:
        null = p["shuffled_null"]
        lines.append(
            f"| {p['source']} (L{p['source_layer']}) | {p['target']} (L{p['target_layer']}) "
            f"| {fmt(p['correlation'])} | {fmt_ci(p['ci'])} | {fmt(p['control'][used])} "
            f"| {fmt(p['difference_from_control'])} | {fmt_ci(p['difference_ci'])} "
            f"| {fmt(null['mean'])} | {fmt(null['p_value'])} | {fmt(p['cka_debiased'])} |"
        )
    lines += ["", "Control candidates (the stronger one is the control):", ""]
    for c in results["control_candidates"].values():
        mark = " **(used)**" if c["used"] else ""
        same = (
            f" (the same vector for every item in {', '.join(c['constant_in'])}: it carries "
            "nothing)"
            if c["constant_in"]
            else ""
        )
        lines.append(f"- {c['description']}: {fmt(c['value'])} {fmt_ci(c['ci'])}{mark}{same}")
    for name, why in results["control_unavailable"].items():
        lines.append(f"- {CONTROLS[name]}: not computed ({why})")
    null = results["shuffled_null"]
    p_text = fmt(null["p_value"]) if null["p_value"] is not None else "not reported"
    lines += [
        "",
        f"Metric {fmt(results['value'])} {fmt_ci(results['ci'])}; control "
        f"{fmt(results['control']['value'])} {fmt_ci(results['control']['ci'])}; difference "
        f"{fmt(results['controlled']['value'])} {fmt_ci(results['controlled']['ci'])}. Without "
        f"refitting, the held-out items alone give {fmt_ci(results['items_only_ci']['ci'])}.",
        "",
        f"Shuffled-items null ({null['n_permutations']} permutations, first fold): mean "
        f"{fmt(null['mean'])} (sd {fmt(null['sd'])}) against {fmt(null['observed'])} observed; "
        f"p = {p_text}. Mean debiased linear CKA: {fmt(results['cka_debiased'])}.",
        "",
        *_verdict_lines(results),
    ]
    return "\n".join(lines) + "\n"
