"""Pre-mortem 2: error prediction, read from one activation store (one model on one task).

:func:`run_pm2` returns the pre-mortem's ``results.json`` dictionary (the top-level keys every
pre-mortem shares, then details); :func:`summary_markdown` renders it for a person. It reads only
the activation store interface (:class:`actspace.core.store.StoreLike`): ``store.layer(k,
pooling)``, ``store.n_layers``, ``store.correct()``, ``store.logliks()`` and ``store.meta``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from sklearn.model_selection import train_test_split

from actspace.core.resampling import bootstrap_ci, paired_difference_ci
from actspace.core.results import now
from actspace.core.splits import OneSidedAnswers, Split, correctness_split
from actspace.core.store import StoreLike
from actspace.methods.probes import (
    LinearProbe,
    accuracy,
    auroc,
    balanced_accuracy,
    confidence_baseline,
    majority_baseline,
)
from actspace.premortems.common import check_fraction, headline, no_value_headline
from actspace.premortems.report import fmt, fmt_ci, header, verdict_sentence

#: ``layer`` value that chooses the layer on a validation part of the training items.
AUTO = "auto"
DESCRIPTION = (
    "balanced accuracy on held-out items of a standardised L2 logistic-regression probe "
    "(C by inner stratified CV, balanced class weights) predicting answer correctness; "
    "bootstrap CI over held-out items"
)


def _check(layer: int | str, n_layers: int, test_fraction: float, val_fraction: float) -> None:
    check_fraction("test_fraction", test_fraction)
    check_fraction("val_fraction", val_fraction)
    if layer == AUTO and test_fraction + val_fraction >= 1:
        raise ValueError(
            f"test_fraction + val_fraction must be below 1, got {test_fraction} + {val_fraction}"
        )
    if layer != AUTO and not (isinstance(layer, int | np.integer) and 0 <= layer <= n_layers):
        raise ValueError(f"layer must be 0..{n_layers} (0 = embeddings) or {AUTO!r}, got {layer!r}")


def _validate_layers(
    features: Callable[[int], np.ndarray],
    data: Split,
    n_layers: int,
    val_size: float,
    new_probe: Callable[[], LinearProbe],
    seed: int,
) -> list[dict[str, Any]]:
    """Fit on part of the training items and score the rest (``val_size`` of them), per layer."""
    y = data.y
    fit, val = train_test_split(
        data.train, test_size=val_size, stratify=y[data.train], random_state=seed
    )
    rows = []
    for k in range(n_layers + 1):
        X = features(k)
        probe = new_probe().fit(X[fit], y[fit])
        rows.append(
            {
                "layer": k,
                "balanced_accuracy": float(balanced_accuracy(y[val], probe.predict(X[val]))),
                "auroc": float(auroc(y[val], probe.decision_function(X[val]))),
                "C": probe.C_,
            }
        )
    return rows


def _best_layer(validation: Sequence[Mapping[str, Any]]) -> int:
    """The best validation balanced accuracy; AUROC breaks ties, then the shallower layer."""
    best = max(
        validation,
        key=lambda row: (row["balanced_accuracy"], np.nan_to_num(row["auroc"]), -row["layer"]),
    )
    return int(best["layer"])


def _test_probe(
    probe: LinearProbe, X: np.ndarray, data: Split, boot: Mapping[str, Any]
) -> dict[str, Any]:
    """The probe on the held-out items: predictions, balanced accuracy and AUROC with intervals."""
    y_test = data.y[data.test]
    pred = probe.predict(X[data.test]).astype(bool)
    score = probe.decision_function(X[data.test])
    return {
        "pred": pred,
        "value": float(balanced_accuracy(y_test, pred)),
        "ci": bootstrap_ci(balanced_accuracy, y_test, pred, **boot),
        "accuracy": float(accuracy(y_test, pred)),
        "auroc": float(auroc(y_test, score)),
        "auroc_ci": list(bootstrap_ci(auroc, y_test, score, **boot)),
    }


def _confidence(
    store: StoreLike, data: Split, pred: np.ndarray, boot: Mapping[str, Any]
) -> dict[str, Any]:
    """The output-confidence baseline on the same split, and the probe's paired difference."""
    logliks = store.logliks()
    y_test = data.y[data.test]
    conf = confidence_baseline([logliks[i] for i in data.items], data.y, data.train, data.test)
    diff_ci = paired_difference_ci(
        balanced_accuracy, (y_test, pred), (y_test, conf["predictions"]), **boot
    )
    conf_ci = bootstrap_ci(balanced_accuracy, y_test, conf["predictions"], **boot)
    return {"baseline": conf, "ci": list(conf_ci), "difference_ci": list(diff_ci)}


