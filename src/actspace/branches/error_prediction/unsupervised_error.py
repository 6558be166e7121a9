"""Branch 2B, experiment 2: Contrast-Consistent Search (Burns et al. 2022) for the model's errors.

Contrast pairs come from the per-choice activations of the store (the residual stream at each
choice's last token): for every item, the model's own chosen answer ``x+`` against each other
choice ``x-``. CCS (:mod:`actspace.methods.ccs`) is fitted on the training items' pairs without
labels. An item's score is the mean over its pairs of ``(p(x+) + 1 - p(x-)) / 2``, the
probability that the chosen answer is the true one; the item is predicted correct when it is at
least one half (CCS's own decision rule, which needs no labels).

CCS cannot tell ``w`` from ``-w``. The sign is fixed without labels by a convention: the score
must rise with the model's output confidence (the largest choice probability) on the training
items, i.e. their Spearman correlation must be non-negative. The baselines that the literature's
critiques ask for (Farquhar et al. 2023; Emmons 2023) use the same convention: the top principal
component of the training contrast differences, and many random directions, each projecting the
item's contrast difference ``x+ - mean(x-)`` and thresholded at zero (the training mean), and
the majority class. The reference is a supervised probe (PM2's estimator) on the same contrast
differences, and PM2's pooled probe at the same layer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actspace.branches.error_prediction.intervals import CI_LEVEL, defined_ci
from actspace.branches.error_prediction.probe import inner_cv_score, make_probe
from actspace.branches.error_prediction.steps import layer_choice
from actspace.core.groups import store_groups
from actspace.core.resampling import bootstrap_ci, verdict
from actspace.core.results import binary_comparison, now
from actspace.core.splits import OneSidedAnswers, Split, correctness_split
from actspace.core.store import NamedStore
from actspace.methods.ccs import CCS, contrast_pairs, item_means, orientation
from actspace.methods.probes import (
    accuracy,
    auroc,
    balanced_accuracy,
    classification_scores,
    majority_baseline,
    max_choice_probability,
)
from actspace.plan import experiment

EXPERIMENT = experiment("unsupervised_error").name


# --------------------------------------------------------------------------------------------
# One store, one layer
# --------------------------------------------------------------------------------------------


def _direction_baseline(
    direction: np.ndarray,
    diff_train: np.ndarray,
    diff_test: np.ndarray,
    conf_train: np.ndarray,
    y_test: np.ndarray,
) -> dict[str, Any]:
    sign = orientation(diff_train @ direction, conf_train)
    score = sign * (diff_test @ direction)
    return {**classification_scores(y_test, score > 0, score), "pred": score > 0}


@dataclass
class LayerResult:
    layer: int
    record: dict[str, Any]
    ccs_pred: np.ndarray
    ccs_score: np.ndarray
    supervised_pred: np.ndarray
    supervised_cv: float


def analyse_layer(
    acts: np.ndarray,
    mask: np.ndarray,
    chosen: np.ndarray,
    confidence: np.ndarray,
    split: Split,
    layer: int,
    *,
    n_restarts: int,
    n_epochs: int,
    lr: float,
    weight_decay: float,
    n_random: int,
    cv_folds: int,
    Cs: int | Sequence[float],
    seed: int,
) -> LayerResult:
    """CCS, its baselines and the supervised contrast probe at one layer.

    ``acts``/``mask``/``chosen``/``confidence`` are indexed by the split's item positions.
    """
    pairs = contrast_pairs(acts, mask, chosen)
    train_pairs, test_pairs = pairs.subset(split.train), pairs.subset(split.test)
    n_train, n_test = split.train.size, split.test.size
    y_test = split.y_test
    conf_train = confidence[split.train]

    ccs = CCS(
        n_restarts=n_restarts, n_epochs=n_epochs, lr=lr, weight_decay=weight_decay, seed=seed
    ).fit(train_pairs.x_pos, train_pairs.x_neg)
    train_score = item_means(
        ccs.predict_proba(train_pairs.x_pos, train_pairs.x_neg), train_pairs.item, n_train
    )
    flipped = orientation(train_score, conf_train) < 0
    if flipped:
        ccs.flip()
    test_score = item_means(
        ccs.predict_proba(test_pairs.x_pos, test_pairs.x_neg), test_pairs.item, n_test
    )
    ccs_pred = test_score >= 0.5

    # Contrast differences in the normalised space (training statistics), per item.
    norm_train = ccs.normaliser_.transform(train_pairs.x_pos, train_pairs.x_neg)
    norm_test = ccs.normaliser_.transform(test_pairs.x_pos, test_pairs.x_neg)
    pair_diff_train = norm_train[0] - norm_train[1]
    diff_train = item_means(pair_diff_train, train_pairs.item, n_train)
    diff_test = item_means(norm_test[0] - norm_test[1], test_pairs.item, n_test)

    _, _, vt = np.linalg.svd(pair_diff_train - pair_diff_train.mean(axis=0), full_matrices=False)
    pca = _direction_baseline(vt[0], diff_train, diff_test, conf_train, y_test)
    pca.pop("pred")
    rng = np.random.default_rng(seed)
    random_ba, random_auc = [], []
    for _ in range(n_random):
        direction = rng.normal(size=diff_train.shape[1])
        direction /= np.linalg.norm(direction)
        row = _direction_baseline(direction, diff_train, diff_test, conf_train, y_test)
        random_ba.append(row["balanced_accuracy"])
        random_auc.append(row["auroc"])
    random_ba_arr = np.asarray(random_ba)

    supervised = make_probe(balanced=True, cv_folds=cv_folds, Cs=Cs, seed=seed)
    supervised.fit(diff_train, split.y_train)
    sup_pred = supervised.predict(diff_test).astype(bool)
    sup_score = supervised.decision_function(diff_test)

    record = {
        "layer": layer,
        "n_pairs_train": int(train_pairs.item.size),
        "ccs": {
            **classification_scores(y_test, ccs_pred, test_score),
            "train_loss": ccs.loss_,
            "test_loss": ccs.loss(test_pairs.x_pos, test_pairs.x_neg),
            "restart_losses": ccs.restart_losses_.tolist(),
            "flipped": flipped,
            "share_predicted_correct": float(ccs_pred.mean()),
        },
        "supervised_contrast": {
            **classification_scores(y_test, sup_pred, sup_score),
            "C": supervised.C_,
        },
        "top_principal_component": pca,
        "random_directions": {
            "n": int(n_random),
            "balanced_accuracy_mean": float(random_ba_arr.mean()) if n_random else None,
            "balanced_accuracy_sd": float(random_ba_arr.std(ddof=1)) if n_random > 1 else None,
            "balanced_accuracy_p05": float(np.quantile(random_ba_arr, 0.05)) if n_random else None,
            "balanced_accuracy_p95": float(np.quantile(random_ba_arr, 0.95)) if n_random else None,
            "auroc_mean": float(np.nanmean(random_auc)) if n_random else None,
            "share_beaten_by_ccs": float(
                np.mean(random_ba_arr < float(balanced_accuracy(y_test, ccs_pred)))
            )
            if n_random
            else None,
        },
    }
    return LayerResult(
        layer=layer,
        record=record,
        ccs_pred=ccs_pred,
        ccs_score=test_score,
        supervised_pred=sup_pred,
        supervised_cv=inner_cv_score(supervised),
    )


# --------------------------------------------------------------------------------------------
# One store
# --------------------------------------------------------------------------------------------


def _ratio_of_balanced_accuracy(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, axis: int = -1
) -> np.ndarray | float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return balanced_accuracy(y, pred_a, axis=axis) / balanced_accuracy(y, pred_b, axis=axis)


def _ratio_of_accuracy(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, axis: int = -1
) -> np.ndarray | float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return accuracy(y, pred_a, axis=axis) / accuracy(y, pred_b, axis=axis)


def _above_chance_share(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, axis: int = -1
) -> np.ndarray | float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (balanced_accuracy(y, pred_a, axis=axis) - 0.5) / (
            balanced_accuracy(y, pred_b, axis=axis) - 0.5
        )


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


def _verdict_or_unknown(ci: Sequence[float | None], threshold: float) -> str:
    if ci[0] is None or ci[1] is None:
        return "INCONCLUSIVE"
    return verdict(ci[0], ci[1], threshold)


def analyse_store(
    named: NamedStore,
    *,
    layer: int | None,
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
    """CCS against its baselines and the supervised probe, at every layer and a chosen one.

    The items are PM2's split. With ``layer=None`` the headline layer is the one whose supervised
    contrast probe has the best inner-CV score on the training items (CCS itself never sees a
    label; the layer choice is shared so that both are compared at the same depth).
    """
    store = named.store
    n_layers = int(store.n_layers)
    curve_layers = list(range(n_layers + 1)) if layers is None else [int(k) for k in layers]
    if layer is not None and int(layer) not in curve_layers:
        curve_layers = sorted({*curve_layers, int(layer)})
    bad = [k for k in curve_layers if not 0 <= k <= n_layers]
    if bad:
        raise ValueError(f"layer {bad[0]} out of range 0..{n_layers} for {named.model}")
    split = correctness_split(
        store.correct(),
        n_samples=n_samples,
        test_fraction=test_fraction,
        seed=seed,
        groups=store_groups(store),
    )
    rows = store.scores()
    chosen = np.asarray([int(rows[int(i)]["pred"]) for i in split.items])
    logliks = store.logliks()
    confidence = max_choice_probability([logliks[int(i)] for i in split.items])

    results: list[LayerResult] = []
    for k in curve_layers:
        acts, mask = store.choice_end(k)
        results.append(
            analyse_layer(
                acts[split.items],
                mask[split.items],
                chosen,
                confidence,
                split,
                k,
                n_restarts=n_restarts,
                n_epochs=n_epochs,
                lr=lr,
                weight_decay=weight_decay,
                n_random=n_random,
                cv_folds=cv_folds,
                Cs=Cs,
                seed=seed,
            )
        )
    if layer is None:
        best = max(results, key=lambda r: (r.supervised_cv, -r.layer))
        selection = "best inner-CV score of the supervised contrast probe on training items"
    else:
        best = next(r for r in results if r.layer == int(layer))
        selection = "configured"

    y_test = split.y_test
    ccs_pred, sup_pred = best.ccs_pred, best.supervised_pred

    X = np.asarray(store.layer(best.layer, pooling), dtype=np.float64)[split.items]
    pooled = make_probe(balanced=True, cv_folds=cv_folds, Cs=Cs, seed=seed)
    pooled.fit(X[split.train], split.y_train)
    pooled_pred = pooled.predict(X[split.test]).astype(bool)

    def ci(statistic: Any, *arrays: np.ndarray) -> list[float | None]:
        # Ratios and AUROCs are undefined on some resamples of a small held-out set.
        return defined_ci(statistic, *arrays, n_resamples=n_bootstrap, seed=seed)

    def ba_ci(pred: np.ndarray) -> list[float]:
        return list(
            bootstrap_ci(balanced_accuracy, y_test, pred, n_resamples=n_bootstrap, seed=seed)
        )

    ccs_ba = float(balanced_accuracy(y_test, ccs_pred))
    sup_ba = float(balanced_accuracy(y_test, sup_pred))
    pooled_ba = float(balanced_accuracy(y_test, pooled_pred))
    ratio = ccs_ba / sup_ba if sup_ba > 0 else float("nan")
    ratio_ci = ci(_ratio_of_balanced_accuracy, y_test, ccs_pred, sup_pred)
    ccs_ci = ba_ci(ccs_pred)
    # Both at chance also gives a ratio near 1, so success needs CCS above chance as well: the
    # verdict is the ratio's, unless CCS's own interval does not lie above 0.5.
    ratio_verdict = _verdict_or_unknown(ratio_ci, success_ratio)
    above_chance = verdict(ccs_ci[0], ccs_ci[1], 0.5)
    overall = ratio_verdict if ratio_verdict != "PASS" else above_chance
    headline = {
        "layer": best.layer,
        "layer_selection": selection,
        "ccs_balanced_accuracy": ccs_ba,
        "ccs_ci": ccs_ci,
        "ccs_auroc": best.record["ccs"]["auroc"],
        "ccs_auroc_ci": ci(auroc, y_test, best.ccs_score),
        "supervised_balanced_accuracy": sup_ba,
        "supervised_ci": ba_ci(sup_pred),
        "pooled_probe_balanced_accuracy": pooled_ba,
        "ratio": ratio,
        "ratio_ci": ratio_ci,
        "ratio_verdict": ratio_verdict,
        "ccs_above_chance": above_chance,
        "ratio_accuracy": float(
            accuracy(y_test, ccs_pred) / max(accuracy(y_test, sup_pred), 1e-12)
        ),
        "ratio_accuracy_ci": ci(_ratio_of_accuracy, y_test, ccs_pred, sup_pred),
        "ratio_to_pooled_probe": ccs_ba / pooled_ba if pooled_ba > 0 else None,
        "ratio_to_pooled_probe_ci": ci(_ratio_of_balanced_accuracy, y_test, ccs_pred, pooled_pred),
        "above_chance_share": (ccs_ba - 0.5) / (sup_ba - 0.5) if sup_ba != 0.5 else None,
        "above_chance_share_ci": ci(_above_chance_share, y_test, ccs_pred, sup_pred),
        "ccs_beats_random_share": best.record["random_directions"]["share_beaten_by_ccs"],
        "verdict": overall,
        "success": overall == "PASS",
    }
    return {
        "model": named.model,
        "task": named.task,
        "n_layers": n_layers,
        "n_items": int(split.y.size),
        "n_train": int(split.train.size),
        "n_test": int(split.test.size),
        "share_correct": float(split.y.mean()),
        "selected": headline,
        "selected_layer_detail": best.record,
        "majority": majority_baseline(split.y_train, y_test),
        "layers": [r.record for r in results],
        "comparison": ccs_vs_supervised(
            y_test, ccs_pred, sup_pred, where=f"{named.model} on {named.task}, layer {best.layer}"
        ),
    }


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
    """CCS on every store; the headline is the first analysable store's ratio to supervised.

    The keywords are the keys of ``experiments.unsupervised_error`` (``layer``: an index, or
    ``auto``/None for the supervised contrast probe's best inner-CV layer).
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
        "success": bool(head["success"]) if head else False,
        "primary": {"model": primary["model"], "task": primary["task"]} if primary else None,
        "n": primary["n_test"] if primary else 0,
        "seed": seed,
        "date": date,
        "duration_s": round(time.perf_counter() - started, 3),
        "n_stores": len(records),
        "n_analysed": len(analysed),
        "n_success": int(sum(r["selected"]["success"] for r in analysed)),
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
            "sign_convention": "score rises with output confidence on training items (Spearman)",
            "decision_rule": "predict correct when the item's mean (p(x+) + 1 - p(x-))/2 >= 0.5",
        },
        "stores": records,
        "comparison": primary["comparison"] if primary else None,
    }
