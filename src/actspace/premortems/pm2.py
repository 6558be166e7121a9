"""Pre-mortem 2: error prediction, read from one activation store (one model on one task), decided
against a confidence-only control.

:func:`run_pm2` returns the pre-mortem's ``results.json`` dictionary (the top-level keys every
pre-mortem shares, then details); :func:`summary_markdown` renders it for a person. It reads only
the activation store interface (:class:`actspace.core.store.StoreLike`): ``store.layer(k,
pooling)``, ``store.n_layers``, ``store.correct()``, ``store.logliks()``, ``store.meta`` and,
where present, ``store.scores()`` for the items' groups and subjects.

Why a control: at the last context token the model's own output distribution is a linear read-out
of the activations, and how sure the model is predicts whether it is right. A probe that beats
chance may only re-read that confidence (Kadavath et al. 2022; Orgad et al. 2024). The control is
the stronger of two predictors that read the output alone: the *confidence probe* (the same probe
on the top-1 probability and its log-odds, the log-likelihood margin, the entropy and the sorted
choice probabilities) and the old baseline, a cut on the top-1 probability (on small, skewed
stores a logistic regression on these features falls well short of that cut). The controlled
verdict asks that the activation probe beat the control, or that the activations add to the
confidence (the *incremental* probe on confidence features and activations), per fold, with the
interval above 0.

Why cross-fitting: an interval over the held-out items of one fit leaves out the variability of
the fit. Every number is the mean over K grouped stratified folds x R repeats (every item held out
once per repeat, items that share a group in one fold), with the Nadeau and Bengio (2003) corrected
resampled t interval (:func:`actspace.core.resampling.corrected_t_ci`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from actspace.core.groups import n_groups, store_groups
from actspace.core.resampling import cluster_bootstrap_ci, corrected_t_ci
from actspace.core.results import now
from actspace.core.splits import Fold, OneSidedAnswers, correctness_items, grouped_folds
from actspace.core.store import StoreLike, stored_layers
from actspace.methods.probes import balanced_accuracy, confidence_features, one_hot
from actspace.premortems.common import (
    check_fraction,
    control_record,
    controlled_test,
    headline,
    no_value_headline,
)
from actspace.premortems.pm2_folds import LAYER_CHOICE_C, Items, Settings, cross_fit
from actspace.premortems.pm2_report import summary_markdown

__all__ = ["AUTO", "DESCRIPTION", "run_pm2", "summary_markdown"]

#: ``layer`` value that chooses the layer, per fold, on a validation part of its training items.
AUTO = "auto"
DESCRIPTION = (
    "balanced accuracy on held-out items of a standardised L2 logistic-regression probe "
    "(C by inner stratified CV, balanced class weights) predicting answer correctness; mean of "
    "K x R grouped stratified cross-fitting folds, Nadeau-Bengio corrected resampled t interval"
)
#: The control's candidates, predictors that read only the output's confidence: (name,
#: description). The control is the stronger of the two (higher mean balanced accuracy).
CONTROLS = {
    "confidence_probe": (
        "confidence probe",
        "the same probe on the output's confidence features alone: top-1 probability and its "
        "log-odds, top-1 minus top-2 log-likelihood margin, entropy over the choices, sorted "
        "choice probabilities",
    ),
    "max_probability": (
        "max choice probability cut",
        "the top-1 choice probability, cut where balanced accuracy on the training items is best",
    ),
}
INTERVAL_METHOD = (
    "corrected resampled t (Nadeau and Bengio 2003) over the K x R fold estimates: it includes "
    "the variability of the fit"
)
#: The two comparisons the controlled verdict may rest on: (record key, statistic, fit key).
COMPARISONS = (
    ("probe_minus_control", "probe minus confidence control (balanced accuracy)", "probe"),
    (
        "incremental_minus_control",
        "[confidence + activations] probe minus confidence control (balanced accuracy)",
        "incremental_probe",
    ),
)


def _check(layer: int | str, n_layers: int, folds: int, repeats: int, val: float) -> None:
    check_fraction("val_fraction", val)
    if val > 0.5:
        raise ValueError(f"val_fraction must be at most 0.5, got {val}")
    if folds < 2 or repeats < 1:
        raise ValueError(f"folds must be 2 or more and repeats 1 or more, got {folds}, {repeats}")
    if layer != AUTO and not (isinstance(layer, int | np.integer) and 0 <= layer <= n_layers):
        raise ValueError(f"layer must be 0..{n_layers} (0 = embeddings) or {AUTO!r}, got {layer!r}")


def _subjects(store: StoreLike, items: np.ndarray) -> np.ndarray | None:
    """The items' ``metadata.subject`` (MMLU), or None when any used item has none."""
    scores = getattr(store, "scores", None)
    if scores is None:
        return None
    rows = scores()
    values = [(rows[int(i)].get("metadata") or {}).get("subject") for i in items]
    return None if any(v is None for v in values) else np.asarray(values, dtype=str)


