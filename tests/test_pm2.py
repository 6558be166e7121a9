"""PM2 end to end on duck-typed fake stores with planted (or absent) structure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.fake_stores import PM2, TOP_LEVEL, FakeStore, probe_store

from actspace.premortems.pm2 import run_pm2
from actspace.premortems.pm2 import summary_markdown as pm2_summary

FAST_PROBE = {**PM2, "n_bootstrap": 300, "cv_folds": 3, "Cs": 5}


def test_pm2_planted_passes_and_picks_the_layer() -> None:
    results = run_pm2(probe_store(planted=True), **FAST_PROBE)
    assert set(results) >= TOP_LEVEL
    assert results["premortem"] == "pm2" and results["name"] == "error_prediction"
    assert results["verdict"] == "PASS"
    assert results["layer"] == 2 and results["layer_selection"] == "validation"
    assert len(results["validation"]) == 4
    assert results["value"] > 0.85 and results["auroc"] > 0.9
    assert results["baselines"]["majority"]["balanced_accuracy"] == 0.5
    assert results["baselines"]["confidence"]["auroc"] < 0.75  # logliks are noise here
    assert results["probe_minus_confidence"]["ci"][0] > 0
    balance = results["class_balance"]
    assert balance["n_correct"] + balance["n_incorrect"] == results["n_items"] == 300
    assert results["n"] == results["n_test"] == 90
    json.dumps(results)
    text = pm2_summary(results)
    assert "**PASS**" in text and "output confidence" in text and "majority class" in text


def test_pm2_noise_does_not_pass() -> None:
    results = run_pm2(probe_store(planted=False), **{**FAST_PROBE, "layer": 1})
    assert results["verdict"] in {"FAIL", "INCONCLUSIVE"}
    assert results["layer"] == 1 and results["layer_selection"] == "configured"
    assert results["validation"] == []
    assert results["ci"][0] < 0.5 + 0.05 < results["ci"][1] + 0.1


def test_pm2_input_checks() -> None:
    store = probe_store(planted=True)
    with pytest.raises(ValueError, match="layer must be 0..3"):
        run_pm2(store, **{**PM2, "layer": 9})
    with pytest.raises(ValueError, match="below 1"):
        run_pm2(store, **{**PM2, "test_fraction": 0.6, "val_fraction": 0.5})


def test_pm2_with_one_sided_answers_has_no_value_and_says_why() -> None:
    """A model right on (nearly) every item leaves nothing to predict: INCONCLUSIVE, no value,
    and the reason, which the gate, the abort report and the summary carry on."""
    store = probe_store(planted=True)
    correct = np.ones(300, bool)
    correct[:5] = False  # five wrong answers: one short of the six the probe needs
    one_sided = FakeStore(store._layers, correct=correct, logliks=store.logliks())
    results = run_pm2(one_sided, **{**PM2, "layer": 1})
    assert results["value"] is None and results["ci"] == [None, None]
    assert results["verdict"] == "INCONCLUSIVE" and results["n"] == 0
    assert results["reason"] == (
        "PM2 needs at least 6 correct and 6 incorrect answers, got 295 correct and 5 incorrect "
        "of 300"
    )
    json.dumps(results)
    assert "No value: PM2 needs at least 6 correct" in pm2_summary(results)


# ---- the command-line scripts, on real store folders written in the contract's format ----
