"""PM2's correctness probe as branch 2B uses it: balanced for decisions, unweighted for P(correct).

Balanced class weights move a probe's probabilities towards one half, so they are not
probabilities of being right; the same probe without class weights gives them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from actspace.methods.probes import LinearProbe


def make_probe(
    *, balanced: bool, cv_folds: int, Cs: int | Sequence[float], seed: int
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
