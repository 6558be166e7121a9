"""PM1 end to end on duck-typed fake stores with planted (or absent) structure, and its
surface-feature control: known answers for the plan and the controlled verdicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.fake_stores import PM1, TOP_LEVEL, FakeStore, model_stores

from actspace.core.splits import grouped_folds
from actspace.premortems.pm1 import run_pm1
from actspace.premortems.pm1 import summary_markdown as pm1_summary

FAST = {**PM1, "n_bootstrap": 300}


def shared_scalar_stores(n: int = 400, d: int = 32, share: float = 0.6, seed: int = 0):
    """Two models whose chosen layers are independent representations (random per-model
    projections of independent noise) sharing ONE per-item scalar, which is also in each
    model's layer 0 (as a token's identity is); their mean-pooled layer 0 is noise."""
    rng = np.random.default_rng(seed)
    scalar = rng.normal(size=(n, 1))
    stores = {}
    for name in ("a", "b"):
        layers = [scalar @ rng.normal(size=(1, d)) + 0.3 * rng.normal(size=(n, d))]
        for _ in range(4):
            own = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
            layers.append(
                np.sqrt(share) * scalar @ rng.normal(size=(1, d)) + np.sqrt(1 - share) * own
            )
        means = [rng.normal(size=(n, d)) for _ in layers]
        stores[name] = FakeStore(layers, model=name, pooled={"mean": means})
    return stores


def shared_latent_stores(n: int = 300, d: int = 24, seed: int = 0):
    """Two models whose middle layers read one 8-dimensional latent; layer 0 (both poolings)
    is each model's own noise."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 8))
    stores = {}
    for name in ("a", "b"):
        layers = [rng.normal(size=(n, d))]
        layers += [latent @ rng.normal(size=(8, d)) + rng.normal(size=(n, d)) for _ in range(4)]
        means = [rng.normal(size=(n, d)) for _ in layers]
        stores[name] = FakeStore(layers, model=name, pooled={"mean": means})
    return stores


def test_shared_surface_scalar_passes_the_plan_and_fails_the_control() -> None:
    """Issue 16, 5a: one shared per-item scalar that layer 0 also carries clears r = 0.3, and
    the token embeddings carry it as well, so the controlled verdict is FAIL."""
    results = run_pm1(shared_scalar_stores(), **{**FAST, "n_permutations": 99})
    assert results["plan_verdict"] == "PASS" and results["ci"][0] > 0.35
    assert results["controlled_verdict"] == "FAIL"
    assert results["control_used"] == "embeddings_pooled"
    candidates = results["control_candidates"]
    assert candidates["embeddings_pooled"]["value"] > 0.35
    assert abs(candidates["embeddings_mean"]["value"]) < 0.1  # mean pooling carries noise only
    assert results["control"]["value"] == candidates["embeddings_pooled"]["value"]
    test = results["controlled"]
    assert test["statistic"] == "PM1 minus surface-feature control" and test["bound"] == 0.0
    assert test["passed"] is False and test["ci"][0] <= 0.0
    assert abs(test["value"]) < 0.05
    # the shuffled-items null is near 0 and the observed first fold beats every permutation
    null = results["shuffled_null"]
    assert abs(null["mean"]) < 0.05 and null["p_value"] == pytest.approx(0.01)
    text = pm1_summary(results)
    assert "- Plan verdict: **PASS**" in text and "- Controlled verdict: **FAIL**" in text
    assert "mean-pooled over the context" in text and "**(used)**" in text


def test_shared_latent_in_middle_layers_passes_both() -> None:
    results = run_pm1(shared_latent_stores(), **FAST)
    assert results["plan_verdict"] == "PASS" and results["controlled_verdict"] == "PASS"
    assert results["value"] > 0.8 and results["control"]["value"] < 0.1
    assert results["controlled"]["ci"][0] > 0.6 and results["controlled"]["passed"] is True
    assert set(results["control_candidates"]) == {"embeddings_pooled", "embeddings_mean"}
    assert results["control_unavailable"] == {}
    # fewer than 99 permutations: no p-value, and the record says why
    assert results["shuffled_null"]["p_value"] is None
    assert "99 or more permutations" in results["shuffled_null"]["note"]
    assert all(p["shuffled_null"]["p_value"] is None for p in results["pairs"])
    assert "p = not reported" in pm1_summary(results)
    # mean pooling for the metric: the bag of tokens is control (i) itself
    pooled = run_pm1(shared_latent_stores(n=100), **{**FAST, "pooling": "mean"})
    assert list(pooled["control_candidates"]) == ["embeddings_pooled"]
    assert "the same as (i)" in pooled["control_unavailable"]["embeddings_mean"]
    assert pooled["plan_verdict"] == "FAIL"  # these stores' mean pooling is noise


