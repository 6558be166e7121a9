"""Phase 3 statistics: effect sizes, tests and Holm correction with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from actspace.analysis.statistics import (
    build_statistics,
    comparison_statistics,
    experiment_statistics,
    locate,
)
from actspace.core.io import atomic_write_json
from actspace.core.schema import load_schema

#: The schema's analysis.statistics defaults, and the seed the old keyword defaults used.
SETTINGS = {
    key: spec["default"]
    for key, spec in load_schema()["properties"]["analysis"]["properties"]["statistics"][
        "properties"
    ].items()
}
STATS = {
    "n_bootstrap": SETTINGS["n_bootstrap"],
    "n_permutations": SETTINGS["n_permutations"],
    "seed": 0,
}


def compare(comparison, **overrides):
    """comparison_statistics with the schema's settings, some overridden."""
    return comparison_statistics(comparison, **{**STATS, **overrides})


def paired(a, b, **extra):
    return {"kind": "paired", "a": list(map(float, a)), "b": list(map(float, b)), **extra}


def test_paired_binary_uses_mcnemar_and_scales_to_points():
    # 8 items only the method gets right, 2 only the baseline, 10 both, 5 neither.
    a = [1] * 8 + [0] * 2 + [1] * 10 + [0] * 5
    b = [0] * 8 + [1] * 2 + [1] * 10 + [0] * 5
    out = compare(paired(a, b, binary=True, scale=100.0), n_bootstrap=500)
    assert out["test"] == "McNemar exact"
    assert out["p_value"] == pytest.approx(scipy_stats.binomtest(2, 10, 0.5).pvalue)
    assert out["difference"] == pytest.approx(100 * 6 / 25)
    low, high = out["ci"]
    assert low < out["difference"] < high and high <= 100


def test_paired_continuous_effect_is_hedges_g_z_below_50_units():
    base = np.linspace(0, 1, 5)
    diff = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    out = compare(paired(base + diff, base), n_bootstrap=500)
    d = 3.0 / np.std(diff, ddof=1)
    assert out["effect_size"]["name"] == "hedges_g_z"
    assert out["effect_size"]["uncorrected_d"] == pytest.approx(d)
    assert out["effect_size"]["value"] == pytest.approx(d * (1 - 3 / (4 * 4 - 1)))
    # All five differences positive: the exact sign-flip p is 2 / 2^5.
    assert out["test"] == "sign-flip permutation"
    assert out["p_value"] == pytest.approx(2 / 32)


def test_large_samples_report_cohens_d_and_null_data_are_not_significant():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    out = compare(
        {"kind": "two_groups", "a": list(a), "b": list(b)}, n_bootstrap=300, n_permutations=999
    )
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert out["effect_size"]["name"] == "cohens_d"
    assert out["effect_size"]["value"] == pytest.approx((a.mean() - b.mean()) / pooled)
    assert out["p_value"] > 0.05 and out["ci"][0] < 0 < out["ci"][1]
    shifted = compare({"kind": "two_groups", "a": list(a + 1.0), "b": list(b)}, n_permutations=999)
    assert shifted["p_value"] <= 0.002 and shifted["ci"][0] > 0.5


def test_one_sample_against_a_null_value():
    out = compare(
        {"kind": "one_sample", "values": [0.5, 0.7, 0.9, 1.1], "null_value": 0.5},
        n_bootstrap=300,
    )
    assert out["difference"] == pytest.approx(0.3)
    assert out["effect_size"]["name"] == "hedges_g"
    zeros = compare({"kind": "one_sample", "values": [0.0] * 6})
    assert zeros["p_value"] == 1.0 and zeros["difference"] == 0.0


def test_bad_or_tiny_comparisons():
    with pytest.raises(ValueError, match="kind must be one of paired, two_groups, one_sample"):
        compare({"kind": "unpaired", "a": [1], "b": [2]})
    with pytest.raises(ValueError, match="equal lengths"):
        compare(paired([1, 2, 3], [1, 2]))
    tiny = compare({"kind": "two_groups", "a": [1.0, 0.0], "b": [1.0]})
    assert tiny["p_value"] is None and "fewer than 2" in tiny["note"]


def _write(root, experiment, seed, results):
    folder = root / "experiments" / experiment
    folder = folder / f"seed{seed}" if seed is not None else folder
    atomic_write_json(folder / "results.json", results)
    return folder / "results.json"


