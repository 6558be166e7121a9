"""Pre-mortems 1 and 2: cross-model similarity and error prediction, read from activation stores.

Each ``run_pm*`` function returns the pre-mortem ``results.json`` dictionary (the top-level keys
of the shared schema followed by details); ``summary_markdown`` renders it for a person. Both
read only the activation store interface: ``store.layer(k, pooling) -> [items, d]``,
``store.n_layers`` (blocks; layer 0 is the embeddings), ``store.correct()``, ``store.logliks()``,
``store.meta`` and, where present, ``store.scores()`` for the item ids.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from sklearn.model_selection import train_test_split

from actspace.core.resampling import (
    bootstrap_ci,
    mean_ci,
    paired_difference_ci,
    permutation_p_value,
    verdict,
)
from actspace.methods.probes import (
    LinearProbe,
    accuracy,
    auroc,
    balanced_accuracy,
    confidence_baseline,
    majority_baseline,
)
from actspace.methods.similarity import (
    DEFAULT_ALPHAS,
    depth_to_layer,
    linear_cka_debiased,
    projection_with_null,
)

PM1_NAME = "cross_model"
PM2_NAME = "error_prediction"
PM1_METRIC = "heldout_projection_correlation"
PM2_METRIC = "heldout_balanced_accuracy"


class StoreLike(Protocol):
    """The part of :class:`actspace.core.store.ActivationStore` the pre-mortems read."""

    meta: dict
    n_layers: int

    def layer(self, k: int, pooling: str = "last") -> np.ndarray: ...

    def correct(self) -> np.ndarray: ...

    def logliks(self) -> list[np.ndarray]: ...


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _n_items(store: StoreLike) -> int:
    n = getattr(store, "n_items", None)
    return int(n) if n is not None else int(store.layer(0).shape[0])


def _item_ids(store: StoreLike) -> list[str] | None:
    scores = getattr(store, "scores", None)
    if scores is None:
        return None
    rows = scores()
    ids = [row.get("id") for row in rows]
    return None if any(i is None for i in ids) else [str(i) for i in ids]


def _subsample(n: int, n_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted item indices: all items, or a seeded random subset of ``n_samples``."""
    if n_samples is None or n_samples >= n:
        return np.arange(n)
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    return np.sort(rng.choice(n, size=n_samples, replace=False))


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value}")


# --------------------------------------------------------------------------------------------
# PM1: cross-model similarity
# --------------------------------------------------------------------------------------------