def _items(store: StoreLike, index: np.ndarray, y: np.ndarray, pooling: str) -> Items:
    """Correctness, groups and output-only features of the used items (store indices ``index``)."""
    logliks = store.logliks()
    confidence = confidence_features([logliks[int(i)] for i in index])
    subjects = _subjects(store, index)

    def features(k: int) -> np.ndarray:
        return np.asarray(store.layer(k, pooling), dtype=np.float64)[index]

    return Items(
        y=y,
        groups=store_groups(store)[index],
        features=features,
        confidence=confidence,
        max_probability=confidence[:, 0],
        subjects=one_hot(subjects) if subjects is not None else None,
    )


def _interval(
    values: Sequence[float], folds: Sequence[Fold], level: float, bounds: tuple[float, float]
) -> dict[str, Any]:
    """Mean of per-fold values and its corrected resampled t interval, clipped to the metric's
    ``bounds`` (a t interval knows no range: an AUROC near 1 would reach past it)."""
    array = np.asarray(values, dtype=float)
    n_train = int(round(np.mean([f.train.size for f in folds])))
    n_test = int(round(np.mean([f.test.size for f in folds])))
    low, high = corrected_t_ci(array, n_train=n_train, n_test=n_test, level=level)
    ci = [float(np.clip(low, *bounds)), float(np.clip(high, *bounds))]
    finite = array[np.isfinite(array)]
    return {"value": float(finite.mean()) if finite.size else None, "ci": ci}


def _predictor(
    rows: Sequence[Mapping[str, Any]], key: str, folds: Sequence[Fold], level: float
) -> dict[str, Any]:
    """A predictor's fold means: balanced accuracy and AUROC with intervals, accuracy."""
    ba = _interval([r[key]["balanced_accuracy"] for r in rows], folds, level, (0.0, 1.0))
    auc = _interval([r[key]["auroc"] for r in rows], folds, level, (0.0, 1.0))
    return {
        "balanced_accuracy": ba["value"],
        "ci": ba["ci"],
        "accuracy": float(np.mean([r[key]["accuracy"] for r in rows])),
        "auroc": auc["value"],
        "auroc_ci": auc["ci"],
    }


def _difference(
    rows: Sequence[Mapping[str, Any]], a: str, b: str, folds: Sequence[Fold], level: float
) -> dict[str, Any]:
    """Per-fold paired difference of balanced accuracies ``a - b``, its mean and interval."""
    diffs = [r[a]["balanced_accuracy"] - r[b]["balanced_accuracy"] for r in rows]
    return {**_interval(diffs, folds, level, (-1.0, 1.0)), "by_fold": [float(d) for d in diffs]}


def _controlled(differences: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], dict]:
    """Both controlled tests and the better-supported one (the higher lower bound; the probe's
    own comparison on a tie): the controlled verdict passes when either lies above 0."""
    tests = {
        key: controlled_test(statistic, differences[key]["value"], differences[key]["ci"], 0.0)
        for key, statistic, _ in COMPARISONS
    }

    def low(key: str) -> float:
        value = tests[key]["ci"][0]
        return float(value) if value is not None and np.isfinite(value) else -np.inf

    first = COMPARISONS[0][0]
    decided = max((key for key, _, _ in COMPARISONS), key=lambda k: (low(k), k == first))
    return tests[decided], {"tests": tests, "decided_by": decided}


