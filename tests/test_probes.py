"""The linear probe, its metrics and baselines, on data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from actspace.core.resampling import bootstrap_ci
from actspace.methods.probes import (
    LinearProbe,
    accuracy,
    auroc,
    balanced_accuracy,
    best_threshold,
    confidence_baseline,
    majority_baseline,
    max_choice_probability,
)


def test_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    pred = rng.random(200) < 0.5
    score = rng.normal(size=200) + y
    assert balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))
    assert auroc(y, score) == pytest.approx(roc_auc_score(y, score))
    assert accuracy(y, pred) == pytest.approx(np.mean(y == pred))
    tied = np.round(score)
    assert auroc(y, tied) == pytest.approx(roc_auc_score(y, tied))
    # vectorised over resamples, as bootstrap_ci calls it
    stacked = balanced_accuracy(np.stack([y, y]), np.stack([pred, ~pred]), axis=-1)
    assert stacked == pytest.approx(
        [balanced_accuracy_score(y, pred), balanced_accuracy_score(y, ~pred)]
    )
    assert np.isnan(auroc(np.ones(5), np.arange(5)))
    assert balanced_accuracy(np.ones(4), np.array([1, 1, 0, 0])) == pytest.approx(0.5)


def test_probe_on_separable_data() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 20))
    w = rng.normal(size=20)
    y = x @ w > 0.5
    probe = LinearProbe(random_state=0).fit(x[:200], y[:200])
    assert probe.score(x[200:], y[200:]) > 0.95
    proba = probe.predict_proba(x[200:])
    assert proba.shape == (100, 2) and np.allclose(proba.sum(1), 1.0)
    assert set(np.unique(probe.predict(x[200:]))) <= {False, True}
    assert auroc(y[200:], probe.decision_function(x[200:])) > 0.98
    again = LinearProbe(random_state=0).fit(x[:200], y[:200])
    assert np.array_equal(again.decision_function(x[200:]), probe.decision_function(x[200:]))


def test_probe_on_label_independent_data_is_at_chance() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 10))
    y = rng.random(400) < 0.4
    probe = LinearProbe(random_state=0).fit(x[:250], y[:250])
    pred = probe.predict(x[250:])
    low, high = bootstrap_ci(balanced_accuracy, y[250:], pred, seed=0)
    assert low < 0.5 < high
    assert high < 0.65


def test_probe_rejects_one_class() -> None:
    with pytest.raises(ValueError, match="two classes"):
        LinearProbe().fit(np.zeros((10, 2)), np.ones(10))
    with pytest.raises(ValueError, match="at least 2"):
        LinearProbe().fit(np.zeros((10, 2)), np.array([1] * 9 + [0]))


def test_majority_and_confidence_baselines() -> None:
    maj = majority_baseline(np.array([1, 1, 1, 0]), np.array([1, 0, 0, 0, 1]))
    assert maj == {"majority_class": True, "accuracy": 0.4, "balanced_accuracy": 0.5}
    assert max_choice_probability([[0.0, 0.0], [np.log(3.0), 0.0, -np.inf]]) == pytest.approx(
        [0.5, 0.75]
    )
    # confidence perfectly ordered by correctness: the training threshold separates the test set
    rng = np.random.default_rng(3)
    correct = rng.random(200) < 0.5
    margin = np.where(correct, 3.0, 0.2) + 0.05 * rng.random(200)
    logliks = [[m, 0.0, 0.0] for m in margin]
    out = confidence_baseline(logliks, correct, np.arange(120), np.arange(120, 200))
    assert out["balanced_accuracy"] == pytest.approx(1.0)
    assert out["auroc"] == pytest.approx(1.0)
    assert out["predictions"].shape == (80,)


def test_best_threshold() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1])
    assert best_threshold(scores, y) == (0.8, 1.0)
    assert best_threshold(scores, 1 - y)[1] == pytest.approx(0.5)