def run_pm1(
    stores: Mapping[str, StoreLike],
    *,
    layer_depth: float = 0.5,
    pooling: str = "last",
    test_fraction: float = 0.3,
    ridge_alpha: float | Sequence[float] = DEFAULT_ALPHAS,
    n_permutations: int = 5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    threshold: float = 0.3,
    n_samples: int | None = None,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Correlation after a learned linear projection between every ordered pair of models.

    For each ordered pair (source, target) at the same relative depth, a ridge map is fitted on
    the training items and scored on the held-out items (per-item Pearson r across standardised
    target dimensions; see :mod:`actspace.methods.similarity`). The metric is the mean over ordered pairs
    of the mean over held-out items; its interval bootstraps the held-out items (each item's
    value is its mean over pairs, so pairs stay matched). Debiased linear CKA (all selected
    items) and a permutation null (training items shuffled) are reported beside it.
    """
    started, date = time.perf_counter(), _now()
    names = list(stores)
    if len(names) < 2:
        raise ValueError(f"PM1 needs at least two models, got {len(names)}")
    _check_fraction("test_fraction", test_fraction)
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be positive, got {n_permutations}")
    sizes = {name: _n_items(store) for name, store in stores.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"PM1 needs the same items in every store, got item counts {sizes}")
    ids = {name: _item_ids(store) for name, store in stores.items()}
    known = [(name, v) for name, v in ids.items() if v is not None]
    for name, v in known[1:]:
        if v != known[0][1]:
            raise ValueError(f"stores {known[0][0]!r} and {name!r} hold different items")

    rng = np.random.default_rng(seed)
    items = _subsample(next(iter(sizes.values())), n_samples, rng)
    m = items.size
    if m < 8:
        raise ValueError(f"PM1 needs at least 8 items, got {m}")
    order = rng.permutation(m)
    n_test = min(max(4, int(round(test_fraction * m))), m - 4)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])

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
    pairs: list[dict[str, Any]] = []
    observed_items, null_items = [], []
    for index, (src, tgt) in enumerate(itertools.permutations(names, 2)):
        proj, null = projection_with_null(
            acts[src],
            acts[tgt],
            train,
            test,
            alpha=ridge_alpha,
            n_permutations=n_permutations,
            seed=seed + 1000 * (index + 1),
        )
        null_means = null.mean(axis=1)
        observed_items.append(proj.per_item)
        null_items.append(null.mean(axis=0))
        pairs.append(
            {
                "source": src,
                "target": tgt,
                "source_layer": layers[src],
                "target_layer": layers[tgt],
                "correlation": proj.mean,
                "ci": list(
                    mean_ci(proj.per_item, n_resamples=n_bootstrap, level=ci_level, seed=seed)
                ),
                "correlation_per_dimension": proj.per_dimension_mean,
                "ridge_alpha": proj.alpha,
                "cka_debiased": cka.get((src, tgt), cka.get((tgt, src))),
                "permutation_null": float(null_means.mean()),
                "permutation_null_sd": float(null_means.std(ddof=1))
                if null_means.size > 1
                else 0.0,
                "permutation_p_value": permutation_p_value(proj.mean, null_means),
            }
        )

    per_item = np.mean(observed_items, axis=0)
    per_item_null = np.mean(null_items, axis=0)
    value = float(per_item.mean())
    low, high = mean_ci(per_item, n_resamples=n_bootstrap, level=ci_level, seed=seed)
    null_low, null_high = mean_ci(per_item_null, n_resamples=n_bootstrap, level=ci_level, seed=seed)
    diff_low, diff_high = mean_ci(
        per_item - per_item_null, n_resamples=n_bootstrap, level=ci_level, seed=seed
    )
    return {
        "premortem": "pm1",
        "name": PM1_NAME,
        "metric": PM1_METRIC,
        "value": value,
        "ci": [low, high],
        "ci_level": ci_level,
        "threshold": float(threshold),
        "verdict": verdict(low, high, threshold),
        "n": int(n_test),
        "duration_s": round(time.perf_counter() - started, 3),
        "date": date,
        "metric_description": (
            "mean over ordered model pairs of the mean over held-out items of the Pearson "
            "correlation, across standardised target dimensions, between ridge-mapped and "
            "actual activations; bootstrap CI over held-out items"
        ),
        "models": names,
        "layer_depth": float(layer_depth),
        "pooling": pooling,
        "layers": layers,
        "n_layers": {name: int(store.n_layers) for name, store in stores.items()},
        "n_items": int(m),
        "n_train": int(train.size),
        "n_test": int(n_test),
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "n_permutations": n_permutations,
        "correlation_per_dimension": float(
            np.mean([p["correlation_per_dimension"] for p in pairs])
        ),
        "cka_debiased": float(np.mean(list(cka.values()))),
        "cka_pairs": [{"models": [a, b], "cka_debiased": v} for (a, b), v in cka.items()],
        "permutation_null": {"value": float(per_item_null.mean()), "ci": [null_low, null_high]},
        "difference_from_null": {
            "value": float((per_item - per_item_null).mean()),
            "ci": [diff_low, diff_high],
        },
        "pairs": pairs,
    }


# --------------------------------------------------------------------------------------------
# PM2: error prediction
# --------------------------------------------------------------------------------------------


def _probe(cv_folds: int, Cs: int | Sequence[float], seed: int) -> LinearProbe:
    return LinearProbe(Cs=Cs, cv=cv_folds, random_state=seed)


def run_pm2(
    store: StoreLike,
    *,
    layer: int | None = None,
    pooling: str = "last",
    test_fraction: float = 0.3,
    val_fraction: float = 0.2,
    cv_folds: int = 5,
    Cs: int | Sequence[float] = 10,
    n_bootstrap: int = 1000,
    seed: int = 0,
    threshold: float = 0.55,
    n_samples: int | None = None,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Held-out balanced accuracy of a linear probe predicting whether the model was right.

    Items are split (stratified by correctness, seeded) into train and test; with
    ``layer=None`` a validation part of the training items (``val_fraction`` of all items) picks
    the layer with the best validation balanced accuracy (AUROC breaks ties, then the shallower
    layer), and the probe is refitted on all training items at that layer. The test items are
    used once, for the reported numbers. Baselines: the training-majority class and the output
    confidence (maximum choice probability, thresholded on the training items).
    """
    started, date = time.perf_counter(), _now()
    _check_fraction("test_fraction", test_fraction)
    _check_fraction("val_fraction", val_fraction)
    if layer is None and test_fraction + val_fraction >= 1:
        raise ValueError(
            f"test_fraction + val_fraction must be below 1, got {test_fraction} + {val_fraction}"
        )
    n_layers = int(store.n_layers)
    if layer is not None and not 0 <= int(layer) <= n_layers:
        raise ValueError(f"layer must be 0..{n_layers} (0 = embeddings), got {layer}")

    rng = np.random.default_rng(seed)
    correct_all = np.asarray(store.correct()).astype(bool)
    items = _subsample(correct_all.size, n_samples, rng)
    y = correct_all[items]
    n_correct = int(y.sum())
    n_wrong = int(y.size - n_correct)
    if min(n_correct, n_wrong) < 6:
        raise ValueError(
            f"PM2 needs at least 6 correct and 6 incorrect answers, got {n_correct} correct and "
            f"{n_wrong} incorrect of {y.size}"
        )
    positions = np.arange(y.size)
    train, test = train_test_split(
        positions, test_size=test_fraction, stratify=y, random_state=seed
    )
    train, test = np.sort(train), np.sort(test)

    def features(k: int) -> np.ndarray:
        return np.asarray(store.layer(k, pooling), dtype=np.float64)[items]

    validation: list[dict[str, Any]] = []
    if layer is None:
        fit, val = train_test_split(
            train,
            test_size=val_fraction / (1.0 - test_fraction),
            stratify=y[train],
            random_state=seed,
        )
        for k in range(n_layers + 1):
            X = features(k)
            probe = _probe(cv_folds, Cs, seed).fit(X[fit], y[fit])
            validation.append(
                {
                    "layer": k,
                    "balanced_accuracy": float(balanced_accuracy(y[val], probe.predict(X[val]))),
                    "auroc": float(auroc(y[val], probe.decision_function(X[val]))),
                    "C": probe.C_,
                }
            )
        best = max(
            validation,
            key=lambda row: (row["balanced_accuracy"], np.nan_to_num(row["auroc"]), -row["layer"]),
        )
        chosen, selection = int(best["layer"]), "validation"
    else:
        chosen, selection = int(layer), "configured"

    X = features(chosen)
    probe = _probe(cv_folds, Cs, seed).fit(X[train], y[train])
    pred = probe.predict(X[test]).astype(bool)
    score = probe.decision_function(X[test])
    y_test = y[test]

    value = float(balanced_accuracy(y_test, pred))
    low, high = bootstrap_ci(
        balanced_accuracy, y_test, pred, n_resamples=n_bootstrap, level=ci_level, seed=seed
    )
    auc = float(auroc(y_test, score))
    auc_ci = bootstrap_ci(auroc, y_test, score, n_resamples=n_bootstrap, level=ci_level, seed=seed)

    logliks = store.logliks()
    conf = confidence_baseline([logliks[i] for i in items], y, train, test)
    diff_ci = paired_difference_ci(
        balanced_accuracy,
        (y_test, pred),
        (y_test, conf["predictions"]),
        n_resamples=n_bootstrap,
        level=ci_level,
        seed=seed,
    )
    conf_ba_ci = bootstrap_ci(
        balanced_accuracy,
        y_test,
        conf["predictions"],
        n_resamples=n_bootstrap,
        level=ci_level,
        seed=seed,
    )
    meta = getattr(store, "meta", {}) or {}
    return {
        "premortem": "pm2",
        "name": PM2_NAME,
        "metric": PM2_METRIC,
        "value": value,
        "ci": [low, high],
        "ci_level": ci_level,
        "threshold": float(threshold),
        "verdict": verdict(low, high, threshold),
        "n": int(test.size),
        "duration_s": round(time.perf_counter() - started, 3),
        "date": date,
        "metric_description": (
            "balanced accuracy on held-out items of a standardised L2 logistic-regression probe "
            "(C by inner stratified CV, balanced class weights) predicting answer correctness; "
            "bootstrap CI over held-out items"
        ),
        "model": meta.get("model"),
        "task": meta.get("task"),
        "pooling": pooling,
        "layer": chosen,
        "layer_selection": selection,
        "n_layers": n_layers,
        "validation": validation,
        "n_items": int(y.size),
        "n_train": int(train.size),
        "n_test": int(test.size),
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "cv_folds": cv_folds,
        "probe_C": probe.C_,
        "accuracy": float(accuracy(y_test, pred)),
        "auroc": auc,
        "auroc_ci": list(auc_ci),
        "class_balance": {
            "n_correct": n_correct,
            "n_incorrect": n_wrong,
            "share_correct": n_correct / y.size,
            "share_correct_train": float(y[train].mean()),
            "share_correct_test": float(y_test.mean()),
        },
        "baselines": {
            "majority": majority_baseline(y[train], y_test),
            "confidence": {
                "balanced_accuracy": conf["balanced_accuracy"],
                "ci": list(conf_ba_ci),
                "accuracy": conf["accuracy"],
                "auroc": conf["auroc"],
                "threshold": conf["threshold"],
                "description": "maximum softmax probability over the choice log-likelihoods",
            },
        },
        "probe_minus_confidence": {
            "balanced_accuracy": value - conf["balanced_accuracy"],
            "ci": list(diff_ci),
        },
    }


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _ci(ci: Sequence[float | None]) -> str:
    return f"[{_f(ci[0])}, {_f(ci[1])}]"


def _header(results: Mapping[str, Any], title: str) -> list[str]:
    level = int(round(100 * float(results["ci_level"])))
    return [
        f"# Pre-mortem {results['premortem'][2:]}: {title}",
        "",
        f"- Date: {results['date']}",
        f"- Duration: {_f(results['duration_s'], 1)} s",
        f"- Metric: {results['metric']} ({results['metric_description']})",
        f"- Result: {_f(results['value'])}, {level}% CI {_ci(results['ci'])}, n = {results['n']}",
        f"- Threshold: {_f(results['threshold'], 2)}",
        f"- Verdict: **{results['verdict']}**",
        "",
    ]


def _verdict_sentence(results: Mapping[str, Any]) -> str:
    word = {
        "PASS": "lies entirely above",
        "FAIL": "lies entirely below",
        "INCONCLUSIVE": "straddles",
    }[results["verdict"]]
    note = (
        " (INCONCLUSIVE counts as FAIL at the gate)" if results["verdict"] == "INCONCLUSIVE" else ""
    )
    return f"The confidence interval {word} the threshold {_f(results['threshold'], 2)}{note}."


def pm1_summary_markdown(results: Mapping[str, Any]) -> str:
    """The person-readable summary of a PM1 results dictionary."""
    lines = _header(results, "cross-model similarity")
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
            f"| {_f(p['correlation'])} | {_ci(p['ci'])} | {_f(p['correlation_per_dimension'])} "
            f"| {_f(p['permutation_null'])} | {_f(p['permutation_p_value'])} "
            f"| {_f(p['cka_debiased'])} |"
        )
    null = results["permutation_null"]
    diff = results["difference_from_null"]
    lines += [
        "",
        f"Permutation null (training items shuffled, {results['n_permutations']} permutations): "
        f"{_f(null['value'])} {_ci(null['ci'])}; observed minus null {_f(diff['value'])} "
        f"{_ci(diff['ci'])}. Mean debiased linear CKA: {_f(results['cka_debiased'])}.",
        "",
        _verdict_sentence(results)
        + (
            " A linear map carries held-out activations between the models, so cross-model "
            "transfer (branch 2A) has a basis."
            if results["verdict"] == "PASS"
            else " A linear map does not reliably carry held-out activations between the models "
            "at this depth."
        ),
    ]
    return "\n".join(lines) + "\n"