def test_seeds_holm_and_the_order_of_the_plan(tmp_path):
    def transfer(value, gain_items):
        a = [1.0] * gain_items + [0.0] * 30
        b = [0.0] * gain_items + [0.0] * 30
        return {
            "metric": "transfer_gain_points",
            "value": value,
            "ci": [value - 1, value + 1],
            "n": len(a),
            "success": value >= 2,
            "comparison": paired(a, b, binary=True, scale=100.0),
            "held_out": True,
            "selection": "nothing was chosen from the data",
        }

    files = [
        _write(tmp_path, "activation_transfer", 42, transfer(3.0, 12)),
        _write(tmp_path, "activation_transfer", 7, transfer(1.0, 1)),
        _write(
            tmp_path,
            "patching_layers",
            None,
            {
                "metric": "denoising_change_rate_at_strongest_cell",
                "value": 0.8,
                "ci": [0.6, 0.9],
                "n": 8,
                "success": None,
                "comparison": {"kind": "one_sample", "values": [1.0, 0.9, 0.8, 1.2, 1.1, 0.7]},
                "held_out": True,
                "selection": "the cell was chosen on the other half of the pairs",
            },
        ),
        _write(
            tmp_path,
            "behavior_edit",
            42,
            {
                "headlines": [
                    {
                        "label": "toxicity",
                        "metric": "shift",
                        "value": 0.2,
                        "ci": [0.1, 0.3],
                        "n": 4,
                        "success": True,
                        "comparison": paired([1, 2, 3, 4], [0, 1, 2, 2]),
                        "held_out": True,
                    },
                    {
                        "label": "formality",
                        "metric": "shift",
                        "value": 0.0,
                        "ci": [-0.1, 0.1],
                        "n": 4,
                        "success": False,
                        "comparison": None,
                    },
                ]
            },
        ),  # fmt: skip
    ]
    out = experiment_statistics(
        files,
        **{**SETTINGS, "n_bootstrap": 300, "n_permutations": 999},
        seed=0,
        primary_seed=42,
    )
    ids = [e["id"] for e in out["comparisons"]]
    assert ids == [
        "activation_transfer",
        "patching_layers",
        "behavior_edit:toxicity",
        "behavior_edit:formality",
    ]
    transfer_entry = out["comparisons"][0]
    assert transfer_entry["value"] == 3.0 and transfer_entry["seed"] == 42
    assert transfer_entry["seeds"] == {"7": 1.0, "42": 3.0}
    assert transfer_entry["seed_mean"] == 2.0
    assert transfer_entry["seed_sd"] == pytest.approx(math.sqrt(2.0))
    assert transfer_entry["p_value"] == pytest.approx(2 * 0.5**12)
    tested = [e for e in out["comparisons"] if e["p_value"] is not None]
    assert out["holm"]["n_comparisons"] == len(tested) == 3
    raw = sorted(e["p_value"] for e in tested)
    holm = sorted(e["p_holm"] for e in tested)
    expected = np.maximum.accumulate([min(1, p * (3 - i)) for i, p in enumerate(raw)])
    np.testing.assert_allclose(holm, expected)
    formality = out["comparisons"][3]
    assert formality["p_value"] is None and formality["p_holm"] is None
    assert formality["excluded_from_family"].startswith("no p-value")
    assert out["holm"]["family"] == [e["id"] for e in tested] and out["holm"]["excluded"] == []


def test_locate_and_build(tmp_path):
    assert locate("results/experiments/abstention/seed123/results.json") == ("abstention", 123)
    assert locate("r/experiments/patching_layers/results.json") == ("patching_layers", None)
    with pytest.raises(ValueError, match="not an experiment results file"):
        locate("results/experiments/nonsense/results.json")
    decision = {
        "criterion": "plan",
        "branches": ["X"],
        "forced": ["pm2"],
        "premortems": {
            "pm1": {"value": 0.1, "ci": [0.0, 0.2], "threshold": 0.3, "plan_verdict": "FAIL",
                    "controlled_verdict": "FAIL", "verdict": "FAIL", "measured_verdict": "FAIL",
                    "forced": False},
            "pm2": {"value": 0.7, "ci": [0.6, 0.8], "threshold": 0.55, "plan_verdict": "PASS",
                    "controlled_verdict": "FAIL", "verdict": "FAIL", "measured_verdict": "PASS",
                    "forced": True},
        },
    }  # fmt: skip
    out = build_statistics(decision, [], **SETTINGS, seed=0)
    assert out["comparisons"] == [] and out["holm"]["n_comparisons"] == 0
    assert out["premortems"]["pm2"]["forced"] and out["premortems"]["pm2"]["verdict"] == "FAIL"
    assert out["premortems"]["pm2"]["measured_verdict"] == "PASS"
    assert out["decision"]["criterion"] == "plan"


