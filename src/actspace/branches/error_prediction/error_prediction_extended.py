"""Branch 2B, experiment 1: PM2's correctness probe at every layer, calibration and transfer.

For each activation store (one model on one task) the items are split exactly as PM2 splits them
(the same seeded subsample, then a split stratified by correctness). At every layer two probes are
fitted on the training items only:

- the PM2 probe (:class:`actspace.methods.probes.LinearProbe`, balanced class weights): held-out balanced
  accuracy and AUROC, the curve over layers;
- the same probe without class weights, whose output is a probability that the answer is correct:
  held-out Brier score, log loss, expected calibration error and reliability data. Balanced
  weights move a probe's probabilities towards one half, so they are not probabilities of being
  right; the unweighted probe's are.

The *selected* layer is the one whose unweighted probe has the best inner cross-validated log loss
on the training items (a choice made without the test items). At that layer the study reports
the probe against the output-confidence and majority baselines, the probe's accuracy per group of
items where the items carry a group in their metadata (the built-in tasks carry ``bucket``:
``frequent``/``rare``/``unseen``, how often the fact was stated in training), and, per model, the
task-to-task transfer matrix: the probe trained on one task's training items, tested on another
task's held-out items at the source task's selected layer.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.metrics import roc_curve
from sklearn.model_selection import StratifiedKFold, train_test_split

from actspace.core.results import binary_comparison
from actspace.core.io import atomic_write_json, write_experiment
from actspace.core.resampling import bootstrap_ci, paired_difference_ci
from actspace.core.store import ActivationStore
from actspace.methods.probes import (
    LinearProbe,
    accuracy,
    auroc,
    balanced_accuracy,
    confidence_baseline,
    majority_baseline,
    max_choice_probability,
)

EXPERIMENT = "error_prediction_extended"
CI_LEVEL = 0.95
#: Smallest count of correct and of incorrect answers a store needs for a probe (as PM2).
MIN_PER_CLASS = 6
#: The order in which known group values are listed (the built-in tasks' frequency buckets).
KNOWN_GROUP_ORDER = ("frequent", "rare", "unseen")


class StoreLike(Protocol):
    """The part of :class:`actspace.core.store.ActivationStore` that branch 2B reads."""

    meta: dict
    n_layers: int

    def layer(self, k: int, pooling: str = "last") -> np.ndarray: ...

    def choice_end(self, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def correct(self) -> np.ndarray: ...

    def logliks(self) -> list[np.ndarray]: ...

    def scores(self) -> list[dict]: ...


@dataclass(frozen=True)
class NamedStore:
    """An activation store with the configured names of its model and task."""

    model: str
    task: str
    store: StoreLike


def now() -> str:
    """The current UTC time, ISO formatted, for ``date`` fields."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def defined_ci(
    statistic: Callable[..., Any],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> list[float | None]:
    """Paired percentile bootstrap interval over the resamples where ``statistic`` is defined.

    :func:`actspace.core.resampling.bootstrap_ci` returns NaN as soon as one resample is undefined (an
    AUROC of a resample holding one class, an accuracy among answered items when a resample
    answers none), which on small held-out sets is nearly always. Here such resamples are left
    out; when more than half are undefined the interval is unknown (None, None). ``statistic``
    is called vectorised when it takes an ``axis`` keyword.
    """
    data = [np.asarray(array) for array in arrays]
    n = data[0].shape[0]
    if n < 2 or any(array.shape[0] != n for array in data):
        raise ValueError("defined_ci needs paired arrays of at least 2 observations")
    index = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        if "axis" in inspect.signature(statistic).parameters:
            values = np.asarray(statistic(*[array[index] for array in data], axis=-1), float)
        else:
            values = np.array([statistic(*[array[row] for array in data]) for row in index], float)
    values = values[np.isfinite(values)]
    if values.size * 2 < n_resamples:
        return [None, None]
    tail = (1.0 - level) / 2.0
    return [float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))]


def difference(statistic: Callable[..., Any], k: int) -> Callable[..., Any]:
    """``statistic(*first k arrays) - statistic(*the rest)``, vectorised like ``statistic``."""

    def diff(*arrays: np.ndarray, axis: int = -1) -> Any:
        return statistic(*arrays[:k], axis=axis) - statistic(*arrays[k:], axis=axis)

    return diff


# --------------------------------------------------------------------------------------------
# Splits and probes
# --------------------------------------------------------------------------------------------


