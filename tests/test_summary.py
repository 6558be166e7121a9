"""The summary table and the study summary: numbers copied exactly, forced verdicts marked."""

from __future__ import annotations

import re

import pytest

from actspace.analysis.summary import number, study_summary, summary_table
from actspace.core.criteria import criterion

CONTROL = {"name": "surface", "description": "token embeddings", "value": 0.2,
           "ci": [0.1, 0.3]}  # fmt: skip
CONTROLLED = {"statistic": "metric - control", "value": 0.25, "ci": [0.2, 0.3], "bound": 0.0,
              "passed": True}  # fmt: skip
STATISTICS = {
    "decision": {"criterion": "controlled", "branches": ["2A", "2C"], "forced": ["pm3"],
                 "disagree": [], "other_criterion": {"criterion": "plan",
                                                     "branches": ["2A", "2C"]}},
    "premortems": {
        "pm1": {"name": "cross-model similarity", "metric": "correlation_after_projection",
                "value": 0.4567, "ci": [0.35, 0.55], "threshold": 0.3, "plan_verdict": "PASS",
                "controlled_verdict": "PASS", "control": CONTROL, "controlled": CONTROLLED,
                "verdict": "PASS", "measured_verdict": "PASS", "forced": False, "n": 64},
        "pm2": {"name": "error prediction", "metric": "balanced_accuracy", "value": 0.5,
                "ci": [0.4, 0.6], "threshold": 0.55, "plan_verdict": "INCONCLUSIVE",
                "controlled_verdict": "INCONCLUSIVE", "control": CONTROL,
                "controlled": {**CONTROLLED, "passed": False}, "verdict": "INCONCLUSIVE",
                "measured_verdict": "INCONCLUSIVE", "forced": False, "n": 60},
        "pm3": {"name": "activation patching", "metric": "change_rate", "value": 0.0,
                "ci": [0.0, 0.137], "threshold": 0.5, "plan_verdict": "FAIL",
                "controlled_verdict": "FAIL", "control": None, "controlled": None,
                "verdict": "PASS", "measured_verdict": "FAIL", "forced": True, "n": 25},
    },
    "comparisons": [
        {"id": "activation_transfer", "experiment": "activation_transfer", "label": None,
         "branch": "2A", "metric": "transfer_gain_points", "value": 1.2345678, "ci": [-0.5, 2.9],
         "n": 150, "success": False, "p_value": 0.31, "p_holm": 0.62, "test": "McNemar exact",
         "held_out": True, "in_holm_family": True,
         "criteria": [
             criterion("gain_at_least_min_gain", kind="plan", rule="the gain is at least 2 points",
                       value=1.2345678, ci=[-0.5, 2.9], bound=2.0, passed=False),
             criterion("beats_shuffled_control", kind="control",
                       rule="the paired interval of transfer minus shuffled lies above 0",
                       value=0.9, ci=[0.2, 1.6], bound=0.0)],
         "effect_size": {"name": "cohens_d_z", "value": 0.11}, "seed": 42,
         "seeds": {"42": 1.2345678, "123": 0.8}, "seed_mean": 1.0172839, "seed_sd": 0.31,
         "source": "results/experiments/activation_transfer/seed42/results.json"},
        {"id": "behavior_edit:toxicity", "experiment": "behavior_edit", "label": "toxicity",
         "branch": "2C", "metric": "attribute_shift_at_best_setting", "value": 0.25,
         "ci": [0.1, 0.4], "n": 20, "success": True, "p_value": None, "p_holm": None,
         "test": None, "effect_size": {"name": None, "value": None}, "seed": 42, "seeds": None,
         "held_out": True, "in_holm_family": False,
         "criteria": [criterion("shift_above_0", kind="plan", rule="the shift lies above 0",
                                value=0.25, ci=[0.1, 0.4], bound=0.0)],
         "source": "results/experiments/behavior_edit/seed42/results.json"},
    ],
}  # fmt: skip


