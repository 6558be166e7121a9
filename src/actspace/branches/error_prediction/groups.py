"""The correctness probe per group of items, where the items carry a group in their metadata.

The built-in tasks carry ``bucket`` (``frequent``/``rare``/``unseen``: how often the fact was
stated in training). Groups are small, so the table uses out-of-fold predictions over all items
of the split rather than the held-out items alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from actspace.branches.error_prediction.probe import make_probe, positive_probability
from actspace.core.splits import grouped_folds
from actspace.core.store import StoreLike

#: The order in which known group values are listed (the built-in tasks' frequency buckets).
KNOWN_GROUP_ORDER = ("frequent", "rare", "unseen")
#: Folds of the out-of-fold predictions.
N_FOLDS = 5


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
    n_folds: int = N_FOLDS,
    seed: int,
    split_groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out predictions for every item: each from probes not trained on it (k folds).

    The penalties are the ones chosen at the selected layer, so each fold fits once. Items that
    share one of ``split_groups`` (the store's item groups) stay in one fold. Returns
    (balanced probe's predicted correctness, unweighted probe's P(correct)).
    """
    X = np.asarray(X, dtype=np.float64)
    counts = np.bincount(y.astype(int), minlength=2)
    n_splits = int(min(n_folds, counts.min()))
    if split_groups is None or np.unique(split_groups).size == y.size:
        parts = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(X, y)
    else:
        folds = grouped_folds(
            y.size, n_folds=n_splits, n_repeats=1, seed=seed, groups=split_groups, stratify=y
        )
        parts = [(fold.train, fold.test) for fold in folds]
    pred = np.zeros(y.size, dtype=bool)
    prob = np.zeros(y.size)
    for train, test in parts:
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