class OneSidedAnswers(ValueError):
    """Too few correct or too few incorrect answers for a correctness probe."""


@dataclass(frozen=True)
class Split:
    """The items one experiment uses and their held-out split.

    ``items`` are store indices (sorted); ``y`` their correctness; ``train``/``test`` are positions
    into ``items``.
    """

    items: np.ndarray
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray

    @property
    def y_train(self) -> np.ndarray:
        return self.y[self.train]

    @property
    def y_test(self) -> np.ndarray:
        return self.y[self.test]


def correctness_split(
    correct: np.ndarray,
    *,
    n_samples: int | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    min_per_class: int = MIN_PER_CLASS,
) -> Split:
    """PM2's split: a seeded subsample of ``n_samples`` items, then a stratified train/test split.

    With the same seed, ``n_samples`` and ``test_fraction`` the held-out items are PM2's.
    Raises :class:`OneSidedAnswers` when either class has fewer than ``min_per_class`` items.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    correct = np.asarray(correct).astype(bool)
    rng = np.random.default_rng(seed)
    n = correct.size
    if n_samples is not None and n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    if n_samples is None or n_samples >= n:
        items = np.arange(n)
    else:
        items = np.sort(rng.choice(n, size=n_samples, replace=False))
    y = correct[items]
    n_correct, n_wrong = int(y.sum()), int(y.size - y.sum())
    if min(n_correct, n_wrong) < min_per_class:
        raise OneSidedAnswers(
            f"needs at least {min_per_class} correct and {min_per_class} incorrect answers, got "
            f"{n_correct} correct and {n_wrong} incorrect of {y.size}"
        )
    train, test = train_test_split(
        np.arange(y.size), test_size=test_fraction, stratify=y, random_state=seed
    )
    return Split(items=items, y=y, train=np.sort(train), test=np.sort(test))


def make_probe(
    *, balanced: bool, cv_folds: int = 5, Cs: int | Sequence[float] = 10, seed: int = 0
) -> LinearProbe:
    """PM2's probe (``balanced=True``) or its unweighted twin, whose output is P(correct)."""
    return LinearProbe(
        Cs=Cs, cv=cv_folds, class_weight="balanced" if balanced else None, random_state=seed
    )


def inner_cv_score(probe: LinearProbe) -> float:
    """The best mean inner cross-validation score over the penalty grid (neg. log loss)."""
    scores = probe.pipeline_[-1].scores_
    if isinstance(scores, dict):  # scikit-learn's legacy layout: {class: [folds, Cs]}
        scores = next(iter(scores.values()))
    array = np.asarray(scores, dtype=float)
    return float(array.reshape(array.shape[0], -1).mean(axis=0).max())


def positive_probability(probe: LinearProbe, X: np.ndarray) -> np.ndarray:
    """The probe's probability of the positive class (the answer is correct)."""
    return probe.predict_proba(X)[:, 1]


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


