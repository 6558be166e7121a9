"""PM2's repeated grouped cross-fitting: per fold, the layer choice, the probe and its controls.

Every fold fits, on its training items only, the activation probe (at a layer chosen on a grouped
validation part of those items, or the configured one), the *confidence probe* on the output's own
confidence features of the same items, the *incremental probe* on both, and, where the items carry
a subject (MMLU), a probe on subject identity alone; each is scored on the fold's held-out items.
The per-fold scores feed corrected resampled t intervals (:mod:`actspace.premortems.pm2`).

Cost. Choosing the layer with :class:`~actspace.methods.probes.LinearProbe` at every layer of every
fold would make ``(L + 1) x K x R x Cs x cv`` fits; the choice uses one fixed-penalty fit per layer
and fold instead (:func:`~actspace.methods.probes.fit_fixed_probe`), and the cross-validated probe
is fitted once per fold at the chosen layer. The loops run layer by layer, so that one layer's
activations are in memory at a time and each is read at most twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actspace.core.splits import Fold, grouped_split
from actspace.methods.probes import (
    LinearProbe,
    auroc,
    balanced_accuracy,
    best_threshold,
    classification_scores,
    fit_fixed_probe,
)

#: The fixed inverse penalty of the per-fold layer choice: the centre of the probe's default
#: log grid (1e-4 .. 1e4) and scikit-learn's default, on standardised features.
LAYER_CHOICE_C = 1.0


@dataclass(frozen=True)
class Items:
    """What PM2 fits on, per used item: correctness, group, and the output-only features.

    ``features(k)`` gives layer ``k``'s activations of the used items (float64).
    ``confidence`` holds :func:`~actspace.methods.probes.confidence_features`;
    ``max_probability`` the top-1 probability (the old threshold baseline); ``subjects`` the
    one-hot subject indicators, or None when the items carry no subject.
    """

    y: np.ndarray
    groups: np.ndarray
    features: Callable[[int], np.ndarray]
    confidence: np.ndarray
    max_probability: np.ndarray
    subjects: np.ndarray | None


@dataclass(frozen=True)
class Settings:
    """How every fold fits: the layer (None: chosen per fold among ``candidates``, the stored
    layers), the validation share of a fold's training items, the probe's inner CV, the seed."""

    layer: int | None
    candidates: tuple[int, ...]
    val_fraction: float
    cv_folds: int
    Cs: int | Sequence[float]
    seed: int

    def new_probe(self) -> LinearProbe:
        return LinearProbe(Cs=self.Cs, cv=self.cv_folds, random_state=self.seed)


def _probe_scores(
    X: np.ndarray, items: Items, fold: Fold, settings: Settings
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit the cross-validated probe on the fold's training items, score its held-out items;
    returns the scores (with the chosen C) and the held-out predictions."""
    y, train, test = items.y, fold.train, fold.test
    probe = settings.new_probe().fit(X[train], y[train], groups=items.groups[train])
    pred = probe.predict(X[test]).astype(bool)
    scores = classification_scores(y[test], pred, probe.decision_function(X[test]))
    return {**scores, "C": probe.C_}, pred


