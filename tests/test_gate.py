"""The gate's decision table, forcing, and the abort report, with every verdict combination."""

from __future__ import annotations

import itertools

import pytest
from helpers.premortem_records import no_value_record, record, verdicts_record

from actspace import plan
from actspace.gate.abort import negative_results_markdown
from actspace.gate.decision import (
    CRITERIA,
    NO_VALUE,
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


def _result(
    verdict: str,
    value: float | None = None,
    controlled: str | None = None,
    *,
    pm: str = "pm1",
    threshold: float = 0.3,
) -> dict:
    """A pre-mortem record (the contract's shape, from ``headline``) whose plan verdict is
    ``verdict`` and whose controlled verdict is ``controlled`` (default: the same; FAIL after a
    plan PASS means the metric does not beat its control). ``value`` puts the 95% CI at value
    +- 0.05 (default: the middle of the band that gives ``verdict`` at ``threshold``)."""
    beats = not (verdict == "PASS" and controlled == "FAIL")
    if value is None:
        res = verdicts_record(pm, verdict, beats_control=beats, threshold=threshold)
    else:
        gap = 0.1 if beats else 0.01
        res = record(
            pm,
            value,
            (round(value - 0.05, 6), round(value + 0.05, 6)),
            threshold,
            control=(
                round(value - gap, 6),
                (round(value - gap - 0.05, 6), round(value - gap + 0.05, 6)),
            ),
            comparison=(gap, (0.05, 0.15) if beats else (-0.03, 0.05), 0.0),
        )
    assert res["plan_verdict"] == verdict
    assert res["controlled_verdict"] == (controlled or verdict)
    return res


def _study(*verdicts: str, controlled: str | None = None) -> dict:
    """Each pre-mortem's record with its own metric; ``controlled`` (e.g. "FAIL") applies to the
    first pre-mortem."""
    return {
        pm: _result(v, pm=pm, controlled=controlled if i == 0 else None)
        for i, (pm, v) in enumerate(zip(PMS, verdicts, strict=True))
    }


@pytest.mark.parametrize("combo", list(EXPECTED))
@pytest.mark.parametrize("criterion", CRITERIA)
def test_each_of_the_eight_rows(combo, criterion):
    verdicts = dict(zip(("pm1", "pm2", "pm3"), combo, strict=True))
    assert branches_for(verdicts) == EXPECTED[combo]
    assert forced_branches(verdicts) == EXPECTED[combo]
    measured = measured_verdicts({pm: _result(v) for pm, v in verdicts.items()})
    decision = decide(measured, None, criterion)
    assert decision["branches"] == EXPECTED[combo]
    assert decision["abort"] == (combo == ("FAIL", "FAIL", "FAIL"))
    assert decision["forced"] == [] and decision["disagree"] == []
    assert decision["criterion"] == criterion
    # the verdicts agree: the other criterion schedules the same branches
    assert decision["other_criterion"] == {
        "criterion": "plan" if criterion == "controlled" else "controlled",
        "branches": EXPECTED[combo],
    }


def test_decision_table_has_the_plans_eight_rows_in_order():
    rows = decision_table()
    assert [tuple(verdicts) for verdicts, _ in rows] == list(EXPECTED)
    assert [branches for _, branches in rows] == list(EXPECTED.values())


def test_the_gate_reads_the_plans_premortems():
    assert plan.PREMORTEM_NAMES == PMS
    assert [plan.premortem(pm).branch for pm in PMS] == ["2A", "2B", "2C"]
    assert plan.VERDICTS == ("PASS", "INCONCLUSIVE", "FAIL")
    measured = measured_verdicts(_study("PASS", "PASS", "PASS"))
    text = decision_markdown(decide(measured, None, "controlled"))
    assert "| PM1 | PM2 | PM3 | Branches |" in text
    assert "| PASS | PASS | PASS | 2A, 2B, 2C **<-** |" in text
    assert "Decision-table row (PM1 / PM2 / PM3): **PASS / PASS / PASS**." in text
    assert "| PM1 cross-model similarity | heldout_projection_correlation | 0.400 |" in text


@pytest.mark.parametrize(
    "combo", list(itertools.product(["PASS", "INCONCLUSIVE", "FAIL"], repeat=3))
)
def test_inconclusive_counts_as_fail_and_is_reported(combo):
    measured = measured_verdicts({pm: _result(v) for pm, v in zip(PMS, combo, strict=True)})
    decision = decide(measured, {}, "controlled")
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
    decision = decide(measured, {"pm2": "PASS"}, "controlled")
    assert decision["branches"] == ["2B"]
    assert decision["forced"] == ["pm2"]
    info = decision["premortems"]["pm2"]
    assert info["verdict"] == "PASS" and info["measured_verdict"] == "FAIL" and info["forced"]
    text = decision_markdown(decision)
    assert "Forced verdicts: PM2" in text and "| PASS (forced) |" in text


def test_partial_force_needs_the_measurement():
    assert forced_branches({"pm1": "PASS", "pm2": None, "pm3": "FAIL"}) is None
    records = measured_verdicts({pm: _result("PASS") for pm in PMS})
    del records["pm3"]
    with pytest.raises(ValueError, match="no controlled_verdict for pm3"):
        effective_verdicts(records, {}, "controlled")
    with pytest.raises(ValueError, match="no plan_verdict for pm3"):
        effective_verdicts(records, {}, "plan")
    # forced, it needs no record
    assert effective_verdicts(records, {"pm3": "FAIL"}, "plan")["pm3"]["verdict"] == "FAIL"


def test_bad_verdicts_are_refused():
    with pytest.raises(ValueError, match="allowed"):
        planning_verdict("MAYBE")
    records = measured_verdicts({pm: _result("PASS") for pm in PMS})
    with pytest.raises(ValueError, match="gate.force.pm1"):
        effective_verdicts(records, {"pm1": "INCONCLUSIVE"}, "controlled")
    with pytest.raises(
        ValueError, match=r"gate.criterion: 'strict' is not allowed \(controlled or"
    ):
        effective_verdicts(records, {}, "strict")
    bad = {**_result("PASS"), "plan_verdict": "YES"}
    with pytest.raises(ValueError, match="pm2 results.json: plan_verdict 'YES' is not one of"):
        measured_verdicts({"pm1": _result("PASS"), "pm2": bad, "pm3": _result("PASS")})


@pytest.mark.parametrize(
    ("change", "words"),
    [
        # a record from before the two verdicts: a ``verdict`` key only
        (
            {"verdict": "PASS", "plan_verdict": None, "controlled_verdict": None},
            "plan_verdict None",
        ),
        ({"controlled_verdict": "MAYBE"}, "controlled_verdict 'MAYBE' is not one of"),
        # the controlled verdict differs from the plan's only after a plan PASS
        ({"plan_verdict": "FAIL", "controlled_verdict": "PASS"}, "controlled_verdict PASS with"),
        ({"controlled_verdict": "INCONCLUSIVE"}, "after a plan PASS the controlled verdict is"),
        ({"control": [0.1]}, "pm1 results.json: control must be an object or null"),
        ({"controlled": {"ci": [0.1]}}, r"controlled.ci must be \[low, high\]"),
    ],
)
def test_a_record_off_the_contract_is_refused_naming_the_key(change, words):
    res = {**_result("PASS"), **change}
    with pytest.raises(ValueError, match=words):
        measured_verdicts({"pm1": res, "pm2": _result("PASS"), "pm3": _result("PASS")})


def test_the_checkpoint_records_both_verdicts_and_the_control_but_no_choice():
    record = measured_verdicts(_study("PASS", "FAIL", "PASS", controlled="FAIL"))
    pm1 = record["pm1"]
    assert list(pm1) == [
        "title", "metric", "value", "ci", "ci_level", "threshold", "n", "plan_verdict",
        "controlled_verdict", "control", "controlled",
    ]  # fmt: skip
    assert (pm1["plan_verdict"], pm1["controlled_verdict"]) == ("PASS", "FAIL")
    assert pm1["control"] == {
        "name": "trivial", "description": "what a trivial explanation gives", "value": 0.39,
        "ci": [0.34, 0.44],
    }  # fmt: skip
    assert pm1["controlled"] == {
        "statistic": "metric - control", "value": 0.01, "ci": [-0.03, 0.05], "bound": 0.0,
        "passed": False,
    }  # fmt: skip
    assert all("verdict" not in info for info in record.values())  # no choice made here


# --- gate.criterion: which measured verdict decides ----------------------------------------------


def _disagreeing() -> dict:
    """PM1 clears its threshold but not its control (plan PASS, controlled FAIL); PM2 fails both;
    PM3 passes both."""
    return measured_verdicts(_study("PASS", "FAIL", "PASS", controlled="FAIL"))


def test_the_criterion_picks_the_verdict_and_so_the_branches():
    measured = _disagreeing()
    controlled = decide(measured, None, "controlled")
    by_plan = decide(measured, None, "plan")
    assert controlled["branches"] == ["2C"] and by_plan["branches"] == ["2A", "2C"]
    assert controlled["row"] == ["FAIL", "FAIL", "PASS"] and by_plan["row"] == [
        "PASS",
        "FAIL",
        "PASS",
    ]
    assert controlled["disagree"] == by_plan["disagree"] == ["pm1"]
    assert controlled["other_criterion"] == {"criterion": "plan", "branches": ["2A", "2C"]}
    assert by_plan["other_criterion"] == {"criterion": "controlled", "branches": ["2C"]}
    for decision, used in ((controlled, "FAIL"), (by_plan, "PASS")):
        pm1 = decision["premortems"]["pm1"]
        assert (pm1["plan_verdict"], pm1["controlled_verdict"]) == ("PASS", "FAIL")
        assert pm1["verdict"] == pm1["measured_verdict"] == used and not pm1["forced"]
    # on the same records, the effective verdicts alone
    assert effective_verdicts(measured, None, "plan")["pm1"]["verdict"] == "PASS"
    assert effective_verdicts(measured, None, "controlled")["pm1"]["verdict"] == "FAIL"


def test_force_overrides_either_criterion():
    measured = _disagreeing()
    forced_open = decide(measured, {"pm1": "PASS"}, "controlled")
    assert forced_open["branches"] == ["2A", "2C"] and forced_open["forced"] == ["pm1"]
    pm1 = forced_open["premortems"]["pm1"]
    assert pm1["verdict"] == "PASS" and pm1["measured_verdict"] == "FAIL" and pm1["forced"]
    forced_shut = decide(measured, {"pm1": "FAIL", "pm3": "FAIL"}, "plan")
    assert forced_shut["branches"] == ["X"] and forced_shut["abort"]
    assert forced_shut["premortems"]["pm1"]["measured_verdict"] == "PASS"
    # the other criterion is forced the same way: nothing left to differ
    assert forced_shut["other_criterion"]["branches"] == ["X"]


def test_the_decision_page_shows_both_verdicts_and_the_control_side_by_side():
    text = decision_markdown(decide(_disagreeing(), None, "controlled"))
    assert "The gate decided on the **controlled** verdicts (`gate.criterion: controlled`)" in text
    assert (
        "| Pre-mortem | Metric | Value | 95% CI | Threshold | Plan verdict | Control "
        "| Control value [95% CI] | Controlled comparison [95% CI] | Controlled verdict "
        "| Verdict used (controlled) |" in text
    )
    assert (
        "| PM1 cross-model similarity | heldout_projection_correlation | 0.400 | [0.350, 0.450] "
        "| 0.300 | PASS | trivial | 0.390 [0.340, 0.440] | 0.010 [-0.030, 0.050] (bound 0.000) "
        "| FAIL | FAIL |" in text
    )
    assert (
        "| PM3 activation patching | change_rate | 0.400 | [0.350, 0.450] | 0.300 | PASS "
        "| trivial | 0.300 [0.250, 0.350] | 0.100 [0.050, 0.150] (bound 0.000) | PASS | PASS |"
        in text
    )
    assert (
        "- PM1: control trivial (what a trivial explanation gives); controlled comparison: "
        "metric - control, which passes when its 95% CI lies above 0.000 (did not pass)." in text
    )
    assert (
        "PM1: plan verdict PASS, controlled verdict FAIL: the metric clears its threshold" in text
    )
    assert "Under the plan criterion the gate would have scheduled: 2A (" in text
    page = decision_markdown(decide(_disagreeing(), None, "plan"))
    assert "The gate decided on the **plan** verdicts (`gate.criterion: plan`)" in page
    assert "| FAIL | PASS |" in page.split("| PM1 ")[1].splitlines()[0]  # controlled, used
    assert "Under the controlled criterion the gate would have scheduled: 2C (" in page
    agree = decision_markdown(decide(measured_verdicts({pm: _result("PASS") for pm in PMS}),
                                     None, "plan"))  # fmt: skip
    assert "The controlled criterion schedules the same branches." in agree


def test_abort_targets_the_report_and_unknown_branches_are_refused():
    assert targets_for(["X"], {}) == ["results/negative_results.md"]
    with pytest.raises(KeyError, match="unknown branch '2D'"):
        plan.branch("2D")


def test_negative_results_report_has_the_numbers_and_sections():
    results = {
        "pm1": _result("FAIL", 0.1, pm="pm1"),
        "pm2": _result("INCONCLUSIVE", 0.55, pm="pm2", threshold=0.55),
        "pm3": _result("FAIL", 0.2, pm="pm3"),
    }
    text = negative_results_markdown(decide(measured_verdicts(results), None, "controlled"))
    for heading in (
        "## Summary",
        "## Pre-mortems against their thresholds and controls",
        "## Implications",
        "## Value of the negative result",
        "## Pivot options",
    ):
        assert heading in text
    assert (
        "| 0.100 | [0.050, 0.150] | 0.300 | FAIL | 0.000 [-0.050, 0.050] "
        "| 0.100 [0.050, 0.150] (bound 0.000) | FAIL | FAIL |" in text
    )
    assert "straddles the threshold 0.550" in text
    assert "Forced" not in text
    assert "- **PM3**: the whole 95% CI [0.150, 0.250] lies below the threshold 0.300: " in text
    assert plan.premortem("pm3").fail_meaning in text
    assert "(2A cross-model transfer; 2B error prediction; 2C activation patching" in text
    assert "The gate decided on the **controlled** verdicts" in text
    assert "The plan criterion schedules the same branches." in text


def test_the_abort_report_says_a_plan_pass_did_not_beat_its_control():
    measured = measured_verdicts(_study("PASS", "FAIL", "FAIL", controlled="FAIL"))
    decision = decide(measured, None, "controlled")
    assert decision["abort"]
    text = negative_results_markdown(decision)
    assert (
        "- **PM1**: the 95% CI [0.350, 0.450] lies above the threshold 0.300 (plan verdict "
        "PASS), but the metric does not beat its control, trivial (0.390 [0.340, 0.440]): the "
        "controlled comparison (metric - control) is 0.010 [-0.030, 0.050] (bound 0.000)" in text
    )
    assert "lies below the threshold 0.300: " + plan.premortem("pm1").fail_meaning not in text
    assert "Under the plan criterion the gate would have scheduled: 2A (" in text
    # the plan criterion opens 2A on the same measurements: no abort, no report
    assert decide(measured, None, "plan")["branches"] == ["2A"]


def test_negative_results_report_marks_forced_verdicts():
    measured = measured_verdicts({pm: _result("PASS") for pm in PMS})
    decision = decide(measured, {"pm1": "FAIL", "pm2": "FAIL", "pm3": "FAIL"}, "controlled")
    assert decision["abort"]
    text = negative_results_markdown(decision)
    assert "**Forced verdicts: PM1, PM2, PM3.**" in text
    assert "| PASS | FAIL (forced; measured PASS) |" in text
    assert "- **PM2**: verdict FAIL (forced; the measurement said PASS)." in text
    assert "lies below the threshold" not in text  # a forced FAIL is not read as a measurement
    disagreeing = decide(_disagreeing(), {"pm3": "FAIL"}, "controlled")
    text = negative_results_markdown(disagreeing)
    assert "- **PM3**: verdict FAIL (forced; the measurement said PASS)." in text
    assert "lies above the threshold 0.300 (plan verdict PASS), but" in text  # PM1, measured


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
    assert {pm: info["plan_verdict"] for pm, info in read_json(verdicts).items()} == {
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
    assert decision["criterion"] == "controlled"  # the schema's default
    decide_script.main(["--params", '{"force": {"pm3": "PASS"}}', "--force", "pm2=PASS", *argv])
    assert read_json(paths[0])["branches"] == ["2A", "2B"]  # --force overrides --params by hand
    assert_clean_exit(
        decide_script.main, ["--params", '{"force": {"pm1": "MAYBE"}}', *argv], "gate.force.pm1"
    )
    assert_clean_exit(
        decide_script.main, ["--params", '{"criterion": "strict"}', *argv], "gate.criterion"
    )


def test_decide_applies_the_criterion_of_the_gate_section(tmp_path):
    from helpers.scripts import load_script

    from actspace.core.io import atomic_write_json, read_json

    verdicts = tmp_path / "verdicts.json"
    atomic_write_json(verdicts, _disagreeing())
    out = ["--output-json", str(tmp_path / "d.json"), "--output-md", str(tmp_path / "d.md")]
    decide_script = load_script("decide")
    branches = {}
    for criterion in CRITERIA:
        params = f'{{"criterion": "{criterion}"}}'
        decide_script.main(["--params", params, "--verdicts", str(verdicts), *out])
        decision = read_json(tmp_path / "d.json")
        assert decision["criterion"] == criterion
        branches[criterion] = decision["branches"]
    assert branches == {"controlled": ["2C"], "plan": ["2A", "2C"]}
    decide_script.main(  # --criterion overrides --params by hand
        ["--params", '{"criterion": "controlled"}', "--criterion", "plan",
         "--verdicts", str(verdicts), *out]
    )  # fmt: skip
    assert read_json(tmp_path / "d.json")["branches"] == ["2A", "2C"]
    assert "**plan** verdicts" in (tmp_path / "d.md").read_text()


# --- a pre-mortem with no value (PM3 with no usable pair): INCONCLUSIVE with its reason ----------

REASON = (
    "only 1 pair(s) where the model is right on both prompts; at least 2 are needed to choose a "
    "layer on one part and measure it on the other"
)


def _pm3_no_value() -> dict:
    """PM3's results.json (as written: NaN becomes null) when only one pair is usable."""
    return no_value_record("pm3", REASON, threshold=0.5)


def _no_value_study() -> dict:
    """PM1 and PM2 FAIL, PM3 has no value: the abort path."""
    return {
        "pm1": _result("FAIL", 0.1, pm="pm1"),
        "pm2": _result("FAIL", 0.4, pm="pm2", threshold=0.55),
        "pm3": _pm3_no_value(),
    }


def test_the_gate_records_no_value_with_the_reason():
    record = measured_verdicts(_no_value_study())
    assert record["pm3"]["value"] is None and record["pm3"]["ci"] == [None, None]
    assert record["pm3"]["plan_verdict"] == record["pm3"]["controlled_verdict"] == "INCONCLUSIVE"
    assert record["pm3"]["reason"] == REASON
    assert record["pm3"]["control"] is None and record["pm3"]["controlled"] is None
    assert "reason" not in record["pm1"] and record["pm1"]["value"] == 0.1  # measured: as it was
    # the reason from an older record's ``note``, or a default; NaN is no value either
    older = {**_no_value_study()["pm3"], "value": float("nan"), "note": "too few items"}
    del older["reason"]
    record = measured_verdicts({**_no_value_study(), "pm3": older})
    assert record["pm3"]["reason"] == "too few items" and record["pm3"]["value"] is None
    bare = {**older, "note": ""}
    assert measured_verdicts({**_no_value_study(), "pm3": bare})["pm3"]["reason"] == NO_VALUE


def test_a_verdict_other_than_inconclusive_needs_a_value():
    passed = {**_pm3_no_value(), "plan_verdict": "PASS", "controlled_verdict": "PASS"}
    results = {**_no_value_study(), "pm3": passed}
    with pytest.raises(ValueError, match="pm3 results.json: plan_verdict PASS but no value"):
        measured_verdicts(results)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_the_decision_page_says_inconclusive_with_the_reason(criterion):
    decision = decide(measured_verdicts(_no_value_study()), None, criterion)
    assert decision["branches"] == ["X"] and decision["inconclusive"] == ["pm3"]
    text = decision_markdown(decision)
    assert (
        "| PM3 activation patching | change_rate | n/a | [n/a, n/a] | 0.500 | INCONCLUSIVE "
        "| n/a | n/a | n/a | INCONCLUSIVE | INCONCLUSIVE |" in text
    )
    assert "- PM3: no control was measured." in text
    assert (
        f"INCONCLUSIVE with no value: PM3 measured nothing ({REASON}); the plan counts this as "
        "FAIL for scheduling" in text
    )
    assert "straddles" not in text  # nothing was measured: no interval straddles anything


def test_the_abort_report_is_written_with_no_value():
    text = negative_results_markdown(decide(measured_verdicts(_no_value_study()), None, "plan"))
    row = (
        "| PM3 activation patching | change_rate | n/a | [n/a, n/a] | 0.500 | INCONCLUSIVE | n/a "
        "| n/a | INCONCLUSIVE | INCONCLUSIVE |"
    )
    assert row in text
    assert (
        f"- **PM3**: INCONCLUSIVE with no value: nothing was measured ({REASON}). There is no "
        "interval to set against the threshold 0.500" in text
    )
    assert "or when nothing could be measured (n/a; the reason is given below)." in text
    assert "- **PM2**: the whole 95% CI [0.350, 0.450] lies below the threshold 0.550" in text
    assert "The gate decided on the **plan** verdicts" in text


def test_a_forced_verdict_on_no_value_keeps_the_reason():
    decision = decide(measured_verdicts(_no_value_study()), {"pm3": "FAIL"}, "controlled")
    text = negative_results_markdown(decision)
    assert "| n/a | [n/a, n/a] | 0.500 | INCONCLUSIVE | n/a | n/a | INCONCLUSIVE " in text
    assert "| FAIL (forced; measured INCONCLUSIVE) |" in text
    assert (
        f"- **PM3**: verdict FAIL (forced; the measurement said INCONCLUSIVE, with no value: "
        f"{REASON})." in text
    )
    page = decision_markdown(
        decide(measured_verdicts(_no_value_study()), {"pm3": "PASS"}, "controlled")
    )
    assert f"PM3 measured nothing ({REASON}); its verdict was forced to PASS" in page


def test_the_gate_scripts_write_every_report_when_a_premortem_has_no_value(tmp_path):
    from helpers.scripts import load_script

    from actspace.core.io import atomic_write_json, read_json

    files = []
    for pm, res in _no_value_study().items():
        atomic_write_json(tmp_path / pm / "results.json", res)
        files += [f"--{pm}", str(tmp_path / pm / "results.json")]
    gate = tmp_path / "gate"
    load_script("gate").main([*files, "--output", str(gate / "verdicts.json")])
    assert read_json(gate / "verdicts.json")["pm3"]["reason"] == REASON
    load_script("decide").main(
        ["--verdicts", str(gate / "verdicts.json"), "--output-json", str(gate / "decision.json"),
         "--output-md", str(gate / "decision.md")]
    )  # fmt: skip
    assert "INCONCLUSIVE with no value: PM3" in (gate / "decision.md").read_text()
    report = tmp_path / "negative_results.md"
    load_script("abort_report").main(
        ["--decision", str(gate / "decision.json"), "--output", str(report)]
    )
    assert f"nothing was measured ({REASON})" in report.read_text()


# --- the checkpoint's verdicts.json, read by the workflow and by decide.py ------------------------


def _verdicts(tmp_path, text: str):
    path = tmp_path / "gate" / "verdicts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


ALLOWED = "whose plan_verdict and controlled_verdict are each one of PASS, INCONCLUSIVE or FAIL"
BOTH = '{"plan_verdict": "PASS", "controlled_verdict": "PASS"}'


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes)"),
        ("", "not valid JSON (Expecting value)"),
        ('["PASS"]', "a JSON list instead of an object"),
        (f'{{"pm1": {BOTH}, "pm2": {BOTH}}}', "no record for pm3"),
        (
            f'{{"pm1": {BOTH}, "pm2": {{"plan_verdict": "MAYBE", "controlled_verdict": "FAIL"}}, '
            f'"pm3": {BOTH}}}',
            "pm2.plan_verdict 'MAYBE' is unknown",
        ),
        (
            f'{{"pm1": {BOTH}, "pm2": {BOTH}, "pm3": {{"plan_verdict": "PASS", '
            '"controlled_verdict": null}}',
            "pm3.controlled_verdict None is unknown",
        ),
        # written before the two verdicts: the gate must measure again
        (
            '{"pm1": {"verdict": "PASS"}, "pm2": {"verdict": "FAIL"}, "pm3": {"verdict": "FAIL"}}',
            "pm1 has no plan_verdict",
        ),
        (
            f'{{"pm1": {{"plan_verdict": "PASS"}}, "pm2": {BOTH}, "pm3": {BOTH}}}',
            "pm1 has no controlled_verdict",
        ),  # fmt: skip
        ('{"pm1": "PASS", "pm2": "PASS", "pm3": "PASS"}', "no record for pm1"),
    ],
)
def test_an_invalid_verdicts_file_is_one_line_naming_it(tmp_path, text, what):
    from helpers.scripts import assert_clean_exit, load_script

    from actspace.gate.decision import VerdictsError, read_verdicts

    path = _verdicts(tmp_path, text)
    with pytest.raises(VerdictsError) as error:
        read_verdicts(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {what}") and "\n" not in message
    assert ALLOWED in message and "delete it and the gate measures the verdicts again" in message
    out = ["--output-json", str(tmp_path / "d.json"), "--output-md", str(tmp_path / "d.md")]
    assert_clean_exit(load_script("decide").main, ["--verdicts", str(path), *out], what)


def test_invalid_utf8_in_the_verdicts_file_is_one_line(tmp_path):
    from actspace.gate.decision import VerdictsError, read_verdicts

    path = _verdicts(tmp_path, "")
    path.write_bytes(b'{"pm1": "\xff"}')
    with pytest.raises(VerdictsError, match=r"verdicts.json: not valid JSON \(not UTF-8\)"):
        read_verdicts(path)


# --- end to end (slow): the default study with barely trained organisms --------------------------

#: Both organisms at 150 training steps: PM3 finds too few pairs the model gets right on both
#: prompts and has no value.
BARELY_TRAINED = (
    'models={"tiny_gpt2": {"source": "organism", "family": "gpt2", "train_seed": 1, '
    '"train_steps": 150}, "tiny_neox": {"source": "organism", "family": "gpt_neox", '
    '"train_seed": 2, "train_steps": 150}}'
)


@pytest.mark.slow
def test_barely_trained_organisms_write_every_report_with_the_reason(tmp_path):
    from helpers.workflow import copy_workflow, snakemake

    workdir = copy_workflow(tmp_path / "study")
    snakemake(workdir, "--cores", "2", "--config", BARELY_TRAINED)
    _check_every_report_says_why(workdir)


def _check_every_report_says_why(workdir):
    from actspace.core.io import read_json

    results = workdir / plan.RESULTS
    pm3 = read_json(workdir / plan.premortem("pm3").folder / "results.json")
    assert pm3["value"] is None and "verdict" not in pm3
    assert pm3["plan_verdict"] == pm3["controlled_verdict"] == "INCONCLUSIVE"
    reason = pm3["reason"].rstrip(".")
    assert "pair(s) where the model is right on both prompts" in reason
    assert read_json(results / "gate" / "verdicts.json")["pm3"]["reason"] == pm3["reason"]
    assert f"PM3 measured nothing ({reason})" in (results / "gate" / "decision.md").read_text()
    statistics = read_json(results / "analysis" / "statistics.json")
    assert statistics["premortems"]["pm3"]["reason"] == pm3["reason"]
    summary = (results / "summary.md").read_text(encoding="utf-8")
    assert (
        f"-> INCONCLUSIVE (plan INCONCLUSIVE, controlled INCONCLUSIVE) (no value: {reason})"
        in summary
    )
    # PM1 INCONCLUSIVE, PM2 FAIL (balanced accuracy 0.5), PM3 no value: the abort path
    assert statistics["decision"]["branches"] == ["X"]
    report = (results / "negative_results.md").read_text(encoding="utf-8")
    assert f"- **PM3**: INCONCLUSIVE with no value: nothing was measured ({reason})." in report