def pm2_summary_markdown(results: Mapping[str, Any]) -> str:
    """The person-readable summary of a PM2 results dictionary."""
    lines = _header(results, "error prediction")
    balance = results["class_balance"]
    base = results["baselines"]
    diff = results["probe_minus_confidence"]
    lines += [
        f"Model `{results['model']}`, task `{results['task']}`; layer {results['layer']} of "
        f"0..{results['n_layers']} ({results['layer_selection']}), pooling `{results['pooling']}`; "
        f"{results['n_train']} training and {results['n_test']} held-out items; "
        f"{balance['n_correct']} correct, {balance['n_incorrect']} incorrect "
        f"({_f(100 * balance['share_correct'], 1)}% correct).",
        "",
        "| predictor | balanced accuracy | accuracy | AUROC |",
        "| --- | --- | --- | --- |",
        f"| linear probe | {_f(results['value'])} {_ci(results['ci'])} | "
        f"{_f(results['accuracy'])} | {_f(results['auroc'])} {_ci(results['auroc_ci'])} |",
        f"| output confidence | {_f(base['confidence']['balanced_accuracy'])} "
        f"{_ci(base['confidence']['ci'])} | {_f(base['confidence']['accuracy'])} | "
        f"{_f(base['confidence']['auroc'])} |",
        f"| majority class | {_f(base['majority']['balanced_accuracy'])} | "
        f"{_f(base['majority']['accuracy'])} | 0.500 |",
        "",
        f"Probe minus confidence baseline (balanced accuracy): {_f(diff['balanced_accuracy'])} "
        f"{_ci(diff['ci'])}.",
    ]
    if results["validation"]:
        best = ", ".join(
            f"L{row['layer']}: {_f(row['balanced_accuracy'])}" for row in results["validation"]
        )
        lines += ["", f"Validation balanced accuracy by layer: {best}."]
    lines += [
        "",
        _verdict_sentence(results)
        + (
            " The activations carry a linearly readable signal of the model's own errors, so "
            "the error-prediction branch (2B) has a basis."
            if results["verdict"] == "PASS"
            else " The probe does not reliably predict the model's errors from this layer."
        ),
    ]
    return "\n".join(lines) + "\n"


def summary_markdown(results: Mapping[str, Any]) -> str:
    """The summary of a PM1 or PM2 results dictionary."""
    kind = results.get("premortem")
    if kind == "pm1":
        return pm1_summary_markdown(results)
    if kind == "pm2":
        return pm2_summary_markdown(results)
    raise ValueError(f"no summary for premortem {kind!r} here (pm1 and pm2 only)")