def _rows(table: str) -> list[list[str]]:
    body = table.split("| --- |")[0]
    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert body
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_the_table_has_the_fixed_columns_and_the_experiments_numbers():
    table = summary_table(STATISTICS)
    assert "| Experiment | Metric | Value | 95% CI | p-value |" in table
    rows = _rows(table)
    transfer = next(r for r in rows if "activation_transfer" in r[0])
    assert float(transfer[2]) == pytest.approx(1.2345678, rel=1e-3)
    low, high = map(float, re.findall(r"-?[\d.]+", transfer[3]))
    assert (low, high) == (-0.5, 2.9)
    assert transfer[4].startswith("0.62 (Holm; raw 0.31, McNemar exact)")
    toxicity = next(r for r in rows if "toxicity" in r[0])
    assert toxicity[4] == "n/a (no test)"
    assert transfer[5] == "NOT met: gain_at_least_min_gain FAILED; beats_shuffled_control passed"
    assert toxicity[5] == "met: shift_above_0 passed"
    assert table.startswith(
        "# Summary table\n\n**Strongest held-out result:** behavior_edit:toxicity (2C): "
        "shift in attribute score at the best steering setting (score difference) = 0.25, "
        "95% CI [0.1, 0.4], n = 20; it met its criteria (every part: shift_above_0).\n"
    )
    pm3 = next(r for r in rows if r[0].startswith("PM3"))
    assert "forced; measured FAIL" in pm3[0]
    pm2 = next(r for r in rows if r[0].startswith("PM2"))
    assert "INCONCLUSIVE" in pm2[0] and "forced" not in pm2[0]
    pm1 = next(r for r in rows if r[0].startswith("PM1"))
    assert (
        pm1[0] == "PM1 cross-model similarity — PASS (plan PASS, controlled PASS) (threshold 0.3)"
    )
    assert "Forced verdicts: PM3" in table
    assert (
        "Pre-mortem verdicts: the one the gate used (criterion controlled), then the plan and "
        "the controlled verdict." in table
    )
    assert "| activation_transfer | 42: 1.235, 123: 0.8 | 1.017 | 0.31 |" in table


def test_the_study_summary_says_what_ran_why_and_where():
    text = study_summary(
        STATISTICS,
        outputs={"decision": "results/gate/decision.md", "paper_draft": "results/paper/draft.tex"},
        figures=[{"name": "transfer_gain", "caption": "Gain."}],
    )
    assert "PM3 (activation patching)" in text and "forced; measured FAIL" in text
    assert (
        "- PM1 (cross-model similarity): correlation after projection = 0.4567, 95% CI "
        "[0.35, 0.55], threshold 0.3; control surface = 0.2, 95% CI [0.1, 0.3]; metric - control "
        "= 0.25, 95% CI [0.2, 0.3] (bound 0) -> PASS (plan PASS, controlled PASS)" in text
    )
    assert "threshold 0.5; no control measured -> PASS **(forced; measured FAIL)**" in text
    assert "The gate decided on the **controlled** verdicts (`gate.criterion: controlled`)" in text
    assert "The plan criterion schedules the same branches." in text
    assert "2A (cross-model transfer); 2C (activation patching and behaviour editing)" in text
    assert (
        "did NOT meet its criteria: failed gain_at_least_min_gain: the gain is at least 2 points "
        "(value 1.235, 95% CI [-0.5, 2.9], bound 2); passed beats_shuffled_control." in text
    )
    assert "cohens_d_z 0.11, Holm p 0.62; did NOT" in text
    assert "met its criteria: passed shift_above_0." in text
    assert (
        "## The result that leads\n\n**Strongest held-out result:** behavior_edit:toxicity" in text
    )
    assert "- paper draft: `results/paper/draft.tex`" in text
    assert "`transfer_gain`: Gain." in text


