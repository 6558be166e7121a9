"""Linear probes on activations, their metrics and the baselines they must beat.

:class:`LinearProbe` is a scikit-learn estimator: standardised features and an L2 logistic
regression whose inverse penalty ``C`` is chosen by stratified inner cross-validation on the data
passed to ``fit`` only. Classes are weighted inversely to their frequency, since the question it
answers ("is this answer correct?") is usually unbalanced; accordingly it is scored by balanced
accuracy. The metric functions are written with an ``axis`` argument so that
:func:`actspace.core.resampling.bootstrap_ci` runs them vectorised over thousands of resamples.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp, softmax
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

_LRCV_PARAMS = set(inspect.signature(LogisticRegressionCV.__init__).parameters)


def _l2_logistic_cv(**kwargs: Any) -> LogisticRegressionCV:
    """An L2 LogisticRegressionCV, spelled for the installed scikit-learn.

    scikit-learn 1.8 deprecated ``penalty`` in favour of ``l1_ratios``/``use_legacy_attributes``;
    older releases do not know the new names.
    """
    if "use_legacy_attributes" in _LRCV_PARAMS:
        kwargs.update(l1_ratios=(0.0,), use_legacy_attributes=False)
    else:
        kwargs.update(penalty="l2")
    return LogisticRegressionCV(**kwargs)


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Standardise, then L2 logistic regression with ``C`` chosen by inner cross-validation.

    Parameters
    ----------
    Cs : number of penalties on a log grid from 1e-4 to 1e4, or an explicit list.
    cv : number of stratified inner folds (reduced to the minority-class count when smaller).
    scoring : the inner-CV criterion; log loss is smoother than accuracy on small data.
    class_weight : ``"balanced"`` (default) or None.
    max_iter : iteration cap of the lbfgs solver.
    random_state : seed of the inner fold shuffling.
    n_threads : BLAS/OpenMP threads while fitting (None: leave as set). One by default: the fits
        are many and small, and spinning worker threads slow them down tenfold or more when other
        jobs share the cores.

    ``score`` returns balanced accuracy, the metric the pre-mortem reports. ``fit`` takes the
    items' ``groups`` (optional): the inner folds then keep a group on one side, so that the
    penalty is not chosen on near-copies of training items.
    """

    def __init__(
        self,
        Cs: int | Sequence[float] = 10,
        cv: int = 5,
        scoring: str = "neg_log_loss",
        class_weight: str | None = "balanced",
        max_iter: int = 5000,
        random_state: int = 0,
        n_threads: int | None = 1,
    ) -> None:
        self.Cs = Cs
        self.cv = cv
        self.scoring = scoring
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state
        self.n_threads = n_threads

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> LinearProbe:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise ValueError(f"X must be [items, features] matching y, got {X.shape}, {y.shape}")
        classes, counts = np.unique(y, return_counts=True)
        if classes.size != 2:
            raise ValueError(f"a probe needs exactly two classes, got {classes.tolist()}")
        if counts.min() < 2:
            raise ValueError(
                f"a probe needs at least 2 items of each class, got counts {counts.tolist()}"
            )
        folds = _inner_folds(X, y, groups, int(min(self.cv, counts.min())), self.random_state)
        self.pipeline_: Pipeline = make_pipeline(
            StandardScaler(),
            _l2_logistic_cv(
                Cs=self.Cs,
                cv=folds,
                scoring=self.scoring,
                class_weight=self.class_weight,
                max_iter=self.max_iter,
                solver="lbfgs",
            ),
        )
        with warnings.catch_warnings(), threadpool_limits(limits=self.n_threads):
            # Weak penalties on separable folds hit the iteration cap; CV then rejects them.
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            self.pipeline_.fit(X, y)
        self.classes_ = self.pipeline_.classes_
        self.C_ = float(np.ravel(self.pipeline_[-1].C_)[0])
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.decision_function(np.asarray(X, dtype=np.float64))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict_proba(np.asarray(X, dtype=np.float64))

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "pipeline_")
        return self.pipeline_.predict(np.asarray(X, dtype=np.float64))

    def score(self, X: np.ndarray, y: np.ndarray, sample_weight: None = None) -> float:
        """Balanced accuracy on ``(X, y)``."""
        y = np.asarray(y)
        return balanced_accuracy(y == self.classes_[1], self.predict(X) == self.classes_[1])


