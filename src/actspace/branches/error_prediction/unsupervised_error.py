"""Branch 2B, experiment 2: Contrast-Consistent Search (Burns et al. 2022) for the model's errors.

The statements come from the per-choice activations of the store (the residual stream at each
choice's last token, i.e. the question followed by that choice): each choice is the statement
"the answer is this choice", exactly one of them true (:mod:`actspace.methods.ccs`). CCS is
fitted on the training items without labels. CCS's answer to an item is its most believed
choice, and the model is predicted right when it gave that answer (the item's score, the
paper's ``(p(x+) + 1 - p(x-)) / 2`` of the chosen answer against its strongest rival, is then at
least one half): a decision rule that needs no labels.

With two choices per item CCS cannot tell ``w`` from ``-w``; the sign is then fixed without
labels by a convention: the score must rise with the model's output confidence (the largest
choice probability) on the training items (Spearman correlation non-negative). With more choices
the loss fixes the sign. The controls that the literature's critiques ask for (Farquhar et al.
2023; Emmons 2023) are computed at the headline layer: the top principal component of the
training contrast differences (chosen answer minus the mean of the other choices, normalised)
and seeded random unit directions, each used as CCS's direction with everything else as CCS
has it, and the model's output confidence. The reference is a supervised probe (PM2's estimator)
on the same contrast differences, and PM2's pooled probe at the same layer. Success is the
plan's ratio AND beating the three controls (:mod:`.unsupervised_criteria`).

The headline layer (``layer: auto``) is the one whose supervised contrast probe has the best
inner cross-validated log loss on the training items: training labels only, so the test items,
and their labels, choose nothing (``held_out``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actspace.branches.error_prediction.intervals import CI_LEVEL, item_ci
from actspace.branches.error_prediction.probe import inner_cv_score, make_probe
from actspace.branches.error_prediction.steps import layer_choice, store_split
from actspace.branches.error_prediction.unsupervised_criteria import (
    ccs_criteria,
    overall_verdict,
    part_verdict,
    ratio_of_balanced_accuracy,
)
from actspace.core import criteria
from actspace.core.results import binary_comparison, now
from actspace.core.splits import OneSidedAnswers, Split
from actspace.core.store import NamedStore, stored_layers
from actspace.methods.ccs import (
    CCS,
    ChoiceSets,
    choice_sets,
    contrast_differences,
    orientation,
    sign_is_free,
)
from actspace.methods.probes import (
    accuracy,
    auroc,
    balanced_accuracy,
    classification_scores,
    confidence_baseline,
    majority_baseline,
    max_choice_probability,
)
from actspace.plan import experiment

EXPERIMENT = experiment("unsupervised_error").name


# --------------------------------------------------------------------------------------------
# One store, one layer
# --------------------------------------------------------------------------------------------


def random_directions(n: int, d: int, seed: int) -> np.ndarray:
    """``n`` seeded random unit directions in ``d`` dimensions, [n, d]."""
    draws = np.random.default_rng(seed).normal(size=(n, d))
    return draws / np.linalg.norm(draws, axis=1, keepdims=True)


@dataclass
class Fold:
    """One layer's statements split into training and held-out items, with the sign reference."""

    train: ChoiceSets
    test: ChoiceSets
    conf_train: np.ndarray  # output confidence of the training items (no labels)
    y_test: np.ndarray

    @classmethod
    def of(cls, sets: ChoiceSets, confidence: np.ndarray, split: Split) -> Fold:
        return cls(
            sets.subset(split.train), sets.subset(split.test), confidence[split.train], split.y_test
        )

    def scores(self, probe: CCS) -> tuple[np.ndarray, bool]:
        """The probe's held-out scores, oriented as CCS's are, and whether they were flipped.

        Where the loss leaves the sign open (two choices per item) the score must rise with
        output confidence on the training items; elsewhere the loss has fixed it.
        """
        raw = probe.predict_proba(self.test)
        if not sign_is_free(self.train):
            return raw, False
        flipped = orientation(probe.predict_proba(self.train), self.conf_train) < 0
        return (1.0 - raw if flipped else raw), bool(flipped)


@dataclass
class LayerResult:
    """One layer's record and the held-out predictions the headline needs."""

    layer: int
    record: dict[str, Any]
    ccs: CCS
    ccs_pred: np.ndarray
    ccs_score: np.ndarray
    supervised_pred: np.ndarray
    supervised_cv: float  # training items only: inner-CV neg. log loss