def _out_of_fold(
    items: Items,
    folds: Sequence[Fold],
    predictions: Mapping[str, list[np.ndarray]],
    control: str,
    boot: dict,
) -> dict[str, Any]:
    """Repeat 0's pooled held-out predictions (every item once): probe and control balanced
    accuracy, and a cluster bootstrap (whole groups resampled, fits held fixed) of their
    difference: a check beside the verdict's interval, which also includes refitting."""
    y = items.y
    pooled = {name: np.zeros(y.size, bool) for name in ("probe", control)}
    for f, fold in enumerate(folds):
        if fold.repeat == 0:
            for name in pooled:
                pooled[name][fold.test] = predictions[name][f]
    probe, conf = pooled["probe"], pooled[control]

    def diff(t: np.ndarray, p: np.ndarray, c: np.ndarray) -> float:
        return float(balanced_accuracy(t, p) - balanced_accuracy(t, c))

    ci = cluster_bootstrap_ci(diff, y, probe, conf, groups=items.groups, **boot)
    return {
        "repeat": 0,
        "probe_balanced_accuracy": float(balanced_accuracy(y, probe)),
        "control_balanced_accuracy": float(balanced_accuracy(y, conf)),
        "difference": diff(y, probe, conf),
        "difference_ci": list(ci),
        "method": "cluster bootstrap over groups of the pooled held-out predictions "
        "(fits held fixed; not the verdict's interval)",
    }


def _validation_table(
    validation: tuple | None, layers: np.ndarray, candidates: Sequence[int]
) -> list[dict[str, Any]]:
    """Per candidate layer: mean validation balanced accuracy and AUROC over folds, times
    chosen."""
    if validation is None:
        return []
    ba, auc = validation
    return [
        {
            "layer": k,
            "balanced_accuracy": float(ba[:, j].mean()),
            "auroc": float(np.nanmean(auc[:, j])) if np.isfinite(auc[:, j]).any() else None,
            "chosen": int(np.sum(layers == k)),
        }
        for j, k in enumerate(candidates)
    ]


def _aggregate(
    fitted: Mapping[str, Any], items: Items, folds: Sequence[Fold], level: float
) -> dict[str, Any]:
    """The fold rows summarised: predictors, differences, the controlled tests, the layers."""
    rows = fitted["rows"]
    keys = ["probe", "confidence_probe", "incremental_probe", "max_probability", "majority"]
    out: dict[str, Any] = {key: _predictor(rows, key, folds, level) for key in keys}
    control = max(CONTROLS, key=lambda k: (out[k]["balanced_accuracy"], k == "confidence_probe"))
    out["control_key"] = control
    differences = {
        key: _difference(rows, fit_key, control, folds, level) for key, _, fit_key in COMPARISONS
    }
    out["subject_probe"] = None
    if items.subjects is not None:
        out["subject_probe"] = _predictor(rows, "subject_probe", folds, level)
        differences["probe_minus_subject"] = _difference(
            rows, "probe", "subject_probe", folds, level
        )
    out["differences"] = differences
    out["controlled"], out["controlled_tests"] = _controlled(differences)
    layers = np.asarray([r["layer"] for r in rows], dtype=int)
    out["layer"] = int(np.bincount(layers).argmax())  # modal; the shallower on a tie
    out["layers_by_fold"] = layers.tolist()
    out["validation"] = _validation_table(fitted["validation"], layers, fitted["candidates"])
    return out


