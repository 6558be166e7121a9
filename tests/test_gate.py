"""The gate's decision table, forcing, and the abort report, with every verdict combination."""

from __future__ import annotations

import itertools

import pytest

from actspace.gate.abort import negative_results_markdown
from actspace.gate.decision import (
    BRANCH_TARGETS,
    branches_for,
    decide,
    decision_markdown,
    decision_table,
    effective_verdicts,
    forced_branches,
    measured_verdicts,
    planning_verdict,
    register_branch,
    targets_for,
)

PMS = ("pm1", "pm2", "pm3")

#: DESIGN.md's decision table, written out by hand.
EXPECTED = {
    ("FAIL", "FAIL", "FAIL"): ["X"],
    ("FAIL", "FAIL", "PASS"): ["2C"],
    ("FAIL", "PASS", "FAIL"): ["2B"],
    ("FAIL", "PASS", "PASS"): ["2B", "2C"],
    ("PASS", "FAIL", "FAIL"): ["2A"],
    ("PASS", "FAIL", "PASS"): ["2A", "2C"],
    ("PASS", "PASS", "FAIL"): ["2A", "2B"],
    ("PASS", "PASS", "PASS"): ["2A", "2B", "2C"],
}


def _result(verdict: str, value: float = 0.4) -> dict:
    return {
        "metric": "m",
        "value": value,
        "ci": [value - 0.1, value + 0.1],
        "ci_level": 0.95,
        "threshold": 0.3,
        "verdict": verdict,
        "n": 100,
    }


@pytest.mark.parametrize("combo", list(EXPECTED))
def test_each_of_the_eight_rows(combo):
    verdicts = dict(zip(("pm1", "pm2", "pm3"), combo, strict=True))
    assert branches_for(verdicts) == EXPECTED[combo]
    assert forced_branches(verdicts) == EXPECTED[combo]
    decision = decide(measured_verdicts({pm: _result(v) for pm, v in verdicts.items()}), None)
    assert decision["branches"] == EXPECTED[combo]
    assert decision["abort"] == (combo == ("FAIL", "FAIL", "FAIL"))
    assert decision["forced"] == []


def test_decision_table_has_the_plans_eight_rows_in_order():
    rows = decision_table()
    assert [tuple(r[:3]) for r in rows] == list(EXPECTED)
    assert [r[3] for r in rows] == list(EXPECTED.values())


@pytest.mark.parametrize(
    "combo", list(itertools.product(["PASS", "INCONCLUSIVE", "FAIL"], repeat=3))
)
def test_inconclusive_counts_as_fail_and_is_reported(combo):
    measured = measured_verdicts({pm: _result(v) for pm, v in zip(PMS, combo, strict=True)})
    decision = decide(measured, {})
    planning = tuple("PASS" if v == "PASS" else "FAIL" for v in combo)
    assert decision["branches"] == EXPECTED[planning]
    assert decision["inconclusive"] == [
        pm for pm, v in zip(("pm1", "pm2", "pm3"), combo, strict=True) if v == "INCONCLUSIVE"
    ]
    if "INCONCLUSIVE" in combo:
        assert "INCONCLUSIVE" in decision_markdown(decision)


def test_forcing_overrides_and_is_marked():
    measured = measured_verdicts(
        {"pm1": _result("FAIL"), "pm2": _result("FAIL"), "pm3": _result("FAIL")}
    )
    decision = decide(measured, {"pm2": "PASS"})
    assert decision["branches"] == ["2B"]
    assert decision["forced"] == ["pm2"]
    info = decision["premortems"]["pm2"]
    assert info["verdict"] == "PASS" and info["measured_verdict"] == "FAIL" and info["forced"]
    text = decision_markdown(decision)
    assert "Forced verdicts: PM2" in text and "PASS (forced)" in text


def test_partial_force_needs_the_measurement():
    assert forced_branches({"pm1": "PASS", "pm2": None, "pm3": "FAIL"}) is None
    with pytest.raises(ValueError, match="pm3"):
        effective_verdicts({"pm1": "PASS", "pm2": "FAIL"}, {})


def test_bad_verdicts_are_refused():
    with pytest.raises(ValueError, match="allowed"):
        planning_verdict("MAYBE")
    with pytest.raises(ValueError, match="gate.force.pm1"):
        effective_verdicts({"pm1": "PASS", "pm2": "PASS", "pm3": "PASS"}, {"pm1": "INCONCLUSIVE"})
    with pytest.raises(ValueError, match="pm2"):
        measured_verdicts({"pm1": _result("PASS"), "pm2": _result("YES"), "pm3": _result("PASS")})


def test_abort_targets_the_report_and_unknown_branches_are_refused():
    assert targets_for(["X"], {}) == ["results/negative_results.md"]
    assert set(BRANCH_TARGETS) <= {"2A", "2B", "2C", "X"}
    with pytest.raises(ValueError, match="allowed"):
        register_branch("2D", lambda config: [])


def test_negative_results_report_has_the_numbers_and_sections():
    results = {
        "pm1": {**_result("FAIL", 0.1), "ci": [0.05, 0.15]},
        "pm2": {**_result("INCONCLUSIVE", 0.55), "ci": [0.5, 0.6], "threshold": 0.55},
        "pm3": {**_result("FAIL", 0.2), "ci": [0.1, 0.3], "threshold": 0.5},
    }
    text = negative_results_markdown(decide(measured_verdicts(results), None))
    for heading in (
        "## Summary",
        "## Pre-mortems against their thresholds",
        "## Implications",
        "## Value of the negative result",
        "## Pivot options",
    ):
        assert heading in text
    assert "| 0.100 | [0.050, 0.150] | 0.300 | FAIL |" in text
    assert "straddles the threshold 0.550" in text
    assert "Forced" not in text
