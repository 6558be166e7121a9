"""The gate's decision table, forcing, and the abort report, with every verdict combination."""

from __future__ import annotations

import itertools

import pytest

from actspace import plan
from actspace.gate.abort import negative_results_markdown
from actspace.gate.decision import (
    decide,
    decision_markdown,
    effective_verdicts,
    forced_branches,
    measured_verdicts,
)
from actspace.plan import branches_for, decision_table, planning_verdict, targets_for

PMS = ("pm1", "pm2", "pm3")

#: The plan's decision table (README), written out by hand.
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
    assert [tuple(verdicts) for verdicts, _ in rows] == list(EXPECTED)
    assert [branches for _, branches in rows] == list(EXPECTED.values())


def test_the_gate_reads_the_plans_premortems():
    assert plan.PREMORTEM_NAMES == PMS
    assert [plan.premortem(pm).branch for pm in PMS] == ["2A", "2B", "2C"]
    assert plan.VERDICTS == ("PASS", "INCONCLUSIVE", "FAIL")
    text = decision_markdown(decide(measured_verdicts({pm: _result("PASS") for pm in PMS}), None))
    assert "| PM1 | PM2 | PM3 | Branches |" in text
    assert "| PASS | PASS | PASS | 2A, 2B, 2C **<-** |" in text
    assert "Decision-table row (PM1 / PM2 / PM3): **PASS / PASS / PASS**." in text
    assert "| PM1 cross-model similarity | m | 0.400 |" in text


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
    with pytest.raises(KeyError, match="unknown branch '2D'"):
        plan.branch("2D")


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
    assert "- **PM3**: the whole 95% CI [0.100, 0.300] lies below the threshold 0.500: " in text
    assert plan.premortem("pm3").fail_meaning in text
    assert "(2A cross-model transfer; 2B error prediction; 2C activation patching" in text


def test_negative_results_report_marks_forced_verdicts():
    measured = measured_verdicts({pm: _result("PASS") for pm in PMS})
    decision = decide(measured, {"pm1": "FAIL", "pm2": "FAIL", "pm3": "FAIL"})
    assert decision["abort"]
    text = negative_results_markdown(decision)
    assert "**Forced verdicts: PM1, PM2, PM3.**" in text
    assert "| 0.400 | [0.300, 0.500] | 0.300 | FAIL (forced; measured PASS) |" in text
    assert "- **PM2**: verdict FAIL (forced; the measurement said PASS)." in text
    assert "lies below the threshold" not in text  # a forced FAIL is not read as a measurement


def test_the_gate_scripts_take_one_flag_per_premortem_and_the_gate_section(tmp_path):
    from helpers.scripts import assert_clean_exit, load_script

    from actspace.core.io import atomic_write_json, read_json

    files = []
    for pm, verdict in zip(PMS, ("PASS", "INCONCLUSIVE", "FAIL"), strict=True):
        path = tmp_path / pm / "results.json"
        atomic_write_json(path, _result(verdict))
        files += [f"--{pm}", str(path)]
    verdicts = tmp_path / "gate" / "verdicts.json"
    gate = load_script("gate")
    gate.main([*files, "--output", str(verdicts)])
    assert {pm: info["verdict"] for pm, info in read_json(verdicts).items()} == {
        "pm1": "PASS", "pm2": "INCONCLUSIVE", "pm3": "FAIL",
    }  # fmt: skip
    with pytest.raises(SystemExit):  # argparse: every pre-mortem of the plan is required
        gate.main([*files[:4], "--output", str(verdicts)])

    decide_script = load_script("decide")
    out = [f"--output-{kind}" for kind in ("json", "md")]
    paths = [str(tmp_path / "gate" / "decision.json"), str(tmp_path / "gate" / "decision.md")]
    argv = ["--verdicts", str(verdicts), out[0], paths[0], out[1], paths[1]]
    decide_script.main(["--params", '{"force": {"pm3": "PASS"}}', *argv])
    decision = read_json(paths[0])
    assert decision["branches"] == ["2A", "2C"] and decision["forced"] == ["pm3"]
    decide_script.main(["--params", '{"force": {"pm3": "PASS"}}', "--force", "pm2=PASS", *argv])
    assert read_json(paths[0])["branches"] == ["2A", "2B"]  # --force overrides --params by hand
    assert_clean_exit(
        decide_script.main, ["--params", '{"force": {"pm1": "MAYBE"}}', *argv], "gate.force.pm1"
    )
