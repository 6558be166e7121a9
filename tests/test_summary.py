"""The summary table and the study summary: numbers copied exactly, forced verdicts marked."""

from __future__ import annotations

import re

import pytest

from actspace.analysis.summary import number, study_summary, summary_table

STATISTICS = {
    "decision": {"branches": ["2A", "2C"], "forced": ["pm3"]},
    "premortems": {
        "pm1": {"name": "cross-model similarity", "metric": "correlation_after_projection",
                "value": 0.4567, "ci": [0.35, 0.55], "threshold": 0.3, "verdict": "PASS",
                "measured_verdict": "PASS", "forced": False, "n": 64},
        "pm2": {"name": "error prediction", "metric": "balanced_accuracy", "value": 0.5,
                "ci": [0.4, 0.6], "threshold": 0.55, "verdict": "INCONCLUSIVE",
                "measured_verdict": "INCONCLUSIVE", "forced": False, "n": 60},
        "pm3": {"name": "activation patching", "metric": "change_rate", "value": 0.0,
                "ci": [0.0, 0.137], "threshold": 0.5, "verdict": "PASS",
                "measured_verdict": "FAIL", "forced": True, "n": 25},
    },
    "comparisons": [
        {"id": "activation_transfer", "experiment": "activation_transfer", "label": None,
         "branch": "2A", "metric": "transfer_gain_points", "value": 1.2345678, "ci": [-0.5, 2.9],
         "n": 150, "success": False, "p_value": 0.31, "p_holm": 0.62, "test": "McNemar exact",
         "effect_size": {"name": "cohens_d_z", "value": 0.11}, "seed": 42,
         "seeds": {"42": 1.2345678, "123": 0.8}, "seed_mean": 1.0172839, "seed_sd": 0.31,
         "source": "results/experiments/activation_transfer/seed42/results.json"},
        {"id": "behavior_edit:toxicity", "experiment": "behavior_edit", "label": "toxicity",
         "branch": "2C", "metric": "attribute_shift_at_best_setting", "value": 0.25,
         "ci": [0.1, 0.4], "n": 20, "success": True, "p_value": None, "p_holm": None,
         "test": None, "effect_size": {"name": None, "value": None}, "seed": 42, "seeds": None,
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
    pm3 = next(r for r in rows if r[0].startswith("PM3"))
    assert "forced; measured FAIL" in pm3[0]
    pm2 = next(r for r in rows if r[0].startswith("PM2"))
    assert "INCONCLUSIVE" in pm2[0] and "forced" not in pm2[0]
    assert "Forced verdicts: PM3" in table
    assert "| activation_transfer | 42: 1.235, 123: 0.8 | 1.017 | 0.31 |" in table


def test_the_study_summary_says_what_ran_why_and_where():
    text = study_summary(
        STATISTICS,
        outputs={"decision": "results/gate/decision.md", "paper_draft": "results/paper/draft.tex"},
        figures=[{"name": "transfer_gain", "caption": "Gain."}],
    )
    assert "PM3 (activation patching)" in text and "forced; measured FAIL" in text
    assert "2A (cross-model transfer); 2C (activation patching and behaviour editing)" in text
    assert "did NOT meet its success criterion" in text
    assert "met its success criterion" in text
    assert "- paper draft: `results/paper/draft.tex`" in text
    assert "`transfer_gain`: Gain." in text


def test_the_abort_path_points_at_the_negative_results():
    aborted = {**STATISTICS, "decision": {"branches": ["X"], "forced": []}, "comparisons": []}
    text = study_summary(aborted, outputs={"negative_results": "results/negative_results.md"})
    assert "the plan aborts" in text and "no paper is drafted" in text
    assert "Headline numbers" not in text


def test_number_formatting():
    assert number(None) == "n/a" and number(float("nan")) == "n/a"
    assert number(0.123456) == "0.1235" and number(12.0) == "12"
