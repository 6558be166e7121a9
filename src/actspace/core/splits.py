"""Train/test splits of a store's items by the model's correctness.

Every experiment that fits a probe of "is the model right?" splits its items the same way: a seeded
subsample of ``n_samples`` items, then a train/test split stratified by correctness (sklearn's
``train_test_split`` with the same seed), grouped where items share a group (an entity, a pair of
operands, a HellaSwag source), so that no test item is a near-copy of a training item. With the
same seed, ``n_samples``, ``test_fraction`` and groups two experiments hold out the same items, so
their held-out numbers are about the same items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, train_test_split

#: Smallest count of correct and of incorrect answers a correctness probe needs.
MIN_PER_CLASS = 6


class OneSidedAnswers(ValueError):
    """Too few correct or too few incorrect answers for a correctness probe."""


@dataclass(frozen=True)
class Split:
    """The items one experiment uses and their held-out split.

    ``items`` are store indices (sorted); ``y`` their correctness; ``train``/``test`` are positions
    into ``items``; ``groups`` the items' group labels when the split was grouped (else None).
    """

    items: np.ndarray
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray
    groups: np.ndarray | None = None

    @property
    def y_train(self) -> np.ndarray:
        return self.y[self.train]

    @property
    def y_test(self) -> np.ndarray:
        return self.y[self.test]


def correctness_items(
    correct: np.ndarray,
    *,
    n_samples: int | None = None,
    seed: int = 0,
    min_per_class: int = MIN_PER_CLASS,
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded subsample of ``n_samples`` items (None: all) and their correctness.

    The subsample draws from ``numpy.random.default_rng(seed)`` (nothing is drawn when every item
    is used). Raises :class:`OneSidedAnswers` when either class has fewer than ``min_per_class``
    items: a correctness probe has nothing to learn from one side.
    """
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
    return items, y


def correctness_split(
    correct: np.ndarray,
    *,
    n_samples: int | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    min_per_class: int = MIN_PER_CLASS,
    groups: np.ndarray | None = None,
) -> Split:
    """A seeded subsample of ``n_samples`` items (None: all), then a stratified train/test split.

    The subsample is :func:`correctness_items`'s. ``groups`` (one label per store item, as
    :func:`actspace.core.groups.store_groups` gives) keeps items that share a group on one side:
    the split is then :func:`grouped_split`'s (stratified as far as the groups allow). Without
    groups, or when every subsampled item is its own group, the split is sklearn's
    ``train_test_split`` stratified by correctness with ``random_state=seed``, so stores whose
    items share nothing (MMLU, TruthfulQA) hold out exactly the items they held out before.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    items, y = correctness_items(
        correct, n_samples=n_samples, seed=seed, min_per_class=min_per_class
    )
    labels = None
    if groups is not None:
        all_labels = np.asarray(groups)
        if all_labels.shape[0] != np.asarray(correct).shape[0]:
            raise ValueError(
                f"groups must hold one label per item, got {all_labels.shape[0]} for "
                f"{np.asarray(correct).shape[0]}"
            )
        labels = all_labels[items]
    if labels is None or np.unique(labels).size == labels.size:
        train, test = train_test_split(
            np.arange(y.size), test_size=test_fraction, stratify=y, random_state=seed
        )
    else:
        train, test = grouped_split(
            y.size, test_fraction=test_fraction, seed=seed, groups=labels, stratify=y
        )
    return Split(items=items, y=y, train=np.sort(train), test=np.sort(test), groups=labels)


@dataclass(frozen=True)
class Fold:
    """One fit of repeated cross-fitting: positions of its training and held-out items."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray


def _group_codes(groups: np.ndarray | None, n: int) -> np.ndarray:
    """Integer group codes for ``n`` items (every item its own group when ``groups`` is None)."""
    if groups is None:
        return np.arange(n)
    labels = np.asarray(groups)
    if labels.shape[0] != n:
        raise ValueError(f"groups must hold one label per item, got {labels.shape[0]} for {n}")
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def grouped_folds(
    n: int,
    *,
    n_folds: int,
    n_repeats: int,
    seed: int,
    groups: np.ndarray | None = None,
    stratify: np.ndarray | None = None,
) -> list[Fold]:
    """``n_repeats`` seeded partitions of ``n`` items into ``n_folds`` folds, every item held out
    once per repeat and every group inside one fold.

    With ``stratify`` (class labels) the folds keep the classes' shares as far as the groups
    allow (scikit-learn's ``StratifiedGroupKFold``); without, groups are dealt to folds in a
    seeded random order (``GroupKFold`` with shuffling). Repeat ``r`` uses seed ``seed + r``.
    """
    codes = _group_codes(groups, n)
    if n_folds < 2 or n_repeats < 1:
        raise ValueError(f"need n_folds >= 2 and n_repeats >= 1, got {n_folds} and {n_repeats}")
    if np.unique(codes).size < n_folds:
        raise ValueError(
            f"{n_folds} folds need at least {n_folds} groups of items, got {np.unique(codes).size}"
        )
    folds = []
    for repeat in range(n_repeats):
        if stratify is not None:
            splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed + repeat)
            parts = splitter.split(np.zeros(n), np.asarray(stratify), codes)
        else:
            splitter = GroupKFold(n_folds, shuffle=True, random_state=seed + repeat)
            parts = splitter.split(np.zeros(n), groups=codes)
        for fold, (train, test) in enumerate(parts):
            folds.append(Fold(repeat, fold, np.sort(train), np.sort(test)))
    return folds


def grouped_split(
    n: int,
    *,
    test_fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
    stratify: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One seeded split of ``n`` items into (train, test) positions with every group on one side.

    About ``test_fraction`` of the items are held out: the first of ``round(1 / test_fraction)``
    grouped (and, with ``stratify``, stratified) folds. Without groups this is a plain
    (stratified) random split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    n_folds = max(2, int(round(1.0 / test_fraction)))
    first = grouped_folds(
        n, n_folds=n_folds, n_repeats=1, seed=seed, groups=groups, stratify=stratify
    )[0]
    return first.train, first.test


def group_order(groups: np.ndarray | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded random order of ``n`` positions in which the members of each group are adjacent.

    Groups are drawn in random order and each contributes its members in place. With every item
    its own group (or ``groups`` None) this is exactly ``rng.permutation(n)``, so experiments whose
    items share nothing split as they always did.
    """
    codes = _group_codes(groups, n)
    n_codes = int(codes.max()) + 1 if n else 0
    if n_codes == n:
        return rng.permutation(n)
    return np.concatenate([np.flatnonzero(codes == g) for g in rng.permutation(n_codes)])


def group_cut(order: np.ndarray, groups: np.ndarray | None, size: int) -> int:
    """The cut of ``order`` nearest to ``size`` (ties: the smaller) that splits no group: the
    first ``cut`` positions and the rest then share no group (``order`` from :func:`group_order`).
    """
    codes = _group_codes(groups, len(order))[np.asarray(order)]
    bounds = [0, *(i for i in range(1, len(codes)) if codes[i] != codes[i - 1]), len(codes)]
    return min(bounds, key=lambda b: (abs(b - size), b))