def _inner_folds(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int
) -> StratifiedKFold | list[tuple[np.ndarray, np.ndarray]]:
    """The inner CV's folds: stratified, and grouped when some items share a group (with every
    item its own group the folds are the ungrouped ones, so results do not move)."""
    plain = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    if groups is None:
        return plain
    labels = np.asarray(groups)
    if labels.shape[0] != y.shape[0]:
        raise ValueError(f"groups must hold one label per item, got {labels.shape[0]}, {y.size}")
    distinct = np.unique(labels).size
    if distinct == labels.size:
        return plain
    splitter = StratifiedGroupKFold(
        n_splits=min(n_splits, distinct), shuffle=True, random_state=seed
    )
    with warnings.catch_warnings():
        # Groups can leave a fold short of one class; the CV scores such a fold all the same.
        warnings.simplefilter("ignore", category=UserWarning)
        return list(splitter.split(X, y, labels))


def fit_fixed_probe(
    X: np.ndarray, y: np.ndarray, *, C: float, class_weight: str | None = "balanced"
) -> Pipeline:
    """Standardise, then L2 logistic regression at a fixed ``C``: one fit where
    :class:`LinearProbe` makes ``Cs x cv``, for ranking many layers cheaply (PM2's layer choice
    inside every cross-fitting fold)."""
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=C, class_weight=class_weight, max_iter=5000, solver="lbfgs"),
    )
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        model.fit(np.asarray(X, dtype=np.float64), np.asarray(y))
    return model


def _binary(values: np.ndarray | Sequence[Any]) -> np.ndarray:
    return np.asarray(values) > 0.5


