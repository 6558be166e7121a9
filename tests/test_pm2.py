"""PM2 end to end on duck-typed fake stores with planted (or absent) structure, decided against
the confidence probe, on repeated grouped cross-fitting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.fake_stores import PM2, TOP_LEVEL, FakeStore, probe_store
from helpers.scripts import load_script
from helpers.stores import synthetic_store

from actspace.methods.probes import confidence_features
from actspace.premortems.pm2 import run_pm2
from actspace.premortems.pm2 import summary_markdown as pm2_summary

FAST_PROBE = {**PM2, "n_bootstrap": 200, "cv_folds": 3, "Cs": 5}


class RowsStore(FakeStore):
    """A fake store whose ``scores()`` rows carry metadata (groups, subjects)."""

    def __init__(self, *args, metadata: list[dict], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._metadata = metadata

    def scores(self) -> list[dict]:
        return [{"id": f"item{i}", "metadata": m} for i, m in enumerate(self._metadata)]


def _softmax_top1(logliks: np.ndarray) -> np.ndarray:
    return confidence_features(list(logliks))[:, 0]


def confidence_store(beyond: float, n: int = 600, seed: int = 0) -> FakeStore:
    """A calibrated model whose last layer is a copy of its choice log-likelihoods plus noise.

    The model is right as its confidence says (log-odds twice those of its top-1 probability),
    plus, with ``beyond`` > 0, a latent that layer 2 carries and the output does not. Choice A
    leads by a varying score (a letter bias, as small models have), so a linear read of the
    copied log-likelihoods reads the confidence.
    """
    rng = np.random.default_rng(seed)
    logliks = 0.05 * rng.normal(size=(n, 4))
    logliks[:, 0] += rng.normal(1.5, 1.5, size=n)
    top1 = _softmax_top1(logliks)
    latent = rng.normal(size=n)
    log_odds = 2.0 * np.log(top1 / (1 - top1)) + beyond * latent
    correct = rng.random(n) < 1 / (1 + np.exp(-log_odds))
    layers = [rng.normal(size=(n, 4)) for _ in range(3)]
    layers[2] = np.outer(latent, rng.normal(size=4)) + 0.3 * rng.normal(size=(n, 4))
    layers.append(logliks + 0.1 * rng.normal(size=(n, 4)))
    return FakeStore(layers, correct=correct, logliks=list(logliks))


def test_pm2_planted_passes_both_verdicts_and_picks_the_layer() -> None:
    results = run_pm2(probe_store(planted=True), **FAST_PROBE)
    assert list(results)[: len(TOP_LEVEL)] == [
        *("premortem", "name", "metric", "value", "ci", "ci_level", "threshold"),
        *("plan_verdict", "control", "controlled", "controlled_verdict", "n", "duration_s"),
        "date",
    ]
    assert results["premortem"] == "pm2" and results["name"] == "error_prediction"
    assert results["plan_verdict"] == results["controlled_verdict"] == "PASS"
    assert results["layer"] == 2 and results["layer_selection"] == "validation"
    assert results["layers_by_fold"] == [2] * 10 and len(results["by_fold"]) == 10
    assert [row["chosen"] for row in results["validation"]] == [0, 0, 10, 0]
    assert results["value"] > 0.85 and results["probe"]["auroc"] > 0.9
    # the logliks are noise here: the control is at chance, the probe beats it
    # the control is the stronger of the two predictors that read the output alone
    candidates = {
        "confidence_probe": "confidence probe",
        "max_probability": "max choice probability cut",
    }
    best = max(candidates, key=lambda key: results[key]["balanced_accuracy"])
    assert results["control_key"] == best and results["control"]["name"] == candidates[best]
    assert results["control"]["value"] == results[best]["balanced_accuracy"]
    assert abs(results["control"]["value"] - 0.5) < 0.1
    assert results["differences"]["probe_minus_control"]["ci"][0] > 0.2
    assert results["controlled"]["passed"] and results["controlled"]["bound"] == 0.0
    assert results["subject_probe"] is None and "probe_minus_subject" not in results["differences"]
    assert results["majority"]["balanced_accuracy"] == 0.5
    assert results["n"] == results["n_items"] == results["n_groups"] == 300
    assert (results["folds"], results["repeats"], results["n_test"]) == (5, 2, 60)
    json.dumps(results)
    text = pm2_summary(results)
    assert "Plan verdict: **PASS**" in text and "Controlled verdict: **PASS**" in text
    assert "(the control)" in text and "incremental" in text


def test_pm2_noise_fails_under_both_criteria() -> None:
    results = run_pm2(probe_store(planted=False), **{**FAST_PROBE, "layer": 1})
    assert results["plan_verdict"] in {"FAIL", "INCONCLUSIVE"}
    assert results["controlled_verdict"] == results["plan_verdict"]
    assert results["layer"] == 1 and results["layer_selection"] == "configured"
    assert results["validation"] == [] and results["layers_by_fold"] == [1] * 10
    assert results["ci"][0] < 0.5 < results["ci"][1]


def test_a_copy_of_the_output_passes_the_plan_and_fails_the_control() -> None:
    """Known answer (issue 16, 5b): the last layer copies the choice log-likelihoods; the probe
    reads the model's confidence there and clears the plan's threshold, but neither it nor the
    incremental probe beats the confidence probe: controlled FAIL."""
    results = run_pm2(confidence_store(beyond=0.0), **FAST_PROBE)
    assert results["layer"] == 3
    assert results["plan_verdict"] == "PASS" and results["ci"][0] > 0.7
    assert results["controlled_verdict"] == "FAIL"
    assert results["control"]["value"] > 0.7
    tests = results["controlled_tests"]["tests"]
    assert not tests["probe_minus_control"]["passed"]
    assert not tests["incremental_minus_control"]["passed"]
    assert results["controlled"] in tests.values()
    assert "not shown to know more than the model's output confidence" in pm2_summary(results)


def test_activations_that_know_more_than_the_output_pass_both() -> None:
    """The same model, now right also by a latent that layer 2 carries and the output does not:
    the incremental probe beats confidence alone, so both verdicts PASS."""
    results = run_pm2(confidence_store(beyond=4.0), **FAST_PROBE)
    assert results["plan_verdict"] == results["controlled_verdict"] == "PASS"
    tests = results["controlled_tests"]["tests"]
    assert tests["incremental_minus_control"]["passed"]
    decided = results["controlled_tests"]["decided_by"]
    assert results["controlled"] == tests[decided]
    lows = {key: test["ci"][0] for key, test in tests.items()}
    assert lows[decided] == max(lows.values())


def test_subject_probe_is_reported_next_to_pm2() -> None:
    """MMLU-like items: correctness set by the subject (two easy, two hard); the activations
    are noise. The subject probe reads it all, the activation probe nothing."""
    rng = np.random.default_rng(3)
    n = 320
    subject = rng.choice(["algebra", "anatomy", "law", "virology"], size=n)
    correct = np.isin(subject, ["anatomy", "virology"]) ^ (rng.random(n) < 0.05)
    store = RowsStore(
        [rng.normal(size=(n, 6)) for _ in range(3)],
        correct=correct,
        logliks=list(rng.normal(size=(n, 4))),
        metadata=[{"subject": s} for s in subject],
    )
    results = run_pm2(store, **{**FAST_PROBE, "layer": 2})
    assert results["subject_probe"]["balanced_accuracy"] > 0.9
    assert results["subject_probe"]["ci"][0] > 0.85
    assert results["probe"]["ci"][0] < 0.5 < results["probe"]["ci"][1]
    assert results["differences"]["probe_minus_subject"]["ci"][1] < 0
    assert "subject identity alone" in pm2_summary(results)


def test_items_that_share_a_group_are_never_on_both_sides() -> None:
    """Four near-copies of each of 60 items, right or wrong together: an ungrouped split lets the
    probe recognise held-out copies of training items; PM2's grouped folds leave it at chance."""
    rng = np.random.default_rng(5)
    n_groups, copies, d = 60, 4, 80
    base = rng.normal(size=(n_groups, d))
    group = np.repeat(np.arange(n_groups), copies)
    X = base[group] + 0.05 * rng.normal(size=(n_groups * copies, d))
    correct = (rng.random(n_groups) < 0.5)[group]
    logliks = list(rng.normal(size=(group.size, 4)))
    params = {**FAST_PROBE, "layer": 0, "repeats": 1}
    grouped = RowsStore(
        [X], correct=correct, logliks=logliks, metadata=[{"entity": f"e{g}"} for g in group]
    )
    results = run_pm2(grouped, **params)
    assert results["n_groups"] == n_groups
    assert results["value"] < 0.65 and results["plan_verdict"] != "PASS"
    leaky = run_pm2(FakeStore([X], correct=correct, logliks=logliks), **params)
    assert leaky["n_groups"] == group.size and leaky["value"] > 0.85