def analyse_layer(
    fold: Fold,
    ccs: CCS,
    y_train: np.ndarray,
    layer: int,
    *,
    cv_folds: int,
    Cs: int | Sequence[float],
    seed: int,
) -> LayerResult:
    """CCS (fitted on ``fold.train``) and the supervised contrast probe at one layer.

    Only the supervised probe reads labels, and only the training items' (``y_train``); the
    held-out labels only score.
    """
    test_score, flipped = fold.scores(ccs)
    ccs_pred = test_score >= 0.5

    diff_train = contrast_differences(ccs.normaliser_.transform(fold.train), fold.train)
    diff_test = contrast_differences(ccs.normaliser_.transform(fold.test), fold.test)
    supervised = make_probe(balanced=True, cv_folds=cv_folds, Cs=Cs, seed=seed)
    supervised.fit(diff_train, y_train)
    sup_pred = supervised.predict(diff_test).astype(bool)
    sup_score = supervised.decision_function(diff_test)

    record = {
        "layer": layer,
        "ccs": {
            **classification_scores(fold.y_test, ccs_pred, test_score),
            "train_loss": ccs.loss_,
            "test_loss": ccs.loss(fold.test),
            "restart_losses": ccs.restart_losses_.tolist(),
            "flipped": flipped,
            "share_predicted_correct": float(ccs_pred.mean()),
        },
        "supervised_contrast": {
            **classification_scores(fold.y_test, sup_pred, sup_score),
            "C": supervised.C_,
            "inner_cv_log_loss": -inner_cv_score(supervised),
        },
    }
    return LayerResult(
        layer=layer,
        record=record,
        ccs=ccs,
        ccs_pred=ccs_pred,
        ccs_score=test_score,
        supervised_pred=sup_pred,
        supervised_cv=inner_cv_score(supervised),
    )


@dataclass
class Controls:
    """CCS along fixed directions at the headline layer: the top PC and random directions."""

    pc_pred: np.ndarray
    random_hits: np.ndarray | None  # per held-out item: share of the random directions right
    record: dict[str, Any]


def direction_controls(
    fold: Fold,
    ccs: CCS,
    *,
    n_random: int,
    n_epochs: int,
    lr: float,
    weight_decay: float,
    seed: int,
) -> Controls:
    """The top principal component of the training contrast differences (Emmons 2023) and
    ``n_random`` seeded random unit directions, each used exactly as CCS uses its own direction
    (:meth:`actspace.methods.ccs.CCS.fit_along`: same normalisation, loss, optimiser, sign rule
    and decision rule; only the direction is not searched)."""
    diff_train = contrast_differences(ccs.normaliser_.transform(fold.train), fold.train)
    _, _, vt = np.linalg.svd(diff_train - diff_train.mean(axis=0), full_matrices=False)
    directions = np.vstack([vt[:1], random_directions(n_random, vt.shape[1], seed)])
    fitter = CCS(n_restarts=1, n_epochs=n_epochs, lr=lr, weight_decay=weight_decay, seed=seed)
    probes = fitter.fit_along(fold.train, directions)
    y = fold.y_test
    scored = [fold.scores(probe) for probe in probes]
    preds = np.array([score >= 0.5 for score, _ in scored]).reshape(len(probes), y.size)
    pc_score = scored[0][0]
    ba = np.asarray(balanced_accuracy(y, preds[1:]), dtype=float).reshape(-1)
    auc = [float(auroc(y, score)) for score, _ in scored[1:]]
    ccs_ba = float(balanced_accuracy(y, fold.scores(ccs)[0] >= 0.5))
    n = int(ba.size)
    record = {
        "top_principal_component": {
            **classification_scores(y, preds[0], pc_score),
            "train_loss": probes[0].loss_,
            "flipped": scored[0][1],
            "ccs_cosine": float(abs(vt[0] @ ccs.direction_)),
        },
        "random_directions": {
            "n": n,
            "balanced_accuracy_mean": float(ba.mean()) if n else None,
            "balanced_accuracy_sd": float(ba.std(ddof=1)) if n > 1 else None,
            "balanced_accuracy_p05": float(np.quantile(ba, 0.05)) if n else None,
            "balanced_accuracy_p95": float(np.quantile(ba, 0.95)) if n else None,
            "auroc_mean": float(np.nanmean(auc)) if n else None,
            "train_loss_mean": float(np.mean([p.loss_ for p in probes[1:]])) if n else None,
            "share_beaten_by_ccs": float(np.mean(ba < ccs_ba)) if n else None,
        },
    }
    hits = preds[1:] == np.asarray(y).astype(bool)
    return Controls(pc_pred=preds[0], random_hits=hits.mean(axis=0) if n else None, record=record)