def test_the_summaries_say_which_criterion_decided_and_show_both_verdicts():
    """PM1 clears its threshold but not its control: the controlled criterion shuts 2A."""
    premortems = {pm: dict(info) for pm, info in STATISTICS["premortems"].items()}
    premortems["pm1"].update(
        controlled_verdict="FAIL",
        verdict="FAIL",
        measured_verdict="FAIL",
        controlled={**CONTROLLED, "ci": [-0.1, 0.6], "passed": False},
    )
    decision = {"criterion": "controlled", "branches": ["2C"], "forced": ["pm3"],
                "disagree": ["pm1"],
                "other_criterion": {"criterion": "plan", "branches": ["2A", "2C"]}}  # fmt: skip
    statistics = {**STATISTICS, "decision": decision, "premortems": premortems}
    pm1 = next(r for r in _rows(summary_table(statistics)) if r[0].startswith("PM1"))
    assert pm1[0] == (
        "PM1 cross-model similarity — FAIL (plan PASS, controlled FAIL) (threshold 0.3)"
    )
    text = study_summary(statistics, outputs={})
    assert "(bound 0) -> FAIL (plan PASS, controlled FAIL)" in text
    assert (
        "Under the plan criterion the gate would have scheduled: 2A (cross-model transfer), 2C "
        "(activation patching and behaviour editing)." in text
    )
    by_plan = {**decision, "criterion": "plan", "branches": ["2A", "2C"],
               "other_criterion": {"criterion": "controlled", "branches": ["2C"]}}  # fmt: skip
    text = study_summary({**statistics, "decision": by_plan}, outputs={})
    assert "The gate decided on the **plan** verdicts (`gate.criterion: plan`)" in text
    assert "Under the controlled criterion the gate would have scheduled: 2C (" in text


def test_the_abort_path_points_at_the_negative_results():
    decision = {"criterion": "controlled", "branches": ["X"], "forced": []}
    aborted = {**STATISTICS, "decision": decision, "comparisons": []}
    text = study_summary(aborted, outputs={"negative_results": "results/negative_results.md"})
    assert "the plan aborts" in text and "no paper is drafted" in text
    assert "Headline numbers" not in text


def test_number_formatting():
    assert number(None) == "n/a" and number(float("nan")) == "n/a"
    assert number(0.123456) == "0.1235" and number(12.0) == "12"


# --- a pre-mortem with no value (PM3 with no usable pair): every report is written --------------

REASON = "only 1 pair(s) where the model is right on both prompts; at least 2 are needed"


def _no_value_statistics(force: dict | None = None, comparisons: list | None = None) -> dict:
    """statistics.json from the gate's own functions: PM1 FAIL, PM2 PASS, PM3 with no value."""
    from helpers.premortem_records import no_value_record, record

    from actspace.analysis.statistics import build_statistics
    from actspace.gate.decision import decide, measured_verdicts

    results = {
        "pm1": record("pm1", 0.1, [0.05, 0.15], 0.3, n=64),
        "pm2": record("pm2", 0.62, [0.58, 0.66], 0.55, n=64),
        "pm3": no_value_record("pm3", REASON, 0.5),
    }
    decision = decide(measured_verdicts(results), force, "controlled")
    statistics = build_statistics(
        decision, [], n_bootstrap=100, n_permutations=100, alpha=0.05, seed=0
    )
    statistics["comparisons"] = comparisons or []
    family = [c["id"] for c in statistics["comparisons"] if c.get("in_holm_family")]
    statistics["holm"].update(family=family, n_comparisons=len(family))
    return statistics


def test_statistics_keep_no_value_and_the_reason():
    premortems = _no_value_statistics()["premortems"]
    assert premortems["pm3"]["value"] is None and premortems["pm3"]["ci"] == [None, None]
    assert premortems["pm3"]["verdict"] == "INCONCLUSIVE" and premortems["pm3"]["reason"] == REASON
    assert premortems["pm3"]["plan_verdict"] == premortems["pm3"]["controlled_verdict"]
    assert premortems["pm3"]["control"] is None and premortems["pm3"]["controlled"] is None
    assert "reason" not in premortems["pm2"] and premortems["pm2"]["value"] == 0.62