def run_pm2(
    store: StoreLike,
    *,
    layer: int | Literal["auto"],
    pooling: str,
    n_samples: int | None,
    folds: int,
    repeats: int,
    val_fraction: float,
    cv_folds: int,
    n_bootstrap: int,
    threshold: float,
    seed: int,
    Cs: int | Sequence[float] = 10,
    ci_level: float = 0.95,
) -> dict[str, Any]:
    """Held-out balanced accuracy of a linear probe predicting whether the model was right,
    decided against what the model's output confidence alone predicts.

    The keywords are the keys of ``premortems.pm2`` (and the study's seed); ``Cs`` is the grid of
    the probe's inner cross-validation. A seeded subsample of ``n_samples`` items is cut into
    ``folds`` grouped folds stratified by correctness, ``repeats`` times (seeds ``seed + r``).
    Per fold, with ``layer="auto"``, a grouped validation part (``val_fraction``) of the training
    items picks the layer (a fixed-C probe per layer; best balanced accuracy, AUROC then the
    shallower layer break ties); the probe is fitted on all training items at that layer and
    scored on the held-out items. ``n_bootstrap`` sizes the cluster bootstrap of the pooled
    held-out check (``out_of_fold``), not the verdict's interval.
    """
    started, date = time.perf_counter(), now()
    n_layers = int(store.n_layers)
    _check(layer, n_layers, folds, repeats, val_fraction)
    try:
        index, y = correctness_items(store.correct(), n_samples=n_samples, seed=seed)
    except OneSidedAnswers as error:
        return _no_value(store, f"PM2 {error}", pooling, threshold, ci_level, seed, started, date)
    items = _items(store, index, y, pooling)
    splits = grouped_folds(
        y.size, n_folds=folds, n_repeats=repeats, seed=seed, groups=items.groups, stratify=y
    )
    settings = Settings(
        layer=None if layer == AUTO else int(layer),
        candidates=tuple(stored_layers(store)),
        val_fraction=val_fraction,
        cv_folds=cv_folds,
        Cs=Cs,
        seed=seed,
    )
    fitted = cross_fit(items, splits, settings)
    summary = _aggregate(fitted, items, splits, ci_level)
    control = summary["control_key"]
    probe, conf = summary["probe"], summary[control]
    boot = {"n_resamples": n_bootstrap, "level": ci_level, "seed": seed}
    out_of_fold = _out_of_fold(items, splits, fitted["predictions"], control, boot)
    meta = getattr(store, "meta", {}) or {}
    n_correct = int(y.sum())
    return {
        **headline(
            "pm2",
            value=probe["balanced_accuracy"],
            ci=probe["ci"],
            ci_level=ci_level,
            threshold=threshold,
            n=y.size,
            started=started,
            date=date,
            description=DESCRIPTION,
            control=control_record(*CONTROLS[control], conf["balanced_accuracy"], conf["ci"]),
            controlled=summary.pop("controlled"),
        ),
        "model": meta.get("model"),
        "task": meta.get("task"),
        "pooling": pooling,
        "layer": summary.pop("layer"),
        "layer_selection": "validation" if layer == AUTO else "configured",
        "layer_choice_C": LAYER_CHOICE_C if layer == AUTO else None,
        "n_layers": n_layers,
        "stored_layers": stored_layers(store),
        "n_items": int(y.size),
        "n_groups": n_groups(items.groups),
        "folds": folds,
        "repeats": repeats,
        "n_train": int(round(np.mean([f.train.size for f in splits]))),
        "n_test": int(round(np.mean([f.test.size for f in splits]))),
        "interval_method": INTERVAL_METHOD,
        "seed": seed,
        "cv_folds": cv_folds,
        "n_bootstrap": n_bootstrap,
        "class_balance": {
            "n_correct": n_correct,
            "n_incorrect": int(y.size - n_correct),
            "share_correct": n_correct / y.size,
        },
        **summary,
        "out_of_fold": out_of_fold,
        "by_fold": [_fold_row(row) for row in fitted["rows"]],
    }


def _fold_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One fold's record: sizes, layer, probe C, and each predictor's balanced accuracy/AUROC."""
    out = {key: row[key] for key in ("repeat", "fold", "n_train", "n_test", "layer")}
    out["probe_C"] = row["probe"]["C"]
    for key in ("probe", "confidence_probe", "incremental_probe", "subject_probe"):
        if row.get(key) is not None:
            out[key] = {m: row[key][m] for m in ("balanced_accuracy", "auroc")}
    return out


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