# --------------------------------------------------------------------------------------------
# One store
# --------------------------------------------------------------------------------------------


def choose_layer(
    results: Sequence[LayerResult], layer: int | None, *, n_train: int
) -> tuple[LayerResult, str]:
    """The headline layer and one sentence on how it was chosen.

    ``layer=None``: the best inner-CV log loss of the supervised contrast probe, a number that
    only the training items (and their labels) make; the shallower layer wins ties. The
    held-out labels never enter (tests/test_unsupervised_error.py permutes them to check).
    """
    if layer is None:
        best = max(results, key=lambda r: (r.supervised_cv, -r.layer))
        return best, (
            f"layer {best.layer}: the best inner cross-validated log loss of the supervised "
            f"contrast probe on the {n_train} training items (their labels only); CCS, its sign "
            "and its baselines read no label, and the held-out items choose nothing"
        )
    best = next(r for r in results if r.layer == int(layer))
    return best, f"layer {best.layer}, configured; the held-out items choose nothing"


def ccs_vs_supervised(
    y_test: np.ndarray, ccs_pred: np.ndarray, supervised_pred: np.ndarray, *, where: str
) -> dict[str, Any]:
    """The main comparison, per held-out item: CCS right (a) vs supervised probe right (b)."""
    y = np.asarray(y_test).astype(bool)
    return binary_comparison(
        np.asarray(ccs_pred).astype(bool) == y,
        np.asarray(supervised_pred).astype(bool) == y,
        description=(
            f"whether CCS (unsupervised, {where}) predicts the model's correctness right, against "
            "the supervised probe on the same contrast features, per held-out item"
        ),
        label_a="CCS",
        label_b="supervised probe",
    )


def _ratio_of_accuracy(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, axis: int = -1
) -> np.ndarray | float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(accuracy(y, pred_a, axis=axis), np.asarray(accuracy(y, pred_b, axis=axis)))


def _above_chance_share(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, axis: int = -1
) -> np.ndarray | float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(
            balanced_accuracy(y, pred_a, axis=axis) - 0.5,
            np.asarray(balanced_accuracy(y, pred_b, axis=axis)) - 0.5,
        )


