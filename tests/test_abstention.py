"""Abstention: risk-coverage with known values, the random abstainer, and the experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.scripts import assert_clean_exit, load_script
from helpers.stores import synthetic_store

from actspace.branches.error_prediction.abstention import (
    accuracy_gain,
    answered_vs_abstained,
    at_coverage,
    aurc,
    effective_accuracy,
    oracle_aurc,
    random_aurc,
    risk_coverage,
    run_abstention,
    selective,
    summary_markdown,
)
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
    assert res["verdict"] == "PASS" and res["success"]
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
    assert abs(record["probe"]["gain"]) < 0.1 and not record["success"]
    assert res["n_success"] == 1
    assert "does not reliably raise" in summary_markdown(res)


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