def test_the_summaries_say_inconclusive_with_the_reason():
    statistics = _no_value_statistics()
    pm3 = next(r for r in _rows(summary_table(statistics)) if r[0].startswith("PM3"))
    assert pm3 == [
        f"PM3 activation patching — INCONCLUSIVE (plan INCONCLUSIVE, controlled INCONCLUSIVE) "
        f"(no value: {REASON}) (threshold 0.5)",
        "change_rate", "n/a", "[n/a, n/a]", "n/a (verdict by CI)",
        "the verdict (threshold and control)",
    ]  # fmt: skip
    text = study_summary(statistics, outputs={"decision": "results/gate/decision.md"})
    assert (
        "- PM3 (activation patching): share of corrupted answers flipped to the clean answer = "
        "n/a, 95% CI [n/a, n/a], threshold 0.5; no control measured -> INCONCLUSIVE (plan "
        f"INCONCLUSIVE, controlled INCONCLUSIVE) (no value: {REASON})" in text
    )
    assert "INCONCLUSIVE (the CI straddles the threshold, or nothing was measured) counts" in text
    aborted = _no_value_statistics({"pm2": "FAIL"})
    text = study_summary(aborted, outputs={"negative_results": "results/negative_results.md"})
    assert "the plan aborts" in text and f"INCONCLUSIVE) (no value: {REASON})" in text


def test_a_study_with_every_value_says_nothing_of_missing_values():
    text = study_summary(STATISTICS, outputs={})
    assert "nothing was measured" not in text and "no value" not in text


def _comparison(branch: str, experiment: str) -> dict:
    return {"id": experiment, "experiment": experiment, "branch": branch, "metric": "gain",
            "value": 0.3, "ci": [0.1, 0.5], "n": 80, "success": True, "p_value": 0.01,
            "p_holm": 0.01, "test": "bootstrap", "effect_size": {"name": "d", "value": 0.5},
            "success_rule": "gain > 0", "held_out": True, "in_holm_family": True,
            "source": f"results/experiments/{experiment}/seed42/results.json"}  # fmt: skip


PAPER_CONFIG = {
    "seed": 42,
    "seeds": [42],
    "models": {"tiny_gpt2": {"source": "organism", "family": "gpt2", "train_seed": 1}},
    "tasks": {"facts": {"type": "builtin", "builtin": "facts"}},
    "gate": {"force": {"pm1": None, "pm2": None, "pm3": None}},
}


def _words(text: str) -> str:
    return " ".join(text.split())


def test_the_paper_says_a_premortem_measured_nothing_and_why():
    from actspace.analysis import paper

    statistics = _no_value_statistics(comparisons=[_comparison("2B", "abstention")])
    tex = _words(paper.render_draft(statistics, [], PAPER_CONFIG, summary_table(statistics)))
    assert (
        "PM3 (activation patching) was INCONCLUSIVE with no value: it measured nothing (only 1 "
        "pair(s) where the model is right on both prompts; at least 2 are needed), so there is "
        "no interval to set against the threshold of 50.0\\%." in tex
    )
    assert "change rate of n/a" not in tex and "change_rate of n/a" not in tex


def test_the_abstract_of_a_forced_branch_says_its_premortem_measured_nothing():
    from actspace.analysis import paper

    config = {**PAPER_CONFIG, "gate": {"force": {"pm1": None, "pm2": None, "pm3": "PASS"}}}
    statistics = _no_value_statistics({"pm3": "PASS"}, [_comparison("2C", "patching_layers")])
    text = _words(paper.render_abstract(statistics, config))
    assert (
        "pre-mortem gated this line of work but could not measure the share of corrupted answers "
        f"flipped to the clean answer ({REASON}), a verdict of INCONCLUSIVE; the gate was forced "
        "to PASS" in text
    )
    assert "across one test" in text
    assert "n/a" not in text and paper.unfilled_slots(text) == []


# --- the result that leads: a held-out success, else the closest negative, named ----------------