def _details(
    data: Split, tested: Mapping[str, Any], confidence: Mapping[str, Any]
) -> dict[str, Any]:
    """What a PM2 record holds about the classes and the baselines."""
    y, y_test = data.y, data.y[data.test]
    n_correct = int(y.sum())
    conf = confidence["baseline"]
    return {
        "class_balance": {
            "n_correct": n_correct,
            "n_incorrect": int(y.size - n_correct),
            "share_correct": n_correct / y.size,
            "share_correct_train": float(y[data.train].mean()),
            "share_correct_test": float(y_test.mean()),
        },
        "baselines": {
            "majority": majority_baseline(y[data.train], y_test),
            "confidence": {
                "balanced_accuracy": conf["balanced_accuracy"],
                "ci": confidence["ci"],
                "accuracy": conf["accuracy"],
                "auroc": conf["auroc"],
                "threshold": conf["threshold"],
                "description": "maximum softmax probability over the choice log-likelihoods",
            },
        },
        "probe_minus_confidence": {
            "balanced_accuracy": tested["value"] - conf["balanced_accuracy"],
            "ci": confidence["difference_ci"],
        },
    }


def run_pm2(
    store: StoreLike,
    *,
    layer: int | Literal["auto"],
    pooling: str,
    n_samples: int | None,
    test_fraction: float,
    val_fraction: float,
    cv_folds: int,
    n_bootstrap: int,
    threshold: float,
    seed: int,
    Cs: int | Sequence[float] = 10,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Held-out balanced accuracy of a linear probe predicting whether the model was right.

    The keywords are the keys of ``premortems.pm2`` (and the study's seed); ``Cs`` is the grid of
    the probe's inner cross-validation. Items are split (stratified by correctness, seeded) into
    train and test; with ``layer="auto"`` a validation part of the training items
    (``val_fraction`` of all items) picks the layer with the best validation balanced accuracy
    (AUROC breaks ties, then the shallower layer), and the probe is refitted on all training
    items at that layer. The test items are used once, for the reported numbers. Baselines: the
    training-majority class and the output confidence (maximum choice probability, thresholded
    on the training items).
    """
    started, date = time.perf_counter(), now()
    n_layers = int(store.n_layers)
    _check(layer, n_layers, test_fraction, val_fraction)
    try:
        data = correctness_split(
            store.correct(), n_samples=n_samples, test_fraction=test_fraction, seed=seed
        )
    except OneSidedAnswers as error:
        return _no_value(store, f"PM2 {error}", pooling, threshold, ci_level, seed, started, date)
    boot = {"n_resamples": n_bootstrap, "level": ci_level, "seed": seed}

    def features(k: int) -> np.ndarray:
        return np.asarray(store.layer(k, pooling), dtype=np.float64)[data.items]

    def new_probe() -> LinearProbe:
        return LinearProbe(Cs=Cs, cv=cv_folds, random_state=seed)

    validation: list[dict[str, Any]] = []
    if layer == AUTO:
        val_size = val_fraction / (1.0 - test_fraction)
        validation = _validate_layers(features, data, n_layers, val_size, new_probe, seed)
        chosen, selection = _best_layer(validation), "validation"
    else:
        chosen, selection = int(layer), "configured"

    X = features(chosen)
    probe = new_probe().fit(X[data.train], data.y[data.train])
    tested = _test_probe(probe, X, data, boot)
    confidence = _confidence(store, data, tested["pred"], boot)
    meta = getattr(store, "meta", {}) or {}
    return {
        **headline(
            "pm2",
            value=tested["value"],
            ci=tested["ci"],
            ci_level=ci_level,
            threshold=threshold,
            n=data.test.size,
            started=started,
            date=date,
            description=DESCRIPTION,
        ),
        "model": meta.get("model"),
        "task": meta.get("task"),
        "pooling": pooling,
        "layer": chosen,
        "layer_selection": selection,
        "n_layers": n_layers,
        "validation": validation,
        "n_items": int(data.y.size),
        "n_train": int(data.train.size),
        "n_test": int(data.test.size),
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "cv_folds": cv_folds,
        "probe_C": probe.C_,
        "accuracy": tested["accuracy"],
        "auroc": tested["auroc"],
        "auroc_ci": tested["auroc_ci"],
        **_details(data, tested, confidence),
    }


def _no_value(
    store: StoreLike,
    reason: str,
    pooling: str,
    threshold: float,
    ci_level: float,
    seed: int,
    started: float,
    date: str,
) -> dict[str, Any]:
    """PM2's record when the probe cannot be fitted (too few right or wrong answers)."""
    meta = getattr(store, "meta", {}) or {}
    record = no_value_headline(
        "pm2",
        reason=reason,
        threshold=threshold,
        ci_level=ci_level,
        started=started,
        date=date,
        description=DESCRIPTION,
    )
    return {
        **record,
        "model": meta.get("model"),
        "task": meta.get("task"),
        "pooling": pooling,
        "seed": seed,
    }


def summary_markdown(results: Mapping[str, Any]) -> str:
    """The person-readable summary of a PM2 results dictionary."""
    lines = header(results)
    if results["value"] is None:
        return "\n".join([*lines, f"No value: {results['reason']}.", ""])
    balance = results["class_balance"]
    base = results["baselines"]
    diff = results["probe_minus_confidence"]
    lines += [
        f"Model `{results['model']}`, task `{results['task']}`; layer {results['layer']} of "
        f"0..{results['n_layers']} ({results['layer_selection']}), pooling `{results['pooling']}`; "
        f"{results['n_train']} training and {results['n_test']} held-out items; "
        f"{balance['n_correct']} correct, {balance['n_incorrect']} incorrect "
        f"({fmt(100 * balance['share_correct'], 1)}% correct).",
        "",
        "| predictor | balanced accuracy | accuracy | AUROC |",
        "| --- | --- | --- | --- |",
        f"| linear probe | {fmt(results['value'])} {fmt_ci(results['ci'])} | "
        f"{fmt(results['accuracy'])} | {fmt(results['auroc'])} {fmt_ci(results['auroc_ci'])} |",
        f"| output confidence | {fmt(base['confidence']['balanced_accuracy'])} "
        f"{fmt_ci(base['confidence']['ci'])} | {fmt(base['confidence']['accuracy'])} | "
        f"{fmt(base['confidence']['auroc'])} |",
        f"| majority class | {fmt(base['majority']['balanced_accuracy'])} | "
        f"{fmt(base['majority']['accuracy'])} | 0.500 |",
        "",
        f"Probe minus confidence baseline (balanced accuracy): {fmt(diff['balanced_accuracy'])} "
        f"{fmt_ci(diff['ci'])}.",
    ]
    if results["validation"]:
        best = ", ".join(
            f"L{row['layer']}: {fmt(row['balanced_accuracy'])}" for row in results["validation"]
        )
        lines += ["", f"Validation balanced accuracy by layer: {best}."]
    lines += [
        "",
        verdict_sentence(results)
        + (
            " The activations carry a linearly readable signal of the model's own errors, so "
            "the error-prediction branch (2B) has a basis."
            if results["verdict"] == "PASS"
            else " The probe does not reliably predict the model's errors from this layer."
        ),
    ]
    return "\n".join(lines) + "\n"
