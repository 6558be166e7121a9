"""Branch 2B, experiment 1: PM2's correctness probe at every layer, calibration and transfer.

For each activation store (one model on one task) the items are split exactly as PM2 splits them
(the same seeded subsample, then a split stratified by correctness). At every layer two probes are
fitted on the training items only:

- the PM2 probe (:class:`actspace.methods.probes.LinearProbe`, balanced class weights):
  held-out balanced accuracy and AUROC, the curve over layers;
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

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from actspace.branches.error_prediction.calibration import calibration
from actspace.branches.error_prediction.groups import (
    N_FOLDS,
    group_table,
    item_groups,
    out_of_fold,
)
from actspace.branches.error_prediction.intervals import CI_LEVEL, defined_ci, difference
from actspace.branches.error_prediction.probe import (
    inner_cv_score,
    make_probe,
    positive_probability,
)
from actspace.branches.error_prediction.steps import store_split
from actspace.core import criteria
from actspace.core.resampling import bootstrap_ci, paired_difference_ci
from actspace.core.results import binary_comparison, now
from actspace.core.splits import OneSidedAnswers, Split
from actspace.core.store import NamedStore, stored_layers
from actspace.methods.probes import (
    LinearProbe,
    accuracy,
    auroc,
    balanced_accuracy,
    confidence_baseline,
    majority_baseline,
    max_choice_probability,
)
from actspace.plan import experiment

EXPERIMENT = experiment("error_prediction_extended").name


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
    cv_folds: int,
    Cs: int | Sequence[float],
    seed: int,
    n_bootstrap: int,
    n_bins: int,
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
    layers: Sequence[int] | None,
    pooling: str,
    n_samples: int | None,
    test_fraction: float,
    cv_folds: int,
    Cs: int | Sequence[float],
    n_bootstrap: int,
    n_bins: int,
    group_key: str | None,
    seed: int,
) -> StoreAnalysis:
    """The per-layer curve, calibration, baselines and group table of one store."""
    store = named.store
    n_layers = int(store.n_layers)
    chosen_layers = stored_layers(store) if layers is None else [int(k) for k in layers]
    bad = [k for k in chosen_layers if not 0 <= k <= n_layers]
    if bad:
        raise ValueError(f"layer {bad[0]} out of range 0..{n_layers} for {named.model}")
    split = store_split(store, n_samples=n_samples, test_fraction=test_fraction, seed=seed)
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
            X,
            y,
            C=selected.probe.C_,
            calibrated_C=selected.calibrated.C_,
            seed=seed,
            split_groups=split.groups,
        )
        group_record = {
            "key": group_key,
            "layer": selected.layer,
            "method": f"out-of-fold predictions over all items ({N_FOLDS} stratified folds)",
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
    pooling: str,
    n_bootstrap: int,
    seed: int,
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
    layers: Sequence[int] | None,
    pooling: str,
    n_samples: int | None,
    test_fraction: float,
    cv_folds: int,
    Cs: int | Sequence[float],
    n_bootstrap: int,
    n_bins: int,
    group_key: str | None,
    seed: int,
) -> dict[str, Any]:
    """Per store the layer curve, calibration and baselines; per model the transfer matrix.

    The keywords are the keys of ``experiments.error_prediction_extended`` (an empty
    ``group_key``: no group table). A store whose answers are too one-sided for a probe is
    recorded with ``skipped`` and its reason instead of failing the whole experiment. The
    headline (``value``, ``ci``) is the held-out balanced accuracy at the selected layer of the
    first store that could be analysed.
    """
    if not stores:
        raise ValueError("error_prediction_extended needs at least one store")
    group_key = group_key or None
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
    selection = (
        f"layer {primary['selected_layer']} of {primary['model']} on {primary['task']}: the "
        f"best inner cross-validated log loss of the unweighted probe on the "
        f"{primary['n_train']} training items; the held-out items choose nothing"
        if primary
        else "no store could be analysed"
    )
    return {
        "experiment": EXPERIMENT,
        "metric": "heldout_balanced_accuracy_at_selected_layer",
        "value": primary["selected"]["balanced_accuracy"] if primary else None,
        "ci": primary["selected"]["ci"] if primary else [None, None],
        "ci_level": CI_LEVEL,
        **criteria.held_out_record(primary is not None, selection),
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