def test_the_premortems_keep_both_verdicts_the_control_and_the_criterion():
    """statistics.json from the gate's own functions: PM1 clears its threshold, not its control."""
    from helpers.premortem_records import verdicts_record

    from actspace.gate.decision import decide, measured_verdicts

    results = {
        "pm1": verdicts_record("pm1", "PASS", beats_control=False),
        "pm2": verdicts_record("pm2", "FAIL"),
        "pm3": verdicts_record("pm3", "PASS"),
    }
    decision = decide(measured_verdicts(results), {"pm2": "PASS"}, "controlled")
    out = build_statistics(decision, [], **SETTINGS, seed=0)
    assert out["decision"] == {
        "criterion": "controlled",
        "branches": ["2B", "2C"],
        "forced": ["pm2"],
        "disagree": ["pm1"],
        "other_criterion": {"criterion": "plan", "branches": ["2A", "2B", "2C"]},
    }
    pm1 = out["premortems"]["pm1"]
    assert (pm1["plan_verdict"], pm1["controlled_verdict"], pm1["verdict"]) == (
        "PASS", "FAIL", "FAIL",
    )  # fmt: skip
    assert pm1["control"] == {
        "name": "trivial", "description": "what a trivial explanation gives", "value": 0.39,
        "ci": [0.34, 0.44],
    }  # fmt: skip
    assert pm1["controlled"]["value"] == 0.01 and pm1["controlled"]["passed"] is False
    pm2 = out["premortems"]["pm2"]
    assert (pm2["plan_verdict"], pm2["controlled_verdict"], pm2["verdict"]) == (
        "FAIL", "FAIL", "PASS",
    )  # fmt: skip
    assert pm2["forced"] and pm2["measured_verdict"] == "FAIL"


def test_a_results_file_without_a_headline_is_named():
    from actspace.analysis.statistics import headlines

    with pytest.raises(ValueError, match="x/results.json: the headline lacks 'metric'"):
        headlines({"value": 1.0, "ci": [0.0, 2.0]}, "x/results.json")
    empty = headlines({"metric": "m", "value": None, "ci": [None, None]}, "x")
    assert empty[0]["value"] is None and empty[0]["comparison"] is None


def test_the_script_takes_the_analysis_statistics_section(tmp_path):
    from helpers.scripts import load_script

    from actspace.core.io import read_json

    decision = tmp_path / "decision.json"
    atomic_write_json(
        decision, {"criterion": "controlled", "branches": ["2C"], "forced": [], "premortems": {}}
    )
    result = _write(
        tmp_path,
        "patching_layers",
        None,
        {"metric": "m", "value": 0.5, "ci": [0.4, 0.6], "n": 6, "success": None,
         "comparison": {"kind": "one_sample", "values": [1.0, 0.9, 0.8, 1.2, 1.1, 0.7]}},
    )  # fmt: skip
    out = tmp_path / "analysis"
    params = '{"n_bootstrap": 200, "n_permutations": 99, "alpha": 0.05, "seed": 3}'
    script = load_script("make_statistics")
    argv = ["--decision", str(decision), "--results", str(result), "--output-dir", str(out)]
    script.main(["--params", params, *argv])
    written = read_json(out / "statistics.json")
    assert written["settings"]["n_bootstrap"] == 200 and written["settings"]["seed"] == 3
    expected = experiment_statistics(
        [result], n_bootstrap=200, n_permutations=99, alpha=0.05, seed=3
    )
    assert written["comparisons"][0]["p_value"] == expected["comparisons"][0]["p_value"]
    assert (out / "summary_table.md").is_file()


# --- the Holm family: held-out tests only ---------------------------------------------------------