def analyse_split(
    named: NamedStore,
    split: Split,
    *,
    layer: int | None,
    curve_layers: Sequence[int],
    pooling: str,
    n_restarts: int,
    n_epochs: int,
    lr: float,
    weight_decay: float,
    n_random: int,
    cv_folds: int,
    Cs: int | Sequence[float],
    n_bootstrap: int,
    success_ratio: float,
    seed: int,
) -> dict[str, Any]:
    """CCS against its controls and the supervised probe on one split of one store's items."""
    store = named.store
    rows = store.scores()
    chosen = np.asarray([int(rows[int(i)]["pred"]) for i in split.items])
    logliks = store.logliks()
    item_logliks = [logliks[int(i)] for i in split.items]
    confidence = max_choice_probability(item_logliks)  # the sign rule's reference, no labels
    conf = confidence_baseline(item_logliks, split.y, split.train, split.test)

    def fold_at(k: int) -> Fold:
        acts, mask = store.choice_end(k)
        return Fold.of(choice_sets(acts[split.items], mask[split.items], chosen), confidence, split)

    folds = [fold_at(k) for k in curve_layers]
    fit = {"n_epochs": n_epochs, "lr": lr, "weight_decay": weight_decay, "seed": seed}
    probes = CCS(n_restarts=n_restarts, **fit).fit_each([fold.train for fold in folds])
    results = [
        analyse_layer(fold, probe, split.y_train, k, cv_folds=cv_folds, Cs=Cs, seed=seed)
        for fold, probe, k in zip(folds, probes, curve_layers, strict=True)
    ]
    best, selection = choose_layer(results, layer, n_train=int(split.train.size))
    best_fold = folds[curve_layers.index(best.layer)]
    controls = direction_controls(best_fold, best.ccs, n_random=n_random, **fit)

    y_test = split.y_test
    groups = None if split.groups is None else split.groups[split.test]
    ccs_pred, sup_pred = best.ccs_pred, best.supervised_pred
    parts = ccs_criteria(
        y_test,
        ccs_pred=ccs_pred,
        supervised_pred=sup_pred,
        random_hits=controls.random_hits,
        n_random=n_random,
        pc_pred=controls.pc_pred,
        confidence_pred=conf["predictions"],
        success_ratio=success_ratio,
        groups=groups,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )

    X = np.asarray(store.layer(best.layer, pooling), dtype=np.float64)[split.items]
    pooled = make_probe(balanced=True, cv_folds=cv_folds, Cs=Cs, seed=seed)
    pooled.fit(X[split.train], split.y_train)
    pooled_pred = pooled.predict(X[split.test]).astype(bool)

    def ci(statistic: Any, *arrays: np.ndarray) -> list[float | None]:
        return item_ci(statistic, *arrays, groups=groups, n_resamples=n_bootstrap, seed=seed)

    ccs_ba = float(balanced_accuracy(y_test, ccs_pred))
    sup_ba = float(balanced_accuracy(y_test, sup_pred))
    pooled_ba = float(balanced_accuracy(y_test, pooled_pred))
    plan_part = parts[0]
    headline = {
        "layer": best.layer,
        "layer_selection": selection,
        "ccs_balanced_accuracy": ccs_ba,
        "ccs_ci": ci(balanced_accuracy, y_test, ccs_pred),
        "ccs_auroc": best.record["ccs"]["auroc"],
        "ccs_auroc_ci": ci(auroc, y_test, best.ccs_score),
        "supervised_balanced_accuracy": sup_ba,
        "supervised_ci": ci(balanced_accuracy, y_test, sup_pred),
        "pooled_probe_balanced_accuracy": pooled_ba,
        "top_pc_balanced_accuracy": float(balanced_accuracy(y_test, controls.pc_pred)),
        "random_direction_balanced_accuracy": controls.record["random_directions"][
            "balanced_accuracy_mean"
        ],
        "confidence_balanced_accuracy": conf["balanced_accuracy"],
        "ratio": plan_part["value"],
        "ratio_ci": plan_part["ci"],
        "ratio_verdict": part_verdict(plan_part),
        "ratio_accuracy": float(
            accuracy(y_test, ccs_pred) / max(accuracy(y_test, sup_pred), 1e-12)
        ),
        "ratio_accuracy_ci": ci(_ratio_of_accuracy, y_test, ccs_pred, sup_pred),
        "ratio_to_pooled_probe": ccs_ba / pooled_ba if pooled_ba > 0 else None,
        "ratio_to_pooled_probe_ci": ci(ratio_of_balanced_accuracy, y_test, ccs_pred, pooled_pred),
        "above_chance_share": (ccs_ba - 0.5) / (sup_ba - 0.5) if sup_ba != 0.5 else None,
        "above_chance_share_ci": ci(_above_chance_share, y_test, ccs_pred, sup_pred),
        "ccs_beats_random_share": controls.record["random_directions"]["share_beaten_by_ccs"],
        "criteria": parts,
        "failed_criteria": [p["name"] for p in criteria.failed(parts)],
        "success": criteria.success(parts),
        "verdict": overall_verdict(parts),
        **criteria.held_out_record(True, selection),
    }
    return {
        "model": named.model,
        "task": named.task,
        "n_layers": int(store.n_layers),
        "n_items": int(split.y.size),
        "n_train": int(split.train.size),
        "n_test": int(split.test.size),
        "share_correct": float(split.y.mean()),
        "selected": headline,
        "selected_layer_detail": {**best.record, **controls.record},
        "majority": majority_baseline(split.y_train, y_test),
        "confidence": {
            "balanced_accuracy": conf["balanced_accuracy"],
            "auroc": conf["auroc"],
            "threshold": conf["threshold"],
            "description": "top-1 choice probability, thresholded on the training items",
        },
        "layers": [r.record for r in results],
        "comparison": ccs_vs_supervised(
            y_test, ccs_pred, sup_pred, where=f"{named.model} on {named.task}, layer {best.layer}"
        ),
    }


def analyse_store(
    named: NamedStore,
    *,
    layer: int | None,
    layers: Sequence[int] | None,
    n_samples: int | None,
    test_fraction: float,
    seed: int,
    **settings: Any,
) -> dict[str, Any]:
    """PM2's split of one store's items (grouped by core.groups), then :func:`analyse_split`.

    ``settings`` are the remaining keywords of :func:`analyse_split`.
    """
    store = named.store
    n_layers = int(store.n_layers)
    curve_layers = stored_layers(store) if layers is None else [int(k) for k in layers]
    if layer is not None and int(layer) not in curve_layers:
        curve_layers = sorted({*curve_layers, int(layer)})
    bad = [k for k in curve_layers if not 0 <= k <= n_layers]
    if bad:
        raise ValueError(f"layer {bad[0]} out of range 0..{n_layers} for {named.model}")
    split = store_split(store, n_samples=n_samples, test_fraction=test_fraction, seed=seed)
    return analyse_split(
        named, split, layer=layer, curve_layers=curve_layers, seed=seed, **settings
    )


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