def accuracy(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Share of agreeing binary labels along ``axis``."""
    return np.mean(_binary(y_true) == _binary(y_pred), axis=axis)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Mean of the true-positive and true-negative rates of binary labels along ``axis``.

    A resample that lacks one class scores the recall of the class it has (as scikit-learn does,
    with a warning there). Constant predictions score exactly 0.5 whenever both classes occur.
    """
    t = _binary(y_true)
    p = _binary(y_pred)
    pos = np.sum(t, axis=axis)
    neg = np.sum(~t, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.sum(t & p, axis=axis) / pos
        tnr = np.sum(~t & ~p, axis=axis) / neg
        rates = np.stack([np.asarray(tpr, dtype=float), np.asarray(tnr, dtype=float)])
        defined = np.isfinite(rates)
        out = np.where(defined, rates, 0.0).sum(axis=0) / defined.sum(axis=0)
    return float(out) if np.ndim(out) == 0 else out


def auroc(y_true: np.ndarray, scores: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN with one class."""
    t = _binary(y_true)
    s = np.asarray(scores, dtype=float)
    ranks = rankdata(s, axis=axis)
    n_pos = np.sum(t, axis=axis).astype(float)
    n_neg = np.sum(~t, axis=axis).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.sum(ranks * t, axis=axis) - n_pos * (n_pos + 1) / 2
        out = u / (n_pos * n_neg)
    out = np.where((n_pos > 0) & (n_neg > 0), out, np.nan)
    return float(out) if np.ndim(out) == 0 else out


def classification_scores(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Balanced accuracy, accuracy (of ``pred``) and AUROC (of ``score``) against ``y``."""
    return {
        "balanced_accuracy": float(balanced_accuracy(y, pred)),
        "accuracy": float(accuracy(y, pred)),
        "auroc": float(auroc(y, score)),
    }


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Always predict the training majority class: balanced accuracy 0.5, accuracy = its share."""
    train = _binary(y_train)
    majority = bool(np.mean(train) >= 0.5)
    pred = np.full(np.shape(y_test), majority)
    return {
        "majority_class": majority,
        "accuracy": float(accuracy(y_test, pred)),
        "balanced_accuracy": float(balanced_accuracy(y_test, pred)),
    }


def max_choice_probability(logliks: Sequence[Sequence[float]]) -> np.ndarray:
    """Output confidence per item: the largest softmax probability over its choice log-likelihoods.

    Items may have different numbers of choices.
    """
    out = np.empty(len(logliks))
    for i, values in enumerate(logliks):
        row = np.asarray(values, dtype=float)
        if row.size == 0:
            raise ValueError(f"item {i} has no choice log-likelihoods")
        out[i] = float(np.max(softmax(row)))
    return out


def best_threshold(scores: np.ndarray, y_true: np.ndarray) -> tuple[float, float]:
    """Threshold ``t`` maximising the balanced accuracy of ``scores >= t``; returns (t, score).

    Candidates are the observed scores and +inf (predict all negative); ties go to the lowest.
    """
    s = np.asarray(scores, dtype=float)
    t = _binary(y_true)
    candidates = np.append(np.unique(s), np.inf)
    pos = np.sort(s[t])
    neg = np.sort(s[~t])
    tp = pos.size - np.searchsorted(pos, candidates, side="left")
    tn = np.searchsorted(neg, candidates, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.stack([tp / pos.size, tn / neg.size]).astype(float)
    defined = np.isfinite(rates)
    ba = np.where(defined, rates, 0.0).sum(axis=0) / np.maximum(defined.sum(axis=0), 1)
    best = int(np.argmax(ba))
    return float(candidates[best]), float(ba[best])


def confidence_baseline(
    logliks: Sequence[Sequence[float]],
    correct: np.ndarray,
    train_idx: np.ndarray | Sequence[int],
    test_idx: np.ndarray | Sequence[int],
) -> dict[str, Any]:
    """Predict correctness from the maximum choice probability, thresholded on the training split.

    Returns the threshold, held-out balanced accuracy, accuracy and AUROC, and the held-out
    confidences and predictions (for paired comparisons with the probe).
    """
    conf = max_choice_probability(logliks)
    y = _binary(correct)
    train = np.asarray(train_idx, dtype=int)
    test = np.asarray(test_idx, dtype=int)
    threshold, train_ba = best_threshold(conf[train], y[train])
    pred = conf[test] >= threshold
    return {
        "threshold": threshold,
        "train_balanced_accuracy": train_ba,
        "balanced_accuracy": float(balanced_accuracy(y[test], pred)),
        "accuracy": float(accuracy(y[test], pred)),
        "auroc": float(auroc(y[test], conf[test])),
        "confidence": conf[test],
        "predictions": pred,
    }


def confidence_features(logliks: Sequence[Sequence[float]]) -> np.ndarray:
    """What the model's output alone says about its confidence, per item: ``[items, 4 + m]``.

    Columns: the top-1 probability p1 (softmax over the item's choices), its log-odds
    log(p1 / (1 - p1)), the top-1 minus top-2 margin of the normalised log-likelihoods
    (log p1 - log p2, linear in the logits that the last layer reads out), the entropy over the
    choices, then the choice probabilities sorted descending, padded with 0 to the largest choice
    count ``m`` (items may differ in count). The log-odds column is there because a calibrated
    model is right with probability p1: a logistic regression on the confidence is then well
    specified, and a probe cannot beat it merely by approximating that link better from a copy
    of the log-likelihoods. Items need at least two choices.
    """
    rows = [np.asarray(values, dtype=float) for values in logliks]
    if not rows:
        raise ValueError("confidence_features needs at least one item")
    width = max(row.size for row in rows)
    out = np.zeros((len(rows), 4 + width))
    for i, row in enumerate(rows):
        if row.size < 2 or not np.all(np.isfinite(row)):
            raise ValueError(f"item {i} needs two or more finite choice log-likelihoods, got {row}")
        log_p = np.sort(row - logsumexp(row))[::-1]
        p = np.exp(log_p)
        # log(1 - p1) from the other choices' log-probabilities: exact where p1 is near 1
        log_odds = log_p[0] - logsumexp(log_p[1:])
        out[i, :4] = [p[0], log_odds, log_p[0] - log_p[1], -float(np.sum(p * log_p))]
        out[i, 4 : 4 + p.size] = p
    return out


def one_hot(labels: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Indicator columns of ``labels``' distinct values (sorted), ``[items, values]``."""
    values = np.asarray(labels)
    _, codes = np.unique(values, return_inverse=True)
    return np.eye(int(codes.max()) + 1)[codes.reshape(-1)]