def brier_score(y_true: np.ndarray, prob: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Mean squared error of probabilities against 0/1 outcomes along ``axis``."""
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(prob, dtype=float)
    out = np.mean((p - y) ** 2, axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def log_loss(y_true: np.ndarray, prob: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of 0/1 outcomes under probabilities ``prob``."""
    y = np.asarray(y_true, dtype=float)
    p = np.clip(np.asarray(prob, dtype=float), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def reliability(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Reliability-diagram data over ``n_bins`` equal-width bins of predicted probability.

    Per bin: item count, mean predicted probability and observed share correct (None when
    empty). ``ece`` is the expected calibration error, the count-weighted mean gap.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    y = np.asarray(y_true, dtype=float)
    p = np.asarray(prob, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    sum_p = np.bincount(index, weights=p, minlength=n_bins)
    sum_y = np.bincount(index, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = sum_p / count
        observed = sum_y / count
    gaps = np.where(count > 0, np.abs(observed - mean_p), 0.0)
    ece = float(np.sum(count * gaps) / max(int(count.sum()), 1))
    return {
        "bin_edges": edges.tolist(),
        "count": count.astype(int).tolist(),
        "mean_predicted": [
            None if c == 0 else float(v) for c, v in zip(count, mean_p, strict=True)
        ],
        "observed": [None if c == 0 else float(v) for c, v in zip(count, observed, strict=True)],
        "ece": ece,
    }


def calibration(
    y_true: np.ndarray, prob: np.ndarray, *, base_rate: float, n_bins: int = 10
) -> dict[str, Any]:
    """Brier score, its skill against always forecasting ``base_rate``, log loss, ECE, diagram."""
    y = np.asarray(y_true, dtype=float)
    brier = float(brier_score(y, prob))
    reference = float(brier_score(y, np.full(y.shape, base_rate)))
    diagram = reliability(y, prob, n_bins)
    return {
        "brier": brier,
        "brier_base_rate": reference,
        "brier_skill": float(1.0 - brier / reference) if reference > 0 else None,
        "log_loss": log_loss(y, prob),
        "ece": diagram["ece"],
        "reliability": diagram,
    }


# --------------------------------------------------------------------------------------------
# One store: the per-layer curve
# --------------------------------------------------------------------------------------------


@dataclass
class LayerFit:
    """The two probes of one layer and their held-out outputs."""

    layer: int
    probe: LinearProbe  # PM2's, balanced
    calibrated: LinearProbe  # unweighted: P(correct)
    pred: np.ndarray  # balanced probe's held-out predictions (correct?)
    score: np.ndarray  # balanced probe's held-out decision values
    prob: np.ndarray  # unweighted probe's held-out P(correct)
    cv_score: float  # unweighted probe's inner-CV neg. log loss on the training items
    record: dict[str, Any] = field(default_factory=dict)


def fit_layer(
    X: np.ndarray,
    split: Split,
    layer: int,
    *,
    cv_folds: int = 5,
    Cs: int | Sequence[float] = 10,
    seed: int = 0,
    n_bootstrap: int = 1000,
    n_bins: int = 10,
) -> LayerFit:
    """Fit both probes of one layer on the training items; score them on the held-out items."""
    X = np.asarray(X, dtype=np.float64)
    y_train, y_test = split.y_train, split.y_test
    probe = make_probe(balanced=True, cv_folds=cv_folds, Cs=Cs, seed=seed)
    probe.fit(X[split.train], y_train)
    calibrated = make_probe(balanced=False, cv_folds=cv_folds, Cs=Cs, seed=seed)
    calibrated.fit(X[split.train], y_train)
    pred = probe.predict(X[split.test]).astype(bool)
    score = probe.decision_function(X[split.test])
    prob = positive_probability(calibrated, X[split.test])
    ba_ci = bootstrap_ci(balanced_accuracy, y_test, pred, n_resamples=n_bootstrap, seed=seed)
    auc_ci = defined_ci(auroc, y_test, score, n_resamples=n_bootstrap, seed=seed)
    calib = calibration(y_test, prob, base_rate=float(y_train.mean()), n_bins=n_bins)
    fit = LayerFit(
        layer=layer,
        probe=probe,
        calibrated=calibrated,
        pred=pred,
        score=score,
        prob=prob,
        cv_score=inner_cv_score(calibrated),
    )
    fit.record = {
        "layer": layer,
        "balanced_accuracy": float(balanced_accuracy(y_test, pred)),
        "ci": list(ba_ci),
        "auroc": float(auroc(y_test, score)),
        "auroc_ci": list(auc_ci),
        "accuracy": float(accuracy(y_test, pred)),
        "C": probe.C_,
        "calibrated_C": calibrated.C_,
        "calibrated_auroc": float(auroc(y_test, prob)),
        "inner_cv_log_loss": -fit.cv_score,
        "brier": calib["brier"],
        "brier_skill": calib["brier_skill"],
        "log_loss": calib["log_loss"],
        "ece": calib["ece"],
    }
    return fit


def item_groups(store: StoreLike, items: np.ndarray, key: str | None) -> list[str] | None:
    """The metadata value ``key`` of each item (as text), or None when any item lacks it."""
    if not key:
        return None
    rows = store.scores()
    groups = []
    for index in items:
        metadata = rows[int(index)].get("metadata") or {}
        if key not in metadata:
            return None
        groups.append(str(metadata[key]))
    return groups


def _group_order(values: Sequence[str]) -> list[str]:
    present = set(values)
    known = [g for g in KNOWN_GROUP_ORDER if g in present]
    return known + sorted(present - set(known))


def out_of_fold(
    X: np.ndarray,
    y: np.ndarray,
    *,
    C: float,
    calibrated_C: float,
    n_folds: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out predictions for every item: each from probes not trained on it (k folds).

    The penalties are the ones chosen at the selected layer, so each fold fits once. Returns
    (balanced probe's predicted correctness, unweighted probe's P(correct)).
    """
    X = np.asarray(X, dtype=np.float64)
    counts = np.bincount(y.astype(int), minlength=2)
    folds = StratifiedKFold(
        n_splits=int(min(n_folds, counts.min())), shuffle=True, random_state=seed
    )
    pred = np.zeros(y.size, dtype=bool)
    prob = np.zeros(y.size)
    for train, test in folds.split(X, y):
        inner = int(min(3, np.bincount(y[train].astype(int), minlength=2).min()))
        balanced = make_probe(balanced=True, cv_folds=inner, Cs=[C], seed=seed).fit(
            X[train], y[train]
        )
        plain = make_probe(balanced=False, cv_folds=inner, Cs=[calibrated_C], seed=seed).fit(
            X[train], y[train]
        )
        pred[test] = balanced.predict(X[test]).astype(bool)
        prob[test] = positive_probability(plain, X[test])
    return pred, prob


def group_table(
    groups: Sequence[str],
    y: np.ndarray,
    pred: np.ndarray,
    prob: np.ndarray,
    confidence: np.ndarray,
) -> list[dict[str, Any]]:
    """Per group: items, the model's accuracy, mean P(correct), probe accuracy, confidence."""
    groups_arr = np.asarray(groups)
    rows = []
    for name in _group_order(list(groups)):
        mask = groups_arr == name
        yy, pp = y[mask], pred[mask]
        rows.append(
            {
                "group": name,
                "n": int(mask.sum()),
                "model_accuracy": float(yy.mean()),
                "mean_p_correct": float(prob[mask].mean()),
                "share_predicted_correct": float(pp.mean()),
                "probe_accuracy": float(np.mean(yy == pp)),
                "mean_confidence": float(confidence[mask].mean()),
            }
        )
    return rows


@dataclass
class StoreAnalysis:
    """Everything one store's analysis keeps for the transfer matrix and the record."""

    named: NamedStore
    split: Split
    selected: LayerFit
    record: dict[str, Any]


def probe_vs_confidence(
    y_test: np.ndarray,
    probe_pred: np.ndarray,
    confidence_pred: np.ndarray,
    *,
    layer: int,
    where: str,
) -> dict[str, Any]:
    """The main comparison, per held-out item: probe right (a) vs output confidence right (b)."""
    y = np.asarray(y_test).astype(bool)
    return binary_comparison(
        np.asarray(probe_pred).astype(bool) == y,
        np.asarray(confidence_pred).astype(bool) == y,
        description=(
            f"whether the correctness probe ({where}, layer {layer}) predicts the model's "
            "correctness right, against the output-confidence baseline (maximum choice "
            "probability, thresholded on the training items), per held-out item"
        ),
        label_a="probe",
        label_b="output confidence",
    )


def roc_points(y: np.ndarray, score: np.ndarray) -> dict[str, list[float]] | None:
    """The ROC curve of ``score`` for ``y`` (held-out items), or None with one class only."""
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, np.asarray(score, dtype=float))
    return {"fpr": [float(x) for x in fpr], "tpr": [float(x) for x in tpr]}


def analyse_store(
    named: NamedStore,
    *,
    layers: Sequence[int] | None = None,
    pooling: str = "last",
    n_samples: int | None = None,
    test_fraction: float = 0.3,
    cv_folds: int = 5,
    Cs: int | Sequence[float] = 10,
    n_bootstrap: int = 1000,
    n_bins: int = 10,
    group_key: str | None = "bucket",
    seed: int = 0,
) -> StoreAnalysis:
    """The per-layer curve, calibration, baselines and group table of one store."""
    store = named.store
    n_layers = int(store.n_layers)
    chosen_layers = list(range(n_layers + 1)) if layers is None else [int(k) for k in layers]
    bad = [k for k in chosen_layers if not 0 <= k <= n_layers]
    if bad:
        raise ValueError(f"layer {bad[0]} out of range 0..{n_layers} for {named.model}")
    split = correctness_split(
        store.correct(), n_samples=n_samples, test_fraction=test_fraction, seed=seed
    )
    fits: list[LayerFit] = []
    for k in chosen_layers:
        X = np.asarray(store.layer(k, pooling), dtype=np.float64)[split.items]
        fits.append(
            fit_layer(
                X,
                split,
                k,
                cv_folds=cv_folds,
                Cs=Cs,
                seed=seed,
                n_bootstrap=n_bootstrap,
                n_bins=n_bins,
            )
        )
    # Best inner-CV log loss on the training items; the shallower layer wins ties.
    selected = max(fits, key=lambda f: (f.cv_score, -f.layer))
    y, y_test, y_train = split.y, split.y_test, split.y_train

    logliks = store.logliks()
    item_logliks = [logliks[int(i)] for i in split.items]
    conf = confidence_baseline(item_logliks, y, split.train, split.test)
    confidence_all = max_choice_probability(item_logliks)
    conf_ci = bootstrap_ci(
        balanced_accuracy, y_test, conf["predictions"], n_resamples=n_bootstrap, seed=seed
    )
    conf_calib = calibration(
        y_test, conf["confidence"], base_rate=float(y_train.mean()), n_bins=n_bins
    )
    diff_ci = paired_difference_ci(
        balanced_accuracy,
        (y_test, selected.pred),
        (y_test, conf["predictions"]),
        n_resamples=n_bootstrap,
        seed=seed,
    )
    auc_diff_ci = defined_ci(
        difference(auroc, 2),
        y_test,
        selected.score,
        y_test,
        conf["confidence"],
        n_resamples=n_bootstrap,
        seed=seed,
    )
    selected_calib = calibration(
        y_test, selected.prob, base_rate=float(y_train.mean()), n_bins=n_bins
    )

    groups = item_groups(store, split.items, group_key)
    group_record: dict[str, Any] | None = None
    if groups is not None:
        X = np.asarray(store.layer(selected.layer, pooling), dtype=np.float64)[split.items]
        oof_pred, oof_prob = out_of_fold(
            X, y, C=selected.probe.C_, calibrated_C=selected.calibrated.C_, seed=seed
        )
        group_record = {
            "key": group_key,
            "layer": selected.layer,
            "method": "out-of-fold predictions over all items (5 stratified folds)",
            "groups": group_table(groups, y, oof_pred, oof_prob, confidence_all),
        }

    record = {
        "model": named.model,
        "task": named.task,
        "pooling": pooling,
        "n_layers": n_layers,
        "n_items": int(y.size),
        "n_train": int(split.train.size),
        "n_test": int(split.test.size),
        "share_correct": float(y.mean()),
        "share_correct_test": float(y_test.mean()),
        "layers": [f.record for f in fits],
        "selected_layer": selected.layer,
        "layer_selection": "best inner-CV log loss of the unweighted probe on training items",
        "selected": {
            **selected.record,
            "calibration": selected_calib,
        },
        "baselines": {
            "majority": majority_baseline(y_train, y_test),
            "confidence": {
                "balanced_accuracy": conf["balanced_accuracy"],
                "ci": list(conf_ci),
                "accuracy": conf["accuracy"],
                "auroc": conf["auroc"],
                "threshold": conf["threshold"],
                "calibration": conf_calib,
                "description": "maximum softmax probability over the choice log-likelihoods",
            },
        },
        "probe_minus_confidence": {
            "balanced_accuracy": selected.record["balanced_accuracy"] - conf["balanced_accuracy"],
            "ci": list(diff_ci),
            "auroc": selected.record["auroc"] - conf["auroc"],
            "auroc_ci": list(auc_diff_ci),
        },
        "by_group": group_record,
        "roc": {
            "probe": roc_points(y_test, selected.score),
            "confidence": roc_points(y_test, conf["confidence"]),
        },
        "comparison": probe_vs_confidence(
            y_test,
            selected.pred,
            conf["predictions"],
            layer=selected.layer,
            where=f"{named.model} on {named.task}",
        ),
    }
    return StoreAnalysis(named=named, split=split, selected=selected, record=record)


# --------------------------------------------------------------------------------------------
# Transfer between tasks
# --------------------------------------------------------------------------------------------


def transfer_matrix(
    analyses: Sequence[StoreAnalysis],
    *,
    pooling: str = "last",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Balanced accuracy and AUROC of each task's probe on every task's held-out items.

    All analyses must come from one model. Row = source task (its PM2 probe at its selected
    layer), column = target task (held-out items, same layer). The diagonal is the within-task
    result at the selected layer.
    """
    models = {a.named.model for a in analyses}
    if len(models) != 1:
        raise ValueError(f"a transfer matrix needs one model, got {sorted(models)}")
    tasks = [a.named.task for a in analyses]
    size = len(analyses)
    ba = [[0.0] * size for _ in range(size)]
    ba_ci: list[list[list[float]]] = [[[0.0, 0.0] for _ in range(size)] for _ in range(size)]
    auc = [[0.0] * size for _ in range(size)]
    for i, source in enumerate(analyses):
        k = source.selected.layer
        for j, target in enumerate(analyses):
            y_test = target.split.y_test
            X = np.asarray(target.named.store.layer(k, pooling), dtype=np.float64)
            X_test = X[target.split.items[target.split.test]]
            pred = source.selected.probe.predict(X_test).astype(bool)
            score = source.selected.probe.decision_function(X_test)
            ba[i][j] = float(balanced_accuracy(y_test, pred))
            ba_ci[i][j] = list(
                bootstrap_ci(balanced_accuracy, y_test, pred, n_resamples=n_bootstrap, seed=seed)
            )
            auc[i][j] = float(auroc(y_test, score))
    return {
        "model": next(iter(models)),
        "tasks": tasks,
        "source_layers": {a.named.task: a.selected.layer for a in analyses},
        "balanced_accuracy": ba,
        "balanced_accuracy_ci": ba_ci,
        "auroc": auc,
        "description": "rows: task the probe was trained on; columns: task it was tested on",
    }


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


def run_error_prediction_extended(
    stores: Sequence[NamedStore],
    *,
    layers: Sequence[int] | None = None,
    pooling: str = "last",
    n_samples: int | None = None,
    test_fraction: float = 0.3,
    cv_folds: int = 5,
    Cs: int | Sequence[float] = 10,
    n_bootstrap: int = 1000,
    n_bins: int = 10,
    group_key: str | None = "bucket",
    seed: int = 0,
) -> dict[str, Any]:
    """Per store the layer curve, calibration and baselines; per model the transfer matrix.

    A store whose answers are too one-sided for a probe is recorded with ``skipped`` and its
    reason instead of failing the whole experiment. The headline (``value``, ``ci``) is the held-
    out balanced accuracy at the selected layer of the first store that could be analysed.
    """
    if not stores:
        raise ValueError("error_prediction_extended needs at least one store")
    started, date = time.perf_counter(), now()
    analyses: list[StoreAnalysis] = []
    records: list[dict[str, Any]] = []
    for named in stores:
        try:
            analysis = analyse_store(
                named,
                layers=layers,
                pooling=pooling,
                n_samples=n_samples,
                test_fraction=test_fraction,
                cv_folds=cv_folds,
                Cs=Cs,
                n_bootstrap=n_bootstrap,
                n_bins=n_bins,
                group_key=group_key,
                seed=seed,
            )
        except OneSidedAnswers as error:
            records.append({"model": named.model, "task": named.task, "skipped": str(error)})
            continue
        analyses.append(analysis)
        records.append(analysis.record)

    transfers = []
    by_model: dict[str, list[StoreAnalysis]] = {}
    for analysis in analyses:
        by_model.setdefault(analysis.named.model, []).append(analysis)
    for group in by_model.values():
        if len(group) > 1:
            transfers.append(
                transfer_matrix(group, pooling=pooling, n_bootstrap=n_bootstrap, seed=seed)
            )

    primary = analyses[0].record if analyses else None
    beats = [r["probe_minus_confidence"]["ci"][0] > 0 for r in records if "skipped" not in r]
    return {
        "experiment": EXPERIMENT,
        "metric": "heldout_balanced_accuracy_at_selected_layer",
        "value": primary["selected"]["balanced_accuracy"] if primary else None,
        "ci": primary["selected"]["ci"] if primary else [None, None],
        "ci_level": CI_LEVEL,
        "primary": {"model": primary["model"], "task": primary["task"]} if primary else None,
        "n": primary["n_test"] if primary else 0,
        "seed": seed,
        "date": date,
        "duration_s": round(time.perf_counter() - started, 3),
        "n_stores": len(records),
        "n_analysed": len(analyses),
        "n_beating_confidence": int(sum(beats)),
        "settings": {
            "pooling": pooling,
            "layers": None if layers is None else list(layers),
            "n_samples": n_samples,
            "test_fraction": test_fraction,
            "cv_folds": cv_folds,
            "Cs": Cs if isinstance(Cs, int) else list(Cs),
            "n_bootstrap": n_bootstrap,
            "n_bins": n_bins,
            "group_key": group_key,
        },
        "stores": records,
        "transfer": transfers,
        "comparison": primary["comparison"] if primary else None,
    }


def figure_data(results: Mapping[str, Any]) -> dict[str, Any]:
    """What a later figure needs: curves over layers, reliability data, transfer matrices."""
    curves = []
    for r in results["stores"]:
        if "skipped" in r:
            continue
        curves.append(
            {
                "model": r["model"],
                "task": r["task"],
                "layer": [row["layer"] for row in r["layers"]],
                "balanced_accuracy": [row["balanced_accuracy"] for row in r["layers"]],
                "ci": [row["ci"] for row in r["layers"]],
                "auroc": [row["auroc"] for row in r["layers"]],
                "brier": [row["brier"] for row in r["layers"]],
                "ece": [row["ece"] for row in r["layers"]],
                "confidence_balanced_accuracy": r["baselines"]["confidence"]["balanced_accuracy"],
                "confidence_auroc": r["baselines"]["confidence"]["auroc"],
                "selected_layer": r["selected_layer"],
                "reliability": r["selected"]["calibration"]["reliability"],
                "confidence_reliability": r["baselines"]["confidence"]["calibration"][
                    "reliability"
                ],
            }
        )
        roc = r.get("roc")
        if roc and roc["probe"] and roc["confidence"]:
            curves[-1]["roc"] = roc
    return {"curves": curves, "transfer": results["transfer"]}


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table, ``n/a`` for None or NaN."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def fmt_ci(ci: Sequence[Any] | None) -> str:
    """An interval as ``[low, high]``."""
    if ci is None:
        return "[n/a, n/a]"
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def summary_markdown(results: Mapping[str, Any]) -> str:
    """The person-readable summary of an error_prediction_extended results dictionary."""
    lines = [
        "# Error prediction across layers, with calibration and task transfer",
        "",
        f"- Date: {results['date']}; seed {results['seed']}; {fmt(results['duration_s'], 1)} s",
        f"- Stores analysed: {results['n_analysed']} of {results['n_stores']}",
        "- Probe: standardised L2 logistic regression (PM2's, balanced class weights) for balanced "
        "accuracy and AUROC; the same without class weights for probabilities (calibration). "
        "Layer selected by inner-CV log loss on the training items.",
        "",
    ]
    for r in results["stores"]:
        lines += [f"## {r['model']} on {r['task']}", ""]
        if "skipped" in r:
            lines += [f"Skipped: {r['skipped']}.", ""]
            continue
        base = r["baselines"]
        sel = r["selected"]
        diff = r["probe_minus_confidence"]
        lines += [
            f"{r['n_train']} training and {r['n_test']} held-out items; the model is right on "
            f"{fmt(100 * r['share_correct'], 1)}% of them. Selected layer {r['selected_layer']} "
            f"of 0..{r['n_layers']}.",
            "",
            "| layer | balanced acc. | 95% CI | AUROC | Brier | ECE |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in r["layers"]:
            mark = " *" if row["layer"] == r["selected_layer"] else ""
            lines.append(
                f"| {row['layer']}{mark} | {fmt(row['balanced_accuracy'])} | {fmt_ci(row['ci'])} "
                f"| {fmt(row['auroc'])} | {fmt(row['brier'])} | {fmt(row['ece'])} |"
            )
        conf = base["confidence"]
        lines += [
            "",
            "| predictor (selected layer) | balanced acc. | AUROC | Brier | ECE |",
            "| --- | --- | --- | --- | --- |",
            f"| probe | {fmt(sel['balanced_accuracy'])} {fmt_ci(sel['ci'])} | {fmt(sel['auroc'])} "
            f"| {fmt(sel['calibration']['brier'])} | {fmt(sel['calibration']['ece'])} |",
            f"| output confidence | {fmt(conf['balanced_accuracy'])} {fmt_ci(conf['ci'])} "
            f"| {fmt(conf['auroc'])} | {fmt(conf['calibration']['brier'])} "
            f"| {fmt(conf['calibration']['ece'])} |",
            f"| majority class | {fmt(base['majority']['balanced_accuracy'])} | 0.500 "
            f"| {fmt(sel['calibration']['brier_base_rate'])} (base rate) | n/a |",
            "",
            f"Probe minus confidence: balanced accuracy {fmt(diff['balanced_accuracy'])} "
            f"{fmt_ci(diff['ci'])}, AUROC {fmt(diff['auroc'])} {fmt_ci(diff['auroc_ci'])}. "
            + (
                "The probe beats the output confidence (the interval excludes zero)."
                if diff["ci"][0] > 0
                else "The probe does not reliably beat the output confidence."
            ),
            "",
        ]
        groups = r.get("by_group")
        if groups:
            lines += [
                f"By `{groups['key']}` ({groups['method']}, layer {groups['layer']}):",
                "",
                "| group | n | model accuracy | mean P(correct) | probe accuracy | confidence |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for g in groups["groups"]:
                lines.append(
                    f"| {g['group']} | {g['n']} | {fmt(g['model_accuracy'])} "
                    f"| {fmt(g['mean_p_correct'])} | {fmt(g['probe_accuracy'])} "
                    f"| {fmt(g['mean_confidence'])} |"
                )
            lines.append("")
    for t in results["transfer"]:
        tasks = t["tasks"]
        lines += [
            f"## Task transfer for {t['model']} (balanced accuracy; rows trained, columns tested)",
            "",
            "| trained on \\ tested on | " + " | ".join(tasks) + " |",
            "| --- |" + " --- |" * len(tasks),
        ]
        for i, task in enumerate(tasks):
            cells = [
                f"{fmt(t['balanced_accuracy'][i][j])} {fmt_ci(t['balanced_accuracy_ci'][i][j])}"
                for j in range(len(tasks))
            ]
            lines.append(f"| {task} (L{t['source_layers'][task]}) | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Command-line helpers shared by the three scripts of branch 2B
# --------------------------------------------------------------------------------------------

_NONE_WORDS = {"", "none", "null", "all", "auto"}


def open_stores(paths: str | Sequence[str]) -> list[NamedStore]:
    """Open activation stores from folders ``.../{model}/{task}`` (comma-separated or a list).

    The model and task names are the folder's parent and own name, as the workflow lays out
    ``results/activations/{model}/{task}``.
    """
    items = [p for p in (paths.split(",") if isinstance(paths, str) else paths) if p.strip()]
    if not items:
        raise ValueError("no activation stores given")
    out = []
    for item in items:
        path = Path(item.strip())
        out.append(NamedStore(model=path.parent.name, task=path.name, store=ActivationStore(path)))
    return out


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every 2B script that reads activation stores shares (its own come after)."""
    parser.add_argument("--stores", required=True, help="comma-separated store folders")
    parser.add_argument("--pooling", default="last", help="pooled activations of the probe")
    parser.add_argument("--n-samples", default="all", help="items per store (default all)")
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--Cs", type=int, default=10, help="penalties on the inner-CV grid")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", required=True, type=Path)


def write_store_experiment(
    output_dir: Path,
    results: Mapping[str, Any],
    stores: Sequence[NamedStore],
    *,
    seed: int,
    figures: Mapping[str, Any],
    summary: str,
) -> None:
    """results.json, config.json (stores, models, tasks, settings, seed), summary.md and
    figure_data.json of a store-reading 2B experiment."""
    config = {
        "experiment": results["experiment"],
        "stores": [str(s.store.path) for s in stores],
        "models": sorted({s.model for s in stores}),
        "tasks": sorted({s.task for s in stores}),
        **results["settings"],
        "seed": seed,
    }
    atomic_write_json(output_dir / "figure_data.json", figures)
    write_experiment(output_dir, results, config, summary)


def optional_int(text: str) -> int | None:
    """An integer, or None for ``all``/``auto``/``none``/``null`` (how params pass "unset")."""
    if text.strip().lower() in _NONE_WORDS:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer or 'auto'/'all', got {text!r}") from None


def optional_layers(text: str) -> list[int] | None:
    """Comma-separated layer indices, or None for all layers."""
    if text.strip().lower() in _NONE_WORDS:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--layers must be comma-separated integers or 'all', got {text!r}"
        ) from None


def experiment_pairs(
    name: str,
    section: Mapping[str, Any],
    models: Sequence[str],
    tasks: Sequence[str],
) -> list[tuple[str, str]]:
    """The (model, task) stores an experiment section reads: its models x tasks.

    ``null`` models/tasks mean every configured one. Raises ValueError naming the key of an
    undefined model or task.
    """
    chosen = {"models": section.get("models") or list(models), "tasks": section.get("tasks")}
    chosen["tasks"] = chosen["tasks"] or list(tasks)
    for key, defined in (("models", models), ("tasks", tasks)):
        for index, value in enumerate(chosen[key]):
            if value not in defined:
                raise ValueError(
                    f"experiments.{name}.{key}[{index}]: {value!r} is not defined "
                    f"(defined {key}: {', '.join(defined)})"
                )
    return [(model, task) for model in chosen["models"] for task in chosen["tasks"]]