def test_pm2_input_checks() -> None:
    store = probe_store(planted=True)
    with pytest.raises(ValueError, match="layer must be 0..3"):
        run_pm2(store, **{**PM2, "layer": 9})
    with pytest.raises(ValueError, match="val_fraction must be at most 0.5"):
        run_pm2(store, **{**PM2, "val_fraction": 0.8})
    with pytest.raises(ValueError, match="folds must be 2 or more"):
        run_pm2(store, **{**PM2, "folds": 1})


def test_pm2_with_one_sided_answers_has_no_value_and_says_why() -> None:
    """A model right on (nearly) every item leaves nothing to predict: INCONCLUSIVE under both
    criteria, no value, no control, and the reason, which the gate and the summary carry on."""
    store = probe_store(planted=True)
    correct = np.ones(300, bool)
    correct[:5] = False  # five wrong answers: one short of the six the probe needs
    one_sided = FakeStore(store._layers, correct=correct, logliks=store.logliks())
    results = run_pm2(one_sided, **{**PM2, "layer": 1})
    assert results["value"] is None and results["ci"] == [None, None]
    assert results["plan_verdict"] == results["controlled_verdict"] == "INCONCLUSIVE"
    assert results["control"] is None and results["controlled"] is None and results["n"] == 0
    assert results["reason"] == (
        "PM2 needs at least 6 correct and 6 incorrect answers, got 295 correct and 5 incorrect "
        "of 300"
    )
    json.dumps(results)
    assert "No value: PM2 needs at least 6 correct" in pm2_summary(results)