def test_pm1_record_on_cross_fitting() -> None:
    stores = model_stores(planted=True)
    results = run_pm1(stores, **{**FAST, "n_permutations": 2})
    assert set(results) >= TOP_LEVEL and "verdict" not in results
    assert list(results)[: len(TOP_LEVEL)] == [
        "premortem", "name", "metric", "value", "ci", "ci_level", "threshold", "plan_verdict",
        "control", "controlled", "controlled_verdict", "n", "duration_s", "date",
    ]  # fmt: skip
    assert results["premortem"] == "pm1" and results["name"] == "cross_model"
    assert results["plan_verdict"] == "PASS"
    assert results["value"] > 0.8 and results["ci"][0] > 0.3
    # every layer of these stores, the embeddings included, reads the latent alike
    assert results["control"]["value"] == pytest.approx(results["value"], abs=0.005)
    # the store has no mean pooling: control (ii) is missing, and the record says why
    assert list(results["control_candidates"]) == ["embeddings_pooled"]
    assert "not available in store 'small'" in results["control_unavailable"]["embeddings_mean"]
    assert results["layers"] == {"small": 2, "large": 4}
    assert {(p["source"], p["target"]) for p in results["pairs"]} == {
        ("small", "large"),
        ("large", "small"),
    }
    assert abs(results["shuffled_null"]["mean"]) < 0.15
    assert results["cka_debiased"] > 0.5
    # 240 items, each held out once per repeat: 10 fits of about 48 held-out items
    assert results["n"] == results["n_items"] == 240
    assert (results["n_train"], results["n_test"]) == (192, 48)
    folds = results["fold_estimates"]
    assert len(folds) == 10 and sum(f["n_test"] for f in folds) == 480
    assert results["value"] == pytest.approx(np.mean([f["metric"] for f in folds]))
    assert results["controlled"]["value"] == pytest.approx(
        np.mean([f["difference"] for f in folds])
    )
    # the pairs' mean is the metric: the same items in every fold for both directions
    assert results["value"] == pytest.approx(np.mean([p["correlation"] for p in results["pairs"]]))
    assert all(len(p["ridge_alphas_by_fold"]) == 10 for p in results["pairs"])
    json.dumps(results)  # plain JSON types throughout
    text = pm1_summary(results)
    assert "Pre-mortem 1" in text and "small (L2)" in text and "not computed" in text


def test_pm1_random_fails_and_same_seed_same_results() -> None:
    stores = model_stores(planted=False)
    results = run_pm1(stores, **{**FAST, "n_permutations": 2, "seed": 3})
    assert results["plan_verdict"] == results["controlled_verdict"] == "FAIL"
    assert abs(results["value"]) < 0.1
    assert abs(results["cka_debiased"]) < 0.1
    again = run_pm1(stores, **{**FAST, "n_permutations": 2, "seed": 3})
    for key in ("value", "ci", "control", "controlled", "shuffled_null", "pairs"):
        assert again[key] == results[key], key
    other = run_pm1(stores, **{**FAST, "n_permutations": 2, "seed": 4})
    assert other["value"] != results["value"]


def test_pm1_keeps_groups_in_one_fold() -> None:
    stores = shared_latent_stores(n=120)
    rows = [{"id": f"item{i}", "metadata": {"group": i // 3}} for i in range(120)]
    for store in stores.values():
        store.scores = lambda rows=rows: rows  # type: ignore[method-assign]
    results = run_pm1(stores, **FAST)
    assert results["n_groups"] == 40
    # the folds are grouped_folds' on the groups: no group on both sides of any fit
    folds = grouped_folds(120, n_folds=5, n_repeats=2, seed=0, groups=np.arange(120) // 3)
    assert [f["n_test"] for f in results["fold_estimates"]] == [f.test.size for f in folds]
    for fold in folds:
        assert not set(fold.train // 3) & set(fold.test // 3)
    other = [{"id": f"item{i}", "metadata": {"group": i // 2}} for i in range(120)]
    stores["b"].scores = lambda: other  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="store 'b' groups its items differently"):
        run_pm1(stores, **FAST)


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
    with pytest.raises(ValueError, match="folds"):
        run_pm1(stores, **{**PM1, "n_samples": 12, "folds": 5})


def test_pm1_on_one_model_has_no_value_and_says_why() -> None:
    stores = model_stores(planted=True)
    results = run_pm1({"small": stores["small"]}, **PM1)
    assert results["value"] is None and results["ci"] == [None, None]
    assert results["plan_verdict"] == results["controlled_verdict"] == "INCONCLUSIVE"
    assert results["control"] is None and results["controlled"] is None
    assert "this study has one (small)" in results["reason"]
    assert "No value: PM1 compares" in pm1_summary(results)