def run_unsupervised_error(
    stores: Sequence[NamedStore],
    *,
    layer: int | str | None,
    layers: Sequence[int] | None,
    pooling: str,
    n_samples: int | None,
    test_fraction: float,
    n_restarts: int,
    n_epochs: int,
    lr: float,
    weight_decay: float,
    n_random: int,
    cv_folds: int,
    Cs: int | Sequence[float],
    n_bootstrap: int,
    success_ratio: float,
    seed: int,
) -> dict[str, Any]:
    """CCS on every store; the headline is the first analysable store's.

    The keywords are the keys of ``experiments.unsupervised_error`` (``layer``: an index, or
    ``auto``/None for the supervised contrast probe's best inner-CV layer on training items).
    """
    if not stores:
        raise ValueError("unsupervised_error needs at least one store")
    layer = layer_choice(layer)
    started, date = time.perf_counter(), now()
    records: list[dict[str, Any]] = []
    for named in stores:
        try:
            records.append(
                analyse_store(
                    named,
                    layer=layer,
                    layers=layers,
                    pooling=pooling,
                    n_samples=n_samples,
                    test_fraction=test_fraction,
                    n_restarts=n_restarts,
                    n_epochs=n_epochs,
                    lr=lr,
                    weight_decay=weight_decay,
                    n_random=n_random,
                    cv_folds=cv_folds,
                    Cs=Cs,
                    n_bootstrap=n_bootstrap,
                    success_ratio=success_ratio,
                    seed=seed,
                )
            )
        except OneSidedAnswers as error:
            records.append({"model": named.model, "task": named.task, "skipped": str(error)})
    analysed = [r for r in records if "skipped" not in r]
    primary = analysed[0] if analysed else None
    head = primary["selected"] if primary else None
    return {
        "experiment": EXPERIMENT,
        "metric": "ccs_over_supervised_balanced_accuracy",
        "value": head["ratio"] if head else None,
        "ci": head["ratio_ci"] if head else [None, None],
        "ci_level": CI_LEVEL,
        "threshold": success_ratio,
        "verdict": head["verdict"] if head else "INCONCLUSIVE",
        "ratio_verdict": head["ratio_verdict"] if head else "INCONCLUSIVE",
        "success": head["success"] if head else None,
        "criteria": head["criteria"] if head else [],
        "failed_criteria": head["failed_criteria"] if head else [],
        **criteria.held_out_record(
            head is not None,
            f"{primary['model']} on {primary['task']}, {head['selection']}"
            if primary and head
            else "no store could be analysed",
        ),
        "success_rule": (
            f"CCS / supervised balanced accuracy with its {100 * CI_LEVEL:g}% CI above "
            f"{success_ratio:g}, and CCS beats a random direction, the top principal component "
            "and the output confidence (paired CIs of the differences above 0)"
        ),
        "primary": {"model": primary["model"], "task": primary["task"]} if primary else None,
        "n": primary["n_test"] if primary else 0,
        "seed": seed,
        "date": date,
        "duration_s": round(time.perf_counter() - started, 3),
        "n_stores": len(records),
        "n_analysed": len(analysed),
        "n_success": int(sum(r["selected"]["success"] is True for r in analysed)),
        "settings": {
            "layer": "auto" if layer is None else int(layer),
            "layers": None if layers is None else list(layers),
            "pooling": pooling,
            "n_samples": n_samples,
            "test_fraction": test_fraction,
            "n_restarts": n_restarts,
            "n_epochs": n_epochs,
            "lr": lr,
            "weight_decay": weight_decay,
            "n_random": n_random,
            "cv_folds": cv_folds,
            "Cs": Cs if isinstance(Cs, int) else list(Cs),
            "n_bootstrap": n_bootstrap,
            "success_ratio": success_ratio,
            "statements": (
                "each choice is the statement 'the answer is this choice', exactly one true; "
                "the negation of a choice is 'one of the other choices' (sum of their p)"
            ),
            "sign_convention": "score rises with output confidence on training items (Spearman)",
            "decision_rule": (
                "predict correct when the chosen answer is CCS's most believed choice, i.e. "
                "(p_chosen + 1 - p_strongest_rival) / 2 >= 0.5"
            ),
            "random_direction_control": "expected balanced accuracy over the seeded directions",
        },
        "stores": records,
        "comparison": primary["comparison"] if primary else None,
    }