def test_confidence_features_known_values() -> None:
    features = confidence_features([np.log([0.5, 0.25, 0.25]), np.log([0.2, 0.8]) + 7.0])
    assert features.shape == (2, 7)
    entropy = -(0.5 * np.log(0.5) + 0.5 * np.log(0.25))
    assert features[0] == pytest.approx([0.5, 0.0, np.log(2), entropy, 0.5, 0.25, 0.25])
    # normalised (the +7 offset drops out), sorted descending, padded with 0
    assert features[1] == pytest.approx(
        [0.8, np.log(4), np.log(4), 0.5004024, 0.8, 0.2, 0.0], abs=1e-6
    )
    with pytest.raises(ValueError, match="two or more finite"):
        confidence_features([[0.0]])


# ---- the command-line script, on a real store folder written in the contract's format ----


def test_script_prints_both_verdicts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = synthetic_store(tmp_path / "m" / "t", n=150)
    params = {**FAST_PROBE, "repeats": 1}
    out = tmp_path / "out"
    load_script("pm2_error_prediction").main(
        ["--store", str(folder), "--params", json.dumps(params), "--output-dir", str(out)]
    )
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert f"-> plan {results['plan_verdict']};" in printed
    assert f"-> controlled {results['controlled_verdict']}" in printed
    assert results["plan_verdict"] == results["controlled_verdict"] == "PASS"
    assert "Controlled verdict" in (out / "summary.md").read_text()