def _validation_parts(
    items: Items, folds: Sequence[Fold], settings: Settings
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per fold, a grouped stratified split of its training items into fit and validation."""
    parts = []
    for index, fold in enumerate(folds):
        fit, val = grouped_split(
            fold.train.size,
            test_fraction=settings.val_fraction,
            seed=settings.seed + index,
            groups=items.groups[fold.train],
            stratify=items.y[fold.train],
        )
        parts.append((fold.train[fit], fold.train[val]))
    return parts


def validate_layers(
    items: Items, folds: Sequence[Fold], settings: Settings
) -> tuple[np.ndarray, np.ndarray]:
    """Validation balanced accuracy and AUROC of a fixed-C probe, ``[folds, candidates]`` each
    (column j is layer ``settings.candidates[j]``)."""
    parts = _validation_parts(items, folds, settings)
    width = len(settings.candidates)
    ba, auc = np.empty((len(folds), width)), np.empty((len(folds), width))
    for j, k in enumerate(settings.candidates):
        X = items.features(k)
        for f, (fit, val) in enumerate(parts):
            model = fit_fixed_probe(X[fit], items.y[fit], C=LAYER_CHOICE_C)
            ba[f, j] = balanced_accuracy(items.y[val], model.predict(X[val]))
            auc[f, j] = auroc(items.y[val], model.decision_function(X[val]))
    return ba, auc


def best_layers(ba: np.ndarray, auc: np.ndarray) -> np.ndarray:
    """Per fold, the layer with the best validation balanced accuracy; AUROC breaks ties, then
    the shallower layer."""
    keys = np.stack([ba, np.nan_to_num(auc), -np.broadcast_to(np.arange(ba.shape[1]), ba.shape)])
    # lexsort sorts by its last key first: balanced accuracy, then AUROC, then -layer
    return np.asarray([np.lexsort(keys[::-1, f])[-1] for f in range(ba.shape[0])], dtype=int)


def _output_probes(
    items: Items, fold: Fold, settings: Settings
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The predictors that see no activations (confidence probe, subject probe where known, the
    max-probability cut, the majority class): their scores and held-out predictions."""
    y, train, test = items.y, fold.train, fold.test
    out: dict[str, Any] = {}
    pred: dict[str, np.ndarray] = {}
    out["confidence_probe"], pred["confidence_probe"] = _probe_scores(
        items.confidence, items, fold, settings
    )
    out["subject_probe"] = (
        _probe_scores(items.subjects, items, fold, settings)[0]
        if items.subjects is not None
        else None
    )
    threshold, _ = best_threshold(items.max_probability[train], y[train])
    pred["max_probability"] = items.max_probability[test] >= threshold
    out["max_probability"] = {
        **classification_scores(y[test], pred["max_probability"], items.max_probability[test]),
        "threshold": threshold,
    }
    majority = bool(np.mean(y[train]) >= 0.5)
    majority_pred = np.full(test.size, majority)
    out["majority"] = classification_scores(y[test], majority_pred, np.zeros(test.size))
    return out, pred


def cross_fit(items: Items, folds: Sequence[Fold], settings: Settings) -> dict[str, Any]:
    """Every fold's fits and held-out scores, and the per-layer validation table (auto layer).

    Returns ``{"rows": [per-fold record], "validation": (ba, auroc) or None,
    "predictions": {"probe" | "confidence_probe" | "max_probability": [per fold]}}``, the
    predictions of each fold's held-out items in ``fold.test`` order.
    """
    validation = None
    if settings.layer is None:
        validation = validate_layers(items, folds, settings)
        chosen = np.asarray(settings.candidates)[best_layers(*validation)]
    else:
        chosen = np.full(len(folds), settings.layer, dtype=int)
    rows: list[dict[str, Any]] = [
        {
            "repeat": fold.repeat,
            "fold": fold.fold,
            "n_train": int(fold.train.size),
            "n_test": int(fold.test.size),
            "layer": int(chosen[f]),
        }
        for f, fold in enumerate(folds)
    ]
    predictions: dict[str, list[np.ndarray]] = {
        key: [np.empty(0, bool)] * len(folds)
        for key in ("probe", "confidence_probe", "max_probability")
    }
    for f, fold in enumerate(folds):
        output, pred = _output_probes(items, fold, settings)
        rows[f].update(output)
        for key, values in pred.items():
            predictions[key][f] = values
    for k in np.unique(chosen):
        X = items.features(int(k))
        both = np.hstack([items.confidence, X])
        for f in np.flatnonzero(chosen == k):
            rows[f]["probe"], predictions["probe"][f] = _probe_scores(X, items, folds[f], settings)
            rows[f]["incremental_probe"] = _probe_scores(both, items, folds[f], settings)[0]
    return {
        "rows": rows,
        "validation": validation,
        "candidates": settings.candidates,
        "predictions": predictions,
    }
