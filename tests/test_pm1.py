"""PM1 end to end on duck-typed fake stores with planted (or absent) structure."""

from __future__ import annotations

import json

import pytest
from helpers.fake_stores import PM1, TOP_LEVEL, model_stores

from actspace.premortems.pm1 import run_pm1
from actspace.premortems.pm1 import summary_markdown as pm1_summary

FAST = {**PM1, "n_bootstrap": 300}


def test_pm1_planted_linear_passes() -> None:
    results = run_pm1(model_stores(planted=True), **{**FAST, "n_permutations": 2})
    assert set(results) >= TOP_LEVEL
    assert results["premortem"] == "pm1" and results["name"] == "cross_model"
    assert results["verdict"] == "PASS"
    assert results["value"] > 0.8 and results["ci"][0] > 0.3
    assert results["layers"] == {"small": 2, "large": 4}
    assert len(results["pairs"]) == 2  # both directions
    assert {(p["source"], p["target"]) for p in results["pairs"]} == {
        ("small", "large"),
        ("large", "small"),
    }
    assert abs(results["permutation_null"]["value"]) < 0.1
    assert results["cka_debiased"] > 0.5
    assert results["n"] == results["n_test"] == 72
    json.dumps(results)  # plain JSON types throughout
    text = pm1_summary(results)
    assert "**PASS**" in text and "Pre-mortem 1" in text and "small (L2)" in text


def test_pm1_random_fails_and_is_deterministic() -> None:
    stores = model_stores(planted=False)
    results = run_pm1(stores, **{**FAST, "n_permutations": 2, "seed": 3})
    assert results["verdict"] == "FAIL"
    assert abs(results["value"]) < 0.1
    assert abs(results["cka_debiased"]) < 0.1
    again = run_pm1(stores, **{**FAST, "n_permutations": 2, "seed": 3})
    assert again["value"] == results["value"] and again["ci"] == results["ci"]


def test_pm1_subsamples_and_checks_input() -> None:
    stores = model_stores(planted=True)
    results = run_pm1(stores, **{**FAST, "n_samples": 100, "n_permutations": 1})
    assert results["n_items"] == 100 and results["n_train"] + results["n_test"] == 100
    short = model_stores(planted=True, n=120)
    with pytest.raises(ValueError, match="same items"):
        run_pm1({"small": stores["small"], "other": short["large"]}, **PM1)
    with pytest.raises(ValueError, match="pooling"):
        run_pm1(stores, **{**PM1, "pooling": "mean"})
    with pytest.raises(ValueError, match="ridge_alpha"):
        run_pm1(stores, **{**PM1, "ridge_alpha": "gcv"})


def test_pm1_on_one_model_has_no_value_and_says_why() -> None:
    stores = model_stores(planted=True)
    results = run_pm1({"small": stores["small"]}, **PM1)
    assert results["value"] is None and results["ci"] == [None, None]
    assert results["verdict"] == "INCONCLUSIVE"
    assert "this study has one (small)" in results["reason"]
    assert "No value: PM1 compares" in pm1_summary(results)