def _family_files(tmp_path):
    """Three tests: a held-out transfer (McNemar on 6 discordant pairs: p = 2 / 2^6), a patching
    cell chosen and tested on the same 12 pairs (every change positive: p = 2 / 2^12, the
    smallest), and an abstention headline that does not record held_out."""
    from actspace.core.criteria import criterion, held_out_record

    transfer = {
        "metric": "transfer_gain_points", "value": 20.0, "ci": [5.0, 35.0], "n": 30,
        "success": True,
        "criteria": [criterion("gain_at_least_min_gain", kind="plan", rule="gain >= 2 points",
                               value=20.0, ci=[5.0, 35.0], bound=2.0, passed=True)],
        "comparison": paired([1] * 6 + [0] * 24, [0] * 30, binary=True, scale=100.0),
        **held_out_record(True, "nothing was chosen from the data"),
    }  # fmt: skip
    cell = {
        "metric": "denoising_change_rate_at_strongest_cell", "value": 1.0, "ci": [1.0, 1.0],
        "n": 12, "success": True,
        "criteria": [criterion("change_rate_above_0", kind="plan", rule="the interval lies above 0",
                               value=1.0, ci=[1.0, 1.0], bound=0.0)],
        "comparison": {"kind": "one_sample", "values": [1.0] * 12},
        **held_out_record(False, "the cell was chosen on the pairs it is tested on"),
    }  # fmt: skip
    abstention = {
        "metric": "effective_accuracy_gain", "value": 0.5, "ci": [-0.1, 1.1], "n": 8,
        "success": False,
        "criteria": [
            criterion("gain_above_0", kind="plan", rule="the interval lies above 0", value=0.5,
                      ci=[0.1, 0.9], bound=0.0),
            criterion("beats_confidence_abstention", kind="control",
                      rule="the paired interval against confidence lies above 0", value=0.0,
                      ci=[-0.4, 0.4], bound=0.0)],
        "comparison": paired([1, 2, 3, 4, 5, 6, 7, 8], [1, 1, 3, 3, 5, 5, 7, 7]),
    }  # fmt: skip
    return [
        _write(tmp_path, "activation_transfer", 42, transfer),
        _write(tmp_path, "abstention", 42, abstention),
        _write(tmp_path, "patching_layers", None, cell),
    ]


def test_a_cell_selected_on_its_own_pairs_never_enters_the_holm_family(tmp_path):
    from actspace.analysis.paper import choose_strongest
    from actspace.analysis.statistics import FAMILY_RULE

    out = experiment_statistics(
        _family_files(tmp_path), **{**SETTINGS, "n_bootstrap": 200}, seed=0, primary_seed=42
    )
    by_id = {e["id"]: e for e in out["comparisons"]}
    transfer, abstention, cell = (
        by_id[k] for k in ("activation_transfer", "abstention", "patching_layers")
    )
    assert cell["p_value"] == pytest.approx(2 / 2**12) and cell["p_value"] < transfer["p_value"]
    assert transfer["p_value"] == pytest.approx(2 / 2**6)
    # a family of one: the held-out test keeps its own p; the others get no Holm p
    assert out["holm"]["family"] == ["activation_transfer"] and out["holm"]["n_comparisons"] == 1
    assert transfer["p_holm"] == pytest.approx(transfer["p_value"]) and transfer["in_holm_family"]
    assert cell["p_holm"] is None and cell["reject_holm"] is None and not cell["in_holm_family"]
    assert out["holm"]["excluded"] == [
        {"id": "abstention", "reason": "the headline does not record held_out, so it is treated "
                                       "as not held out"},
        {"id": "patching_layers",
         "reason": "not held out: the units it is tested on also chose it (the cell was chosen "
                   "on the pairs it is tested on)"},
    ]  # fmt: skip
    assert out["holm"]["rule"] == FAMILY_RULE and "not pre-registered" in FAMILY_RULE
    assert abstention["held_out"] is False and abstention["held_out_recorded"] is False
    assert abstention["failed_criteria"] == ["beats_confidence_abstention"]
    assert cell["selection"] == "the cell was chosen on the pairs it is tested on"
    # the smallest p and a success, yet the held-out success leads the paper
    strongest = choose_strongest(out)
    assert strongest["id"] == "activation_transfer" and strongest["succeeded"] is True
    assert strongest["not_held_out_successes"] == ["patching_layers"]


def test_success_must_agree_with_its_criteria(tmp_path):
    from actspace.core.criteria import criterion

    head = {
        "metric": "m", "value": 1.0, "ci": [0.5, 1.5], "n": 4, "success": True,
        "criteria": [criterion("beats_control", kind="control", rule="above 0", value=0.1,
                               ci=[-0.2, 0.4], bound=0.0)],
    }  # fmt: skip
    path = _write(tmp_path, "abstention", None, head)
    with pytest.raises(ValueError, match=r"success is True but its criteria give False"):
        experiment_statistics([path], **SETTINGS, seed=0)
