"""The gate's decision table, forcing, and the abort report, with every verdict combination."""

from __future__ import annotations

import itertools

import pytest

from actspace import plan
from actspace.gate.abort import negative_results_markdown
from actspace.gate.decision import (
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


# --- a pre-mortem with no value (PM3 with no usable pair): INCONCLUSIVE with its reason ----------

REASON = (
    "only 1 pair(s) where the model is right on both prompts; at least 2 are needed to choose a "
    "layer on one part and measure it on the other"
)


def _pm3_no_value() -> dict:
    """PM3's results.json (as written: NaN becomes null) when only one pair is usable."""
    import json

    import numpy as np

    from actspace.core.io import to_json
    from actspace.methods.patching import LayerPatching
    from actspace.premortems.pm3 import pm3_from_patching

    clean, corrupted = np.array([2.0, -1.0]), np.array([-2.0, -2.0])  # pair 1 wrong on clean
    patched = np.array([[2.0, 1.0, -1.0, -2.0], [-1.0, 0.0, 0.0, 0.0]])
    run = LayerPatching(
        ids=["p0", "p1"],
        layers=[0, 1, 2, 3],
        position="diff",
        positions=np.zeros(2, dtype=int),
        clean_diff=clean,
        corrupted_diff=corrupted,
        patched_diff=patched,
        flipped=patched > 0,
        flipped_argmax=patched > 0,
        candidate_tokens=[1, 2],
        clean_argmax_correct=clean > 0,
        corrupted_argmax_correct=corrupted < 0,
        skipped={},
        n_multi_token_answers=0,
    )
    res = pm3_from_patching(
        run, n_blocks=3, n_bootstrap=100, seed=0, threshold=0.5, selection_fraction=0.5
    )
    return json.loads(to_json(res))


def _no_value_study() -> dict:
    """PM1 and PM2 FAIL, PM3 has no value: the abort path."""
    return {
        "pm1": {**_result("FAIL", 0.1), "ci": [0.05, 0.15]},
        "pm2": {**_result("FAIL", 0.4), "ci": [0.35, 0.45], "threshold": 0.55},
        "pm3": _pm3_no_value(),
    }


def test_pm3_with_one_usable_pair_records_no_value_and_the_reason():
    res = _pm3_no_value()
    assert res["value"] is None and res["ci"] == [None, None] and res["chosen_layer"] is None
    assert res["verdict"] == "INCONCLUSIVE" and res["reason"] == REASON


def test_the_gate_records_no_value_with_the_reason():
    record = measured_verdicts(_no_value_study())
    assert record["pm3"]["value"] is None and record["pm3"]["ci"] == [None, None]
    assert record["pm3"]["verdict"] == "INCONCLUSIVE" and record["pm3"]["reason"] == REASON
    assert "reason" not in record["pm1"] and record["pm1"]["value"] == 0.1  # measured: as it was
    # the reason from an older record's ``note``, or a default; NaN is no value either
    older = {**_no_value_study()["pm3"], "value": float("nan"), "note": "too few items"}
    del older["reason"]
    record = measured_verdicts({**_no_value_study(), "pm3": older})
    assert record["pm3"]["reason"] == "too few items" and record["pm3"]["value"] is None
    bare = {**older, "note": ""}
    assert measured_verdicts({**_no_value_study(), "pm3": bare})["pm3"]["reason"] == NO_VALUE


def test_a_verdict_other_than_inconclusive_needs_a_value():
    results = {**_no_value_study(), "pm3": {**_pm3_no_value(), "verdict": "PASS"}}
    with pytest.raises(ValueError, match="pm3 results.json: verdict PASS but no value"):
        measured_verdicts(results)


def test_the_decision_page_says_inconclusive_with_the_reason():
    decision = decide(measured_verdicts(_no_value_study()), None)
    assert decision["branches"] == ["X"] and decision["inconclusive"] == ["pm3"]
    text = decision_markdown(decision)
    assert (
        "| PM3 activation patching | change_rate | n/a | [n/a, n/a] | 0.500 | INCONCLUSIVE "
        "| INCONCLUSIVE |" in text
    )
    assert (
        f"INCONCLUSIVE with no value: PM3 measured nothing ({REASON}); the plan counts this as "
        "FAIL for scheduling" in text
    )
    assert "straddles" not in text  # nothing was measured: no interval straddles anything


def test_the_abort_report_is_written_with_no_value():
    text = negative_results_markdown(decide(measured_verdicts(_no_value_study()), None))
    row = "| PM3 activation patching | change_rate | n/a | [n/a, n/a] | 0.500 | INCONCLUSIVE |"
    assert row in text
    assert (
        f"- **PM3**: INCONCLUSIVE with no value: nothing was measured ({REASON}). There is no "
        "interval to set against the threshold 0.500" in text
    )
    assert "or when nothing could be measured (n/a; the reason is given below)." in text
    assert "- **PM2**: the whole 95% CI [0.350, 0.450] lies below the threshold 0.550" in text


def test_a_forced_verdict_on_no_value_keeps_the_reason():
    decision = decide(measured_verdicts(_no_value_study()), {"pm3": "FAIL"})
    text = negative_results_markdown(decision)
    assert "| n/a | [n/a, n/a] | 0.500 | FAIL (forced; measured INCONCLUSIVE) |" in text
    assert (
        f"- **PM3**: verdict FAIL (forced; the measurement said INCONCLUSIVE, with no value: "
        f"{REASON})." in text
    )
    page = decision_markdown(decide(measured_verdicts(_no_value_study()), {"pm3": "PASS"}))
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


ALLOWED = "whose verdict is one of PASS, INCONCLUSIVE or FAIL"


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes)"),
        ("", "not valid JSON (Expecting value)"),
        ('["PASS"]', "a JSON list instead of an object"),
        ('{"pm1": {"verdict": "PASS"}, "pm2": {"verdict": "FAIL"}}', "no record for pm3"),
        (
            '{"pm1": {"verdict": "PASS"}, "pm2": {"verdict": "MAYBE"}, "pm3": {"verdict": "FAIL"}}',
            "pm2.verdict 'MAYBE' is unknown",
        ),
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
    assert pm3["value"] is None and pm3["verdict"] == "INCONCLUSIVE"
    reason = pm3["reason"].rstrip(".")
    assert "pair(s) where the model is right on both prompts" in reason
    assert read_json(results / "gate" / "verdicts.json")["pm3"]["reason"] == pm3["reason"]
    assert f"PM3 measured nothing ({reason})" in (results / "gate" / "decision.md").read_text()
    statistics = read_json(results / "analysis" / "statistics.json")
    assert statistics["premortems"]["pm3"]["reason"] == pm3["reason"]
    summary = (results / "summary.md").read_text(encoding="utf-8")
    assert f"INCONCLUSIVE (no value: {reason})" in summary
    # PM1 INCONCLUSIVE, PM2 FAIL (balanced accuracy 0.5), PM3 no value: the abort path
    assert statistics["decision"]["branches"] == ["X"]
    report = (results / "negative_results.md").read_text(encoding="utf-8")
    assert f"- **PM3**: INCONCLUSIVE with no value: nothing was measured ({reason})." in report
