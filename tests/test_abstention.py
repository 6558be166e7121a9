"""Abstention: risk-coverage with known values, the random abstainer, and the experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.scripts import assert_clean_exit, load_script
from helpers.stores import synthetic_store

from actspace.branches.error_prediction.abstention import (
    abstention_criteria,
    accuracy_gain,
    answered_vs_abstained,
    at_coverage,
    aurc,
    effective_accuracy,
    headline_verdict,
    matched_coverage,
    oracle_aurc,
    random_aurc,
    risk_coverage,
    run_abstention,
    selective,
    top_k_answers,
)
from actspace.branches.error_prediction.abstention_report import summary_markdown
from actspace.core import criteria
from actspace.core.schema import validate_schema
from actspace.core.store import open_stores

#: The schema's defaults of the section (its models and tasks are the stores), made quick.
SECTION = validate_schema({})["experiments"]["abstention"]
FAST = {
    **{key: value for key, value in SECTION.items() if key not in ("models", "tasks")},
    "n_bootstrap": 200,
    "cv_folds": 3,
    "Cs": 5,
    "n_random": 100,
}


def test_risk_coverage_known_values() -> None:
    correct = np.array([1, 0, 1, 0], dtype=bool)
    coverage, risk = risk_coverage(correct, np.array([0.9, 0.8, 0.7, 0.1]))
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0.0, 0.5, 1 / 3, 0.5])
    assert aurc(correct, np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx((0.5 + 1 / 3 + 0.5) / 4)
    # Oracle: right answers first, risks 0, 0, 1/3, 1/2.
    assert oracle_aurc(correct) == pytest.approx((1 / 3 + 0.5) / 4)
    # Ties are answered in expectation: a tie between a right and a wrong answer first.
    _, tied = risk_coverage(correct, np.array([0.9, 0.9, 0.1, 0.1]))
    assert tied.tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5])
    assert at_coverage(correct, np.array([0.9, 0.8, 0.7, 0.1]), 0.75) == pytest.approx(2 / 3)


def test_random_abstainer_area_is_the_error_rate() -> None:
    rng = np.random.default_rng(3)
    correct = rng.random(300) < 0.65
    error_rate = float(np.mean(~correct))
    # A constant score is the random abstainer in expectation: exactly the error rate.
    assert aurc(correct, np.zeros(300)) == pytest.approx(error_rate)
    draws = random_aurc(correct, n_draws=400, seed=0)
    standard_error = draws.std(ddof=1) / np.sqrt(draws.size)
    assert abs(draws.mean() - error_rate) < 4 * standard_error
    assert oracle_aurc(correct) < error_rate


def test_selective_answering_known_values() -> None:
    correct = np.array([1, 1, 1, 0, 0, 1, 0, 0], dtype=bool)
    prob = np.array([0.9, 0.8, 0.6, 0.5, 0.2, 0.35, 0.1, 0.25])
    out = selective(correct, prob, 0.3, n_bootstrap=200)
    assert out["n_answered"] == 5 and out["coverage"] == 5 / 8
    assert out["effective_accuracy"] == pytest.approx(4 / 5)
    assert out["plain_accuracy"] == 0.5 and out["gain"] == pytest.approx(0.3)
    assert out["gain_ci"][0] <= 0.3 <= out["gain_ci"][1]
    answered = prob >= 0.3
    assert effective_accuracy(correct, answered) == pytest.approx(0.8)
    assert accuracy_gain(correct, answered) == pytest.approx(0.3)
    none = selective(correct, prob, 0.95, n_bootstrap=100)
    assert none["n_answered"] == 0 and none["gain"] is None
    assert none["gain_verdict"] == "INCONCLUSIVE"


def test_answered_vs_abstained_known_values() -> None:
    correct = np.array([1, 1, 1, 0, 0, 1, 0, 0], dtype=bool)
    prob = np.array([0.9, 0.8, 0.6, 0.5, 0.2, 0.35, 0.1, 0.25])
    block = answered_vs_abstained(correct, prob, 0.3, where="m on t, layer 2")
    assert block["kind"] == "two_groups" and block["binary"] is True
    assert block["a"] == [1.0, 1.0, 1.0, 0.0, 1.0] and block["b"] == [0.0, 0.0, 0.0]
    out = selective(correct, prob, 0.3, n_bootstrap=100)
    assert np.mean(block["a"]) == pytest.approx(out["effective_accuracy"])
    assert len(block["a"]) / correct.size == out["coverage"]
    nothing = answered_vs_abstained(correct, prob, 0.95, where="m")
    assert (
        nothing["a"] == []
        and len(nothing["b"]) == 8
        and "no item is answered" in (nothing["description"])
    )
    everything = answered_vs_abstained(correct, prob, 0.0, where="m")
    assert everything["b"] == [] and "no item is abstained" in everything["description"]


def test_top_k_answers_share_the_cut_among_tied_items() -> None:
    score = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    assert top_k_answers(score, 2).tolist() == pytest.approx([1, 1 / 3, 1 / 3, 1 / 3, 0])
    assert top_k_answers(score, 4).tolist() == [1, 1, 1, 1, 0]
    assert top_k_answers(score, 0).tolist() == [0] * 5
    with pytest.raises(ValueError, match="k must lie in 0..5"):
        top_k_answers(score, 6)
    # weighted effective accuracy is the risk-coverage curve's expected value at that coverage
    correct = np.array([1, 1, 0, 0, 1], dtype=bool)
    expected = at_coverage(correct, score, 2 / 5)
    assert effective_accuracy(correct, top_k_answers(score, 2)) == pytest.approx(expected)


def _items(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correctness and an output confidence that predicts it well."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.6
    confidence = np.clip(0.45 + 0.25 * np.where(correct, 1, -1) + rng.normal(0, 0.15, n), 0, 1)
    return correct, confidence


def _parts(correct, prob, confidence, threshold=0.5):
    probe = selective(correct, prob, threshold, n_bootstrap=300)
    matched = matched_coverage(correct, prob, confidence, threshold, n_bootstrap=300)
    return abstention_criteria(probe, matched), matched


def test_a_probe_that_is_a_monotone_function_of_the_confidence_fails_on_the_control() -> None:
    """The probe abstains on exactly the items the confidence abstains on at the same coverage,
    so it is no better than the confidence: abstention fails, though it beats answering
    everything, and the failed part is the confidence control."""
    correct, confidence = _items()
    prob = 1 / (1 + np.exp(-8 * (confidence - 0.5)))  # increasing in the confidence
    parts, matched = _parts(correct, prob, confidence)
    assert 0 < matched["n_answered"] < correct.size
    assert matched["probe"] == matched["confidence"] > correct.mean()
    assert matched["probe_minus_confidence"] == 0.0
    assert matched["probe_minus_confidence_ci"] == [0.0, 0.0]
    plan_part, control = parts
    assert plan_part["passed"] is True and control["passed"] is False
    assert criteria.success(parts) is False
    assert [c["name"] for c in criteria.failed(parts)] == ["beats_confidence_at_same_coverage"]
    assert headline_verdict(parts) == "INCONCLUSIVE"  # no worse than the confidence either


def test_a_probe_that_knows_more_than_the_confidence_passes_both_parts() -> None:
    correct, confidence = _items()
    rng = np.random.default_rng(1)
    prob = np.clip(0.5 + 0.45 * np.where(correct, 1, -1) + rng.normal(0, 0.05, correct.size), 0, 1)
    parts, matched = _parts(correct, prob, confidence)
    assert matched["probe"] > matched["confidence"]
    assert [c["passed"] for c in parts] == [True, True]
    assert criteria.success(parts) is True and headline_verdict(parts) == "PASS"


def test_a_probe_worse_than_the_confidence_fails_on_the_control() -> None:
    correct, confidence = _items()
    rng = np.random.default_rng(2)
    prob = rng.random(correct.size)  # knows nothing
    parts, _ = _parts(correct, prob, confidence)
    assert parts[1]["ci"][1] < 0 and parts[1]["passed"] is False
    assert headline_verdict(parts) == "FAIL"


def test_a_probe_that_answers_nothing_fails() -> None:
    correct, confidence = _items()
    parts, matched = _parts(correct, np.zeros(correct.size), confidence)
    assert matched["n_answered"] == 0 and matched["probe"] is None
    assert [c["passed"] for c in parts] == [False, False]
    assert criteria.success(parts) is False


def test_criteria_follow_the_contract() -> None:
    correct, confidence = _items()
    parts, _ = _parts(correct, confidence, confidence)
    assert [(c["name"], c["kind"]) for c in parts] == [
        ("beats_answering_everything", "plan"),
        ("beats_confidence_at_same_coverage", "control"),
    ]
    for part in parts:
        assert set(part) == {"name", "kind", "rule", "value", "ci", "bound", "passed"}
        assert part["bound"] == 0.0 and part["ci"][0] <= part["value"] <= part["ci"][1]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    root = tmp_path_factory.mktemp("abst")
    planted = synthetic_store(root / "m" / "planted", seed=1)
    noise = synthetic_store(root / "m" / "noise", planted=False, seed=4)
    stores = open_stores([str(planted), str(noise)])
    return run_abstention(stores, seed=0, **{**FAST, "threshold": 0.3})


def test_probe_abstention_raises_effective_accuracy(results: tuple[dict, dict]) -> None:
    res, figures = results
    record = res["stores"][0]
    assert record["layer"] == 2
    probe = record["probe"]
    assert probe["effective_accuracy"] > 0.95 > probe["plain_accuracy"]
    assert probe["gain_ci"][0] > 0 and record["success"]
    assert res["verdict"] == "PASS" and res["success"] is True
    assert res["criteria"] == record["criteria"]
    assert [c["passed"] for c in record["criteria"]] == [True, True]
    matched = record["matched_coverage"]
    assert matched["n_answered"] == probe["n_answered"]
    assert matched["probe_minus_confidence_ci"][0] > 0
    # layer and penalty chosen on the training items: a held-out test
    assert res["held_out"] is True and record["held_out"] is True
    assert "training items" in res["selection"] and "test items choose nothing" in res["selection"]
    a = record["aurc"]
    assert a["probe"] < a["confidence"] < a["random_expected"]
    assert a["probe_minus_confidence_ci"][1] < 0 and a["probe_minus_random_ci"][1] < 0
    assert a["oracle"] <= a["probe"]
    assert record["matched_coverage"]["probe"] > record["matched_coverage"]["confidence"]
    curve = figures["curves"][0]
    assert len(curve["coverage"]) == record["n_test"] == len(curve["risk_probe"])
    assert np.mean(curve["risk_probe"]) == pytest.approx(a["probe"])


def test_comparison_block_matches_the_headline(results: tuple[dict, dict]) -> None:
    res, _ = results
    record = res["stores"][0]
    comparison = res["comparison"]
    assert comparison is record["comparison"]
    assert comparison["kind"] == "two_groups" and comparison["unit"] == "item"
    assert comparison["binary"] is True and comparison["scale"] == 100.0
    a, b = np.array(comparison["a"]), np.array(comparison["b"])
    assert a.size + b.size == res["n"] == record["n_test"]
    assert all(type(v) is float for v in comparison["a"] + comparison["b"])
    probe = record["probe"]
    assert a.size == probe["n_answered"] and a.size / (a.size + b.size) == probe["coverage"]
    assert a.mean() == pytest.approx(probe["effective_accuracy"])
    assert np.r_[a, b].mean() == pytest.approx(probe["plain_accuracy"])
    assert a.mean() - np.r_[a, b].mean() == pytest.approx(res["value"])


def test_uninformative_probe_is_no_better_than_random(results: tuple[dict, dict]) -> None:
    res, _ = results
    record = res["stores"][1]
    a = record["aurc"]
    assert abs(a["probe"] - a["random_expected"]) < 0.1
    assert a["random_draws_p05"] <= a["random_expected"] <= a["random_draws_p95"]
    assert abs(record["probe"]["gain"]) < 0.1 and record["success"] is False
    assert res["n_success"] == 1
    failed = [c["name"] for c in criteria.failed(record["criteria"])]
    assert "beats_answering_everything" in failed
    text = summary_markdown(res)
    assert "does not succeed: failed `beats_answering_everything`" in text


def test_script(tmp_path: Path) -> None:
    main = load_script("abstention").main
    folder = synthetic_store(tmp_path / "m" / "t", n=150, n_layers=2)
    out = tmp_path / "out"
    args = ["--stores", str(folder), "--seed", "0"]
    params = {**SECTION, "n_bootstrap": 100, "cv_folds": 3, "Cs": 3}
    main([*args, "--params", json.dumps({**params, "threshold": 0.4}), "--output-dir", str(out)])
    saved = json.loads((out / "results.json").read_text())
    assert saved["threshold"] == 0.4 and saved["stores"][0]["probe"]["threshold"] == 0.4
    comparison = saved["comparison"]
    assert len(comparison["a"]) + len(comparison["b"]) == saved["n"]
    assert set(json.loads((out / "figure_data.json").read_text())["curves"][0]) >= {
        "coverage",
        "risk_probe",
        "risk_confidence",
        "risk_random",
        "risk_oracle",
    }
    bad = json.dumps({**params, "threshold": 1.5})
    assert_clean_exit(main, [*args, "--params", bad, "--output-dir", str(out)], "threshold")