def _closest_statistics() -> dict:
    """Nothing held out succeeded: transfer failed two parts (smallest Holm p), CCS one part; a
    patching cell chosen on its own pairs met its criterion with the smallest raw p."""
    shift = criterion("gain_at_least_min_gain", kind="plan", rule="the gain is at least 2 points",
                      value=0.4, ci=[-1.0, 1.8], bound=2.0, passed=False)  # fmt: skip
    shuffled = criterion("beats_shuffled_control", kind="control",
                         rule="the paired interval of transfer minus shuffled lies above 0",
                         value=-0.1, ci=[-0.9, 0.7], bound=0.0)  # fmt: skip
    ratio = criterion("ratio_at_least_0_8", kind="plan", rule="CCS reaches 80% of the probe",
                      value=0.9, ci=[0.85, 0.95], bound=0.8, passed=True)  # fmt: skip
    random_direction = criterion("beats_random_direction", kind="control",
                                 rule="the interval of CCS minus a random direction lies above 0",
                                 value=0.02, ci=[-0.03, 0.07], bound=0.0)  # fmt: skip
    cell = criterion("cell_change_rate_above_0", kind="plan", rule="the change rate lies above 0",
                     value=0.9, ci=[0.8, 1.0], bound=0.0)  # fmt: skip
    base = {"seed": 42, "seeds": None, "test": "sign-flip permutation", "n": 40,
            "effect_size": {"name": "hedges_g_z", "value": 0.3}, "in_holm_family": True,
            "held_out": True, "label": None}  # fmt: skip
    comparisons = [
        {**base, "id": "activation_transfer", "experiment": "activation_transfer", "branch": "2A",
         "metric": "transfer_gain_points", "value": 0.4, "ci": [-1.0, 1.8], "success": False,
         "p_value": 0.001, "p_holm": 0.002, "criteria": [shift, shuffled],
         "source": "results/experiments/activation_transfer/seed42/results.json"},
        {**base, "id": "unsupervised_error", "experiment": "unsupervised_error", "branch": "2B",
         "metric": "ccs_ratio", "value": 0.9, "ci": [0.85, 0.95], "success": False,
         "p_value": 0.2, "p_holm": 0.2, "criteria": [ratio, random_direction],
         "source": "results/experiments/unsupervised_error/seed42/results.json"},
        {**base, "id": "patching_layers", "experiment": "patching_layers", "branch": "2C",
         "metric": "change_rate", "value": 0.9, "ci": [0.8, 1.0], "success": True,
         "p_value": 1e-6, "p_holm": None, "criteria": [cell], "held_out": False,
         "in_holm_family": False,
         "excluded_from_family": "not held out: the units it is tested on also chose it (the "
                                 "cell was chosen on the pairs it is tested on)",
         "source": "results/experiments/patching_layers/seed42/results.json"},
    ]  # fmt: skip
    return {**STATISTICS, "comparisons": comparisons}


def test_with_no_held_out_success_the_summaries_name_the_closest_negative_and_its_failure():
    statistics = _closest_statistics()
    closest = (
        "The closest negative result is unsupervised_error (2B): ccs ratio = 0.9, 95% CI "
        "[0.85, 0.95], n = 40; hedges_g_z 0.3, Holm p 0.2. It failed 1 of 2 parts of its "
        "criteria: beats_random_direction: the interval of CCS minus a random direction lies "
        "above 0 (value 0.02, 95% CI [-0.03, 0.07], bound 0)."
    )
    not_held_out = (
        "Met its criteria only on the units that chose what it tests (not held out), so it "
        "cannot lead: patching_layers."
    )
    for text in (summary_table(statistics), study_summary(statistics, outputs={})):
        assert "**No line of work met its criteria on a held-out test.**" in text
        assert closest in text and not_held_out in text
        assert "Strongest held-out result" not in text
    rows = _rows(summary_table(statistics))
    cell = next(r for r in rows if "patching_layers" in r[0])
    assert cell[4] == "n/a (not in the Holm family: not held out; raw 1e-06, sign-flip permutation)"
    assert cell[5] == "met: cell_change_rate_above_0 passed"
    text = study_summary(statistics, outputs={})
    assert (
        "raw p 1e-06 (not in the Holm family: not held out: the units it is tested on also chose "
        "it (the cell was chosen on the pairs it is tested on))" in text
    )
    # without the patching cell the headline says plainly that no line of work met its criteria
    statistics["comparisons"] = statistics["comparisons"][:2]
    assert "**No line of work met its criteria.**" in summary_table(statistics)


def test_with_no_held_out_criterion_the_summary_says_nothing_leads():
    statistics = _closest_statistics()
    for entry in statistics["comparisons"]:
        entry.update(success=None, criteria=[])
    text = study_summary(statistics, outputs={})
    assert (
        "No held-out comparison has a success criterion, so there is no closest negative result; "
        "the venue follows the first line of work the gate ran (2A)." in text
    )
    assert "descriptive (no success criterion)" in text
