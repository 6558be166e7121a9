"""Phase 4, the paper draft: the strongest-result rule, templates, escaping and a real compile."""

from __future__ import annotations

import copy
import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.workflow import compile_paper, pdf_page_texts, pdf_pages

from actspace import plan
from actspace.analysis import paper

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = paper.default_templates()
BIB = paper.default_bibliography()


def comparison(cid: str, branch: str, **fields) -> dict:
    base = {
        "id": cid,
        "experiment": cid,
        "branch": branch,
        "claim": f"{cid} works",
        "metric": "accuracy gain (points)",
        "value": 1.2,
        "ci": [-0.5, 2.9],
        "n": 150,
        "effect_size": {"name": "hedges_g_z", "value": 0.11},
        "test": "McNemar",
        "p_value": 0.31,
        "p_holm": 0.62,
        "success": False,
        "success_rule": "gain >= 2 points with a CI excluding 0",
        "held_out": True,
        "seeds": {"42": 1.2, "123": 0.8},
        "seed_mean": 1.0,
        "seed_sd": 0.28,
        "source": f"experiments/{cid}/seed42/results.json",
    }
    base.update(fields)
    return base


def premortem(name: str, metric: str, value: float, ci: list, threshold: float, verdict: str):
    """A pre-mortem as statistics.json records it: both verdicts agree, and the metric beats
    its control (a surface control 0.1 below it) by 0.1, 95% CI [0.05, 0.15]."""
    return {
        "name": name,
        "metric": metric,
        "value": value,
        "ci": ci,
        "threshold": threshold,
        "plan_verdict": verdict,
        "controlled_verdict": verdict,
        "control": {
            "name": "surface features",
            "description": "what the input alone gives",
            "value": round(value - 0.1, 6),
            "ci": [round(ci[0] - 0.1, 6), round(ci[1] - 0.1, 6)],
        },
        "controlled": {
            "statistic": "metric - control",
            "value": 0.1,
            "ci": [0.05, 0.15],
            "bound": 0.0,
            "passed": True,
        },
        "verdict": verdict,
        "measured_verdict": verdict,
        "forced": False,
        "n": 64,
    }


def statistics(*comparisons: dict, forced: tuple[str, ...] = ()) -> dict:
    premortems = {
        "pm1": premortem(
            "cross-model similarity",
            "correlation after projection",
            0.40,
            [0.26, 0.55],
            0.3,
            "INCONCLUSIVE",
        ),
        "pm2": premortem("error prediction", "balanced accuracy", 0.62, [0.58, 0.66], 0.55, "PASS"),
        "pm3": premortem("activation patching", "change rate", 0.70, [0.61, 0.79], 0.5, "PASS"),
    }
    for key in forced:
        premortems[key]["forced"] = True
        premortems[key]["verdict"] = "PASS"
    return {
        "decision": {
            "criterion": "controlled",
            "branches": ["2A", "2B", "2C"],
            "forced": list(forced),
            "other_criterion": {"criterion": "plan", "branches": ["2A", "2B", "2C"]},
            "rows": "...",
        },
        "premortems": premortems,
        "comparisons": list(comparisons),
        "holm": {"alpha": 0.05, "n_comparisons": len(comparisons)},
    }


def full_statistics() -> dict:
    """One comparison per kind of outcome: success, failure, no criterion, missing p."""
    return statistics(
        comparison("activation_transfer", "2A"),
        comparison(
            "unsupervised_error",
            "2B",
            claim="CCS reaches 80% of the supervised probe's balanced accuracy",
            metric="CCS / supervised balanced-accuracy ratio",
            value=0.853,
            ci=[0.811, 0.902],
            n=300,
            effect_size=None,
            test="bootstrap",
            p_value=0.004,
            p_holm=0.016,
            success=True,
            success_rule="ratio >= 0.8",
            seeds={},
            seed_mean=None,
            seed_sd=None,
        ),
        comparison(
            "patching_layers",
            "2C",
            claim="patching the strongest layer flips most corrupted answers",
            metric="change rate",
            value=0.74,
            ci=[0.62, 0.84],
            n=50,
            effect_size={"name": "h", "value": 0.5},
            test="binomial",
            p_value=0.0001,
            p_holm=0.0004,
            success=None,
            success_rule=None,
        ),
        comparison(
            "abstention",
            "2B",
            claim="abstaining raises effective accuracy",
            value=0.9,
            ci=[-0.2, 2.0],
            p_value=None,
            p_holm=None,
            success=None,
            success_rule=None,
            effect_size=None,
        ),
        forced=("pm1",),
    )


def config() -> dict:
    return {
        "seed": 42,
        "seeds": [42, 123],
        "models": {
            "gpt2": {"source": "hub", "id": "gpt2", "revision": None},
            "pythia_70m": {"source": "hub", "id": "EleutherAI/pythia_70m", "revision": None},
            "tiny_gpt2": {"source": "organism", "family": "gpt2", "train_seed": 1},
        },
        "tasks": {
            "hellaswag": {"type": "hellaswag", "source": "hub", "limit": 2000},
            "facts": {"type": "builtin", "builtin": "facts"},
        },
        "premortems": {
            "pm1": {"models": None, "layer_depth": 0.5, "threshold": 0.3},
            "pm2": {"layer": "auto", "threshold": 0.55},
            "pm3": {"layers": [1, 2, 3], "threshold": 0.5},
        },
        "experiments": {
            "activation_transfer": {
                "source": "gpt2",
                "target": "pythia_70m",
                "task": "hellaswag",
                "coefficients": [0.25, 0.5],
                "min_gain": 2.0,
                "mode": "blend",
            },
            "abstention": {"models": ["gpt2"], "tasks": ["hellaswag"], "threshold": 0.3},
            "behavior_edit": {
                "scorers": {"toxicity": {"kind": "classifier", "label": "toxic_50%"}},
            },
        },
        "gate": {"force": {"pm1": "PASS", "pm2": None, "pm3": None}},
    }


MANIFEST = [
    {
        "name": "patching_effect_by_layer",
        "png": "patching_effect_by_layer.png",
        "pdf": "patching_effect_by_layer.pdf",
        "caption": "Patching effect by layer, with 95% CIs & the strongest layer marked.",
        "sources": ["patching_layers"],
    },
    {
        "name": "cross_model_heatmap",
        "png": "cross_model_heatmap.png",
        "pdf": "cross_model_heatmap.pdf",
        "caption": "Held-out correlation between models (EleutherAI/pythia_70m).",
        "sources": ["cross_model_extended"],
    },
]

SUMMARY_MD = """# Summary

| Comparison | Value | 95% CI |
| --- | ---: | --- |
| `activation_transfer` | 1.20 | [-0.500, 2.90] |
| **unsupervised_error** | 0.853 | [0.811, 0.902] |
"""


def section(tex: str, name: str) -> str:
    """The text of one \\section, up to the next \\section."""
    start = tex.index(f"\\section{{{name}}}")
    end = tex.find("\\section{", start + 1)
    return tex[start : end if end != -1 else len(tex)]


# ---------------------------------------------------------------------------------------------
# choose_strongest


def test_success_beats_a_smaller_p_without_success():
    stats = statistics(
        comparison("activation_transfer", "2A", p_holm=0.0001, success=False),
        comparison("unsupervised_error", "2B", p_holm=0.04, success=True),
    )
    best = paper.choose_strongest(stats)
    assert best["id"] == "unsupervised_error"
    assert best["succeeded"] is True
    assert (best["branch"], best["venue"], best["alternative_venue"]) == ("2B", "ACL", "EMNLP")


def choose_failed_part(name: str, value: float, bound: float) -> dict:
    """A failed part of a criterion: its interval [value - 1, value + 1] does not clear bound."""
    return {"name": name, "kind": "control", "rule": f"{name} lies above {bound}", "value": value,
            "ci": [value - 1, value + 1], "bound": bound, "passed": False}  # fmt: skip


def choose_passed_part(name: str) -> dict:
    return {"name": name, "kind": "plan", "rule": f"{name} holds", "value": 3.0,
            "ci": [2.5, 3.5], "bound": 2.0, "passed": True}  # fmt: skip


def test_choose_strongest_without_success_reports_the_closest_negative():
    """Nothing succeeded: the held-out failure with the fewest failed parts is reported, however
    small another's p; a descriptive comparison (success None) is never the closest."""
    two_failed = comparison(
        "activation_transfer", "2A", p_holm=0.001, success=False,
        criteria=[
            choose_failed_part("gain_at_least_min_gain", 0.5, 2.0),
            choose_failed_part("beats_shuffled", 0.1, 0.0),
        ],
    )  # fmt: skip
    one_failed = comparison(
        "unsupervised_error", "2B", p_holm=0.3, success=False,
        criteria=[
            choose_passed_part("ratio_at_least_0_8"),
            choose_failed_part("beats_random_direction", 0.2, 0.0),
        ],
    )  # fmt: skip
    descriptive = comparison("patching_layers", "2C", p_holm=0.0001, success=None)
    best = paper.choose_strongest(statistics(two_failed, one_failed, descriptive))
    assert (best["id"], best["succeeded"], best["closest"]) == ("unsupervised_error", False, True)
    assert [c["name"] for c in best["failed_criteria"]] == ["beats_random_direction"]
    assert best["failed_criteria"][0]["ci"] == [-0.8, 1.2]
    assert (best["venue"], best["alternative_venue"]) == ("ACL", "EMNLP")
    # a failure with no value (every steering setting broke the budget) comes after a measured
    # one, even with fewer failed parts
    unmeasured = comparison(
        "behavior_edit", "2C", p_holm=None, success=False, value=None,
        criteria=[{"name": "perplexity_within_budget", "kind": "control", "rule": "no setting",
                   "value": None, "ci": [None, None], "bound": 2.0, "passed": False}],
    )  # fmt: skip
    best = paper.choose_strongest(statistics(two_failed, unmeasured))
    assert best["id"] == "activation_transfer" and best["closest"]
    assert paper.choose_strongest(statistics(unmeasured))["id"] == "behavior_edit"
    # equal numbers of failed parts: the smaller Holm p, then the larger |effect|
    tie = comparison("abstention", "2B", p_holm=None, success=False)
    one = comparison("activation_transfer", "2A", p_holm=0.2, success=False)
    assert paper.choose_strongest(statistics(tie, one))["id"] == "activation_transfer"
    # a failure that records no parts names its success rule as the failed part
    named = paper.choose_strongest(statistics(one))["failed_criteria"]
    assert [(c["name"], c["rule"]) for c in named] == [
        ("success_criterion", "gain >= 2 points with a CI excluding 0")
    ]


def test_choose_strongest_never_leads_with_a_test_that_is_not_held_out():
    """A cell chosen and tested on the same pairs: the smallest p and a success, yet it leads
    neither as the success nor as the closest negative; the held-out success leads."""
    selected_on_own_pairs = comparison(
        "patching_layers", "2C", p_holm=None, p_value=1e-9, success=True, held_out=False,
        effect_size={"name": "g", "value": 5.0},
    )  # fmt: skip
    held_out_success = comparison("abstention", "2B", p_holm=0.04, success=True)
    best = paper.choose_strongest(statistics(selected_on_own_pairs, held_out_success))
    assert (best["id"], best["succeeded"], best["closest"]) == ("abstention", True, False)
    assert best["failed_criteria"] == [] and best["venue"] == "ACL"
    assert best["not_held_out_successes"] == ["patching_layers"]
    # without the held-out success, a held-out failure is reported as the closest negative
    failure = comparison("activation_transfer", "2A", p_holm=0.7, success=False)
    best = paper.choose_strongest(statistics(selected_on_own_pairs, failure))
    assert (best["id"], best["succeeded"], best["closest"]) == ("activation_transfer", False, True)
    # a missing held_out counts as not held out
    unrecorded = comparison("unsupervised_error", "2B", p_holm=0.001, success=True)
    del unrecorded["held_out"]
    assert paper.choose_strongest(statistics(unrecorded, failure))["id"] == "activation_transfer"


def test_choose_strongest_with_no_held_out_criterion_leads_with_nothing():
    """No held-out comparison has a criterion: no result leads (closest None), and the first
    line of work the gate ran that has a comparison gives the venue."""
    stats = statistics(
        comparison("patching_layers", "2C", p_holm=0.001, success=None),
        comparison("abstention", "2B", p_holm=0.01, success=True, held_out=False),
    )
    best = paper.choose_strongest(stats)
    assert (best["comparison"], best["id"], best["succeeded"], best["closest"]) == (
        None, None, False, False,
    )  # fmt: skip
    assert best["failed_criteria"] == [] and best["not_held_out_successes"] == ["abstention"]
    # the gate ran 2A, 2B, 2C; 2A has no comparison, so 2B (the first with one) gives the venue
    assert (best["branch"], best["venue"]) == ("2B", "ACL")


def test_ties_go_to_the_larger_absolute_effect_then_the_id():
    stats = statistics(
        comparison(
            "b_small", "2A", p_holm=0.01, success=True, effect_size={"name": "d", "value": 0.2}
        ),
        comparison(
            "c_large", "2C", p_holm=0.01, success=True, effect_size={"name": "d", "value": -0.9}
        ),
        comparison("a_none", "2B", p_holm=0.01, success=True, effect_size=None),
    )
    assert paper.choose_strongest(stats)["id"] == "c_large"
    same = statistics(
        comparison("zeta", "2A", p_holm=0.01, success=True),
        comparison("alpha", "2B", p_holm=0.01, success=True),
    )
    assert paper.choose_strongest(same)["id"] == "alpha"


@pytest.mark.parametrize(
    ("branch", "venue", "alternative"),
    [("2A", "NeurIPS", "ICLR"), ("2B", "ACL", "EMNLP"), ("2C", "ICLR", "ICML")],
)
def test_each_branch_maps_to_its_venue(branch, venue, alternative):
    best = paper.choose_strongest(statistics(comparison("x", branch, success=True)))
    assert (best["branch"], best["venue"], best["alternative_venue"]) == (
        branch,
        venue,
        alternative,
    )
    assert plan.branch(branch).venues == (venue, alternative)


def test_branch_falls_back_to_the_experiment():
    c = comparison("behavior_edit_toxicity", "2C", experiment="behavior_edit")
    del c["branch"]
    assert paper.choose_strongest(statistics(c))["branch"] == "2C"


def test_the_rule_names_every_branch_and_its_venues():
    for branch in plan.BRANCHES:
        if branch.venues:
            target, alternative = branch.venues
            assert f"{target} (alternative {alternative}) for {branch.name}" in paper.STRONGEST_RULE


def test_no_comparisons_is_an_error():
    with pytest.raises(ValueError, match="no comparisons"):
        paper.choose_strongest(statistics())
    with pytest.raises(ValueError, match="no comparisons"):
        paper.choose_strongest({})


# ---------------------------------------------------------------------------------------------
# formatting and escaping


@pytest.mark.parametrize(
    ("value", "percent", "expected"),
    [
        (0.40, False, "0.400"),
        (1.2, False, "1.20"),
        (-0.5, False, "-0.500"),
        (15.25, False, "15.2"),
        (150, False, "150"),
        (0.0, False, "0"),
        (0.625, True, "62.5%"),
        (None, False, "n/a"),
        (float("nan"), False, "n/a"),
    ],
)
def test_format_number(value, percent, expected):
    assert paper.format_number(value, percent=percent) == expected


def test_format_p_and_ci():
    assert paper.format_p(0.0312) == "0.031"
    assert paper.format_p(0.0004) == "< 0.001"
    assert paper.format_p(None) == "n/a"
    assert paper.p_expression(0.0004) == "p < 0.001"
    assert paper.p_expression(0.31, "Holm-corrected p") == "Holm-corrected p = 0.310"
    assert paper.format_ci([0.26, 0.55]) == "[0.260, 0.550]"
    assert paper.format_ci([0.58, 0.66], percent=True) == "[58.0%, 66.0%]"
    assert paper.format_ci(None) == "n/a"
    assert paper.format_ci([0.1, None]) == "n/a"


def test_percentages_only_for_levels_of_accuracy():
    assert paper.is_percentage_metric("balanced accuracy", [0.62, 0.58, 0.66])
    assert paper.is_percentage_metric("change rate", [0.7])
    assert not paper.is_percentage_metric("accuracy gain (points)", [1.2])
    assert not paper.is_percentage_metric("correlation after projection", [0.4])
    assert not paper.is_percentage_metric("balanced accuracy", [62.0])


def test_latex_escape_specials():
    escaped = paper.latex_escape("EleutherAI/pythia_70m at 50% & $5 #1 {x} ~ ^ \\ [A] <b>")
    assert str(escaped) == (
        r"EleutherAI/pythia\_70m at 50\% \& \$5 \#1 \{x\} \textasciitilde{} \textasciicircum{} "
        r"\textbackslash{} {[}A{]} \textless{}b\textgreater{}"
    )
    assert paper.latex_escape(escaped) == escaped  # idempotent on its own output
    assert paper.latex_escape(None) == "n/a"


def test_unfilled_slots_finds_slots_and_jinja_remnants():
    assert paper.unfilled_slots("a [MODELS] b [CI] c [0.2, 0.3] [x]") == ["[MODELS]", "[CI]"]
    assert paper.unfilled_slots("escaped {[}VALUE{]} slot") == ["[VALUE]"]
    assert paper.unfilled_slots(r"\VAR{x} and \BLOCK{if y}") == [r"\VAR{", r"\BLOCK{"]
    assert paper.unfilled_slots("{{ value }} {% if x %}") == ["{{ value", "{% if"]
    assert paper.unfilled_slots(r"\textbf{{[}0.2, 0.3{]}} 95\% CI") == []


def test_fill_slots_leaves_unknown_slots_visible():
    text = paper.fill_slots("[A] and [B]", {"A": "one [X]"})
    assert text == "one [X] and [B]"
    assert paper.unfilled_slots(text) == ["[X]", "[B]"]


def test_flatten_config():
    rows = dict(paper.flatten_config(config()))
    assert rows["premortems.pm1.threshold"] == "0.3"
    assert rows["premortems.pm1.models"] == "null"
    assert rows["premortems.pm3.layers"] == "[1, 2, 3]"
    assert rows["experiments.behavior_edit.scorers.toxicity.label"] == "toxic_50%"
    assert rows["seeds"] == "[42, 123]"
    assert dict(paper.flatten_config({"a": {}, "b": [], "c": [{"x": True}]})) == {
        "a": "{}",
        "b": "[]",
        "c.0.x": "true",
    }


def test_markdown_tables():
    (table,) = paper.markdown_tables(SUMMARY_MD)
    assert table["header"] == ["Comparison", "Value", "95% CI"]
    assert table["rows"][0] == ["activation_transfer", "1.20", "[-0.500, 2.90]"]
    assert table["rows"][1][0] == "unsupervised_error"


# ---------------------------------------------------------------------------------------------
# the abstracts


def failed_part(name: str, rule: str, value: float, ci: list, bound: float) -> dict:
    """A part of a success criterion that failed (the contract of actspace.core.criteria)."""
    return {"name": name, "kind": "control", "rule": rule, "value": value, "ci": ci,
            "bound": bound, "passed": False}  # fmt: skip


def passed_part(rule: str) -> dict:
    return {"name": "plan_rule", "kind": "plan", "rule": rule, "value": 3.0, "ci": [2.5, 3.5],
            "bound": 2.0, "passed": True}  # fmt: skip


SHUFFLED_RULE = (
    "target + transfer beats target + another item's mapped activation (the shuffled-item "
    "control): the paired 95% interval over items of transfer minus shuffled lies above 0"
)


@pytest.mark.parametrize("branch", ["2A", "2B", "2C"])
def test_abstract_leads_with_the_held_out_success(branch):
    """The held-out success leads, with its numbers and human labels; a success chosen on its own
    units never leads (however small its p) and is counted as such."""
    best = comparison(
        "headline", branch, value=0.40, ci=[0.26, 0.55], p_value=0.0123, p_holm=0.0246,
        success=True, criteria=[passed_part("the gain is at least 2 points")],
    )  # fmt: skip
    selected = comparison("patching_layers", "2C", p_value=1e-6, p_holm=None, success=True,
                          held_out=False)  # fmt: skip
    other = comparison("other", "2A" if branch != "2A" else "2B", p_holm=0.9, success=False)
    stats = statistics(best, selected, other)
    stats["holm"].update(family=["headline", "other"], excluded=[{"id": "patching_layers"}])
    text = paper.render_abstract(stats, config())
    assert paper.unfilled_slots(text) == []
    assert re.search(r"\[[^\d-]", text) is None  # every bracket left is an interval
    assert text.count("\n") == 1  # one paragraph
    assert "Our strongest held-out result comes from headline: the accuracy gain (points) was " \
        "0.400 (95% CI [0.260, 0.550], n = 150), Holm-corrected p = 0.025 across two tests, " \
        "Hedges' g_z = 0.110." in text  # fmt: skip
    assert "It meets the criterion we fixed in advance." in text
    assert (
        "Of the three comparisons, one met its criterion, one met its criterion only on the "
        "units that chose it and one did not." in text
    )
    assert "hedges_g_z" not in text and "p = 0.000" not in text


@pytest.mark.parametrize("branch", ["2A", "2B", "2C"])
def test_abstract_without_success_reports_the_closest_negative_and_its_failed_part(branch):
    closest = comparison(
        "activation_transfer", branch, value=0.5, ci=[-1.0, 2.0], p_holm=0.04, success=False,
        criteria=[passed_part("the gain is at least 2 points"),
                  failed_part("beats_shuffled_control", SHUFFLED_RULE, 0.1, [-0.2, 0.4], 0.0)],
    )  # fmt: skip
    other = comparison("abstention", "2B", p_holm=0.9, success=False)
    text = paper.render_abstract(statistics(closest, other), config())
    assert paper.unfilled_slots(text) == []
    assert (
        "No line of work met its pre-registered criteria on a held-out test. Neither comparison "
        "met its criteria. The closest comes from activation transfer into the target model: "
        in text
    )
    assert (
        "We report it as a negative result: it fails one part of its criterion: target + "
        "transfer beats target + another item's mapped activation (0.100, 95% CI [-0.200, "
        "0.400], bound 0)." in text
    )
    assert "Our strongest" not in text and "meets the criterion" not in text
    assert "Its confidence interval includes zero." in text
    assert "Across two seeds the mean was 1.00 (SD 0.280)." in text


def test_abstract_of_a_closest_result_that_measured_nothing_says_so():
    """behavior_edit chose no setting (every one broke the perplexity budget): no value to
    report, so the abstract says it could not be measured and names the failed part."""
    nothing = comparison(
        "behavior_edit", "2C", value=None, ci=[None, None], n=0, p_holm=None, p_value=None,
        effect_size={"name": None, "value": None}, success=False,
        criteria=[failed_part("perplexity_within_budget", "no setting kept perplexity within "
                              "the budget", None, [None, None], 2.0)],
    )  # fmt: skip
    text = paper.render_abstract(statistics(nothing), config())
    assert paper.unfilled_slots(text) == [] and "n/a" not in text
    assert "could not be measured. We report it as a negative result: it fails one part" in text
    assert "no setting kept perplexity within the budget" in text


def test_abstract_counts_agree_in_grammar():
    def text_for(*outcomes):
        comps = [
            comparison(f"c{i}", "2B", p_holm=0.1 + i / 100, success=s, criteria=c)
            for i, (s, c) in enumerate(outcomes)
        ]
        return paper.render_abstract(statistics(*comps), config())

    short = (False, None)
    assert "None of the three comparisons met their criteria." in text_for(short, short, short)
    nothing = text_for(*[(None, None)] * 3)
    assert "No held-out test had a success criterion, so no result leads this report." in nothing
    assert "Of the three" not in nothing and "None of the three" not in nothing
    assert "Of the three comparisons, one fell short and two had none." in text_for(
        short, (None, None), (None, None)
    )
    unjudged = (None, [passed_part("x"), {**passed_part("y"), "passed": None}])
    assert "Of the two comparisons, one fell short and one could not be judged." in text_for(
        short, unjudged
    )
    assert "Of the two comparisons, one met its criterion and one did not." in text_for(
        (True, None), short
    )
    assert "Of the three comparisons, two met their criteria and one did not." in text_for(
        (True, None), (True, None), short
    )
    single = text_for(short)
    assert "No line of work met its pre-registered criteria on a held-out test. The closest" in (
        single
    )
    assert "comparisons" not in single


def test_abstract_without_a_held_out_criterion_leads_with_nothing():
    stats = statistics(comparison("patching_layers", "2C", p_holm=0.001, success=None))
    text = paper.render_abstract(stats, config())
    assert paper.unfilled_slots(text) == [] and "n/a" not in text
    assert "No held-out test had a success criterion, so no result leads this report." in text
    assert "was 1.20" not in text


def test_abstracts_differ_by_line_of_work():
    texts = {
        branch: paper.render_abstract(
            statistics(comparison("x", branch, success=True)), config(), templates_dir=TEMPLATES
        )
        for branch in ("2A", "2B", "2C")
    }
    assert "share an activation space" in texts["2A"]
    assert "Contrast-Consistent Search" in texts["2B"]
    assert "Activation patching" in texts["2C"]


def test_abstract_with_missing_values_stays_grammatical():
    best = comparison(
        "headline", "2C", ci=None, p_value=None, p_holm=None, effect_size=None, n=None,
        success=True, seeds={},
    )  # fmt: skip
    text = paper.render_abstract(statistics(best), config(), templates_dir=TEMPLATES)
    assert paper.unfilled_slots(text) == []
    assert "comes from headline: the accuracy gain (points) was 1.20. It meets" in text
    assert "n/a" not in text and "None" not in text
    uncorrected = comparison("headline", "2C", p_value=0.02, p_holm=None, success=True)
    text = paper.render_abstract(statistics(uncorrected), config())
    assert "n = 150), p = 0.020 uncorrected, Hedges' g_z = 0.110." in text


def test_abstract_names_the_experiment_models_and_a_forced_gate():
    stats = statistics(comparison("activation_transfer", "2A", success=True), forced=("pm1",))
    text = paper.render_abstract(stats, config(), templates_dir=TEMPLATES)
    assert "gpt2 and EleutherAI/pythia_70m" in text
    assert (
        "A pre-mortem gated this line of work: the correlation after projection was 0.400 (95% CI "
        "[0.260, 0.550]) against a threshold of 0.300 fixed in advance, a verdict of "
        "INCONCLUSIVE; the gate was forced to PASS, so this line of work is exploratory." in text
    )


# ---------------------------------------------------------------------------------------------
# every forced path: the abstract's length, human labels, no identifiers in prose

#: What each branch experiment records, as a study writes it (metric, value, CI, n, the parts
#: of its criterion; None: no criterion). Rules are as long as the experiments' own.
REALISTIC = {
    "cross_model_extended": ("heldout_projection_correlation_at_layer_depth", 0.499,
                             [0.326, 0.655], 22, None),
    "activation_transfer": ("transfer_gain_points", 3.4, [0.7, 6.9], 29, [
        "target + transfer beats the target alone by at least 2 accuracy points, and the paired "
        "95% interval of the gain over items lies above 0",
        "target + transfer beats target + another item's mapped activation (the shuffled-item "
        "control): the paired 95% interval over items of transfer minus shuffled, in points, "
        "lies above 0"]),
    "error_prediction_extended": ("heldout_balanced_accuracy_at_selected_layer", 0.81,
                                  [0.58, 0.97], 22, None),
    "unsupervised_error": ("ccs_over_supervised_balanced_accuracy", 0.93, [0.84, 1.02], 22, [
        "CCS reaches 0.8 of the supervised probe: the 95% bootstrap interval over entity groups "
        "of CCS's balanced accuracy divided by the supervised contrast probe's, at the headline "
        "layer, lies above 0.8",
        "CCS beats a random direction (the expected balanced accuracy over 20 seeded random unit "
        "directions projecting the contrast differences, signed by output confidence on the "
        "training items as CCS is): the paired 95% bootstrap interval over entity groups of "
        "CCS's balanced accuracy minus the control's lies above 0",
        "CCS beats the top principal component of the contrast differences: the paired 95% "
        "bootstrap interval over entity groups of CCS's balanced accuracy minus the control's "
        "lies above 0",
        "CCS beats the output confidence (thresholded on the training items): the paired 95% "
        "bootstrap interval over entity groups of CCS's balanced accuracy minus the control's "
        "lies above 0"]),
    "abstention": ("effective_accuracy_gain_at_threshold", 0.061, [0.012, 0.11], 22, [
        "answering only when P(correct) >= 0.3, effective accuracy beats answering every item: "
        "the 95% interval of the gain lies above 0",
        "at the same coverage (17 answered test items), the probe's effective accuracy beats "
        "answering the model's most confident items (largest choice probability): the paired "
        "95% interval over items of the difference lies above 0"]),
    "patching_layers": ("denoising_change_rate_at_strongest_cell", 0.96, [0.80, 1.0], 25, None),
    "behavior_edit:formality": ("attribute_shift_at_best_setting", 0.0774, [0.062, 0.095], 25, [
        "the report prompts' mean attribute shift (steered minus unsteered) at the chosen "
        "setting has a 95% CI above 0",
        "no setting kept perplexity within the budget: no setting met the rule that the "
        "steered perplexity on neutral texts is at most 1.5 times the unsteered one on the "
        "report neutral texts (held apart from the budget-check texts that chose the setting)",
        "the report prompts' mean attribute score under the steering vector minus under a random "
        "direction of the same norm (same layer, coefficient and sampling seeds) has a 95% CI "
        "above 0"]),
    "patching_vs_prompting:formality": ("steering_minus_prompting_shift", -0.148,
                                        [-0.176, -0.121], 25, None),
}  # fmt: skip


def realistic_comparison(cid: str, outcome: str, p: float) -> dict:
    """One comparison as statistics.json records it; ``outcome``: met, failed (its last part
    fails) or descriptive (no criterion)."""
    metric, value, ci, n, rules = REALISTIC[cid]
    experiment, _, label = cid.partition(":")
    parts = []
    for index, rule in enumerate(rules if rules and outcome != "descriptive" else []):
        fails = outcome == "failed" and index == len(rules) - 1
        parts.append({
            "name": f"part_{index}", "kind": "plan" if index == 0 else "control", "rule": rule,
            "value": None if fails else 0.12, "ci": [None, None] if fails else [0.05, 0.2],
            "bound": 1.5 if fails else 0.0, "passed": not fails,
        })  # fmt: skip
    success = None if not parts else all(part["passed"] for part in parts)
    return comparison(
        cid, plan.experiment_branch(experiment), experiment=experiment, label=label or None,
        claim=None, metric=metric, value=value, ci=ci, n=n, p_value=p / 2, p_holm=p,
        effect_size={"name": "hedges_g_z", "value": 1.74}, test="sign-flip permutation",
        success=success, success_rule=None, criteria=parts, held_out=True,
        selection="the layer was chosen on the training items' cross-validation",
    )  # fmt: skip


def realistic_statistics(branches: tuple[str, ...], outcome: str, forced: bool) -> dict:
    comps = [
        realistic_comparison(cid, outcome, p=0.002 * (index + 1))
        for index, cid in enumerate(REALISTIC)
        if plan.experiment_branch(cid.partition(":")[0]) in branches
    ]
    stats = statistics(*comps, forced=("pm1", "pm2", "pm3") if forced else ())
    stats["decision"]["branches"] = list(branches)
    real = {"pm1": "heldout_projection_correlation", "pm2": "heldout_balanced_accuracy",
            "pm3": "change_rate"}  # fmt: skip
    for key, metric in real.items():
        stats["premortems"][key]["metric"] = metric
    if forced:  # the longest pre-mortem sentence: nothing measured, and the verdict forced
        stats["premortems"]["pm3"].update(
            value=None, ci=[None, None], verdict="PASS", measured_verdict="INCONCLUSIVE",
            reason="fewer than two usable prompt pairs after filtering",
        )  # fmt: skip
    return stats


def hub_config() -> dict:
    """Three hub models with long ids and three tasks: the longest model and task lists."""
    conf = config()
    conf["models"] = {
        name: {"source": "hub", "id": f"EleutherAI/{name}-deduped", "revision": None}
        for name in ("pythia-160m", "pythia-410m", "pythia-1b")
    }
    conf["tasks"]["truthfulqa"] = {"type": "truthfulqa_mc1", "source": "hub"}
    conf["experiments"] = {}
    return conf


BRANCH_SETS = [
    combo for size in (1, 2, 3) for combo in itertools.combinations(("2A", "2B", "2C"), size)
]
IDENTIFIERS = [*plan.METRIC_NAMES, *paper.formatting.EFFECT_SIZES]


@pytest.mark.parametrize("branches", BRANCH_SETS, ids="+".join)
def test_every_forced_path_has_an_abstract_within_200_words_without_identifiers(branches):
    for outcome, forced, conf in itertools.product(
        ("met", "failed", "descriptive"), (False, True), (config(), hub_config())
    ):
        stats = realistic_statistics(branches, outcome, forced)
        text = paper.render_abstract(stats, conf)
        where = (branches, outcome, forced)
        assert paper.word_count(text) <= paper.ABSTRACT_WORDS, (where, paper.word_count(text))
        assert paper.unfilled_slots(text) == [] and "n/a" not in text, (where, text)
        assert text.count("\n") == 1, (where, text)  # one paragraph
        assert not [name for name in IDENTIFIERS if name in text], (where, text)
        if outcome == "met":
            assert "Our strongest held-out result comes from" in text, where
        elif outcome == "failed":
            assert "No line of work met its pre-registered criteria" in text, where
            assert "We report it as a negative result: it fails one part of its criterion: " in (
                text
            ), where
        else:
            assert "No held-out test had a success criterion" in text, where


def test_the_full_abstract_is_kept_when_it_fits_and_shortened_only_when_it_does_not():
    stats = realistic_statistics(("2A",), "met", forced=False)
    text = paper.render_abstract(stats, config())
    assert "one workflow reproduces every number" in text  # brevity 0: every sentence
    longest = realistic_statistics(("2A", "2B", "2C"), "failed", forced=True)
    longest["comparisons"] = [c for c in longest["comparisons"] if c["id"] == "unsupervised_error"]
    for part in longest["comparisons"][0]["criteria"][:-1]:  # every part fails: the longest text
        part.update(passed=False, rule=part["rule"] + " " + "and so on " * 20)
    text = paper.render_abstract(longest, hub_config())
    assert paper.word_count(text) <= paper.ABSTRACT_WORDS
    assert "one workflow reproduces every number" not in text  # the optional sentence went first


def body_prose(tex: str) -> str:
    """The draft from the abstract to the appendix, without code, tables and comments."""
    body = tex[tex.index(r"\begin{abstract}") : tex.index(r"\appendix")]
    body = re.sub(r"\\begin\{(table\*?|tabular)\}.*?\\end\{\1\}", "", body, flags=re.S)
    body = re.sub(r"\\texttt\{[^{}]*(\{\}[^{}]*)*\}", "", body)
    return "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("%"))


@pytest.mark.parametrize("outcome", ["met", "failed", "descriptive"])
def test_the_draft_names_metrics_and_effect_sizes_by_their_labels(outcome):
    stats = realistic_statistics(("2A", "2B", "2C"), outcome, forced=True)
    tex = paper.render_draft(stats, [], config(), "")
    prose = body_prose(tex)
    for name in IDENTIFIERS:
        escaped = name.replace("_", r"\_")
        assert name not in tex[: tex.index(r"\appendix")] and escaped not in prose, name
    assert "share of corrupted answers flipped by patching the strongest cell" in tex
    assert "Hedges' $g_z$ = 1.74" in tex
    assert "None of the two" not in tex and "of the one" not in tex and " 1 comparisons" not in tex


def test_every_metric_the_package_writes_has_a_label_and_unit_in_the_plan():
    """Labels live in one place (plan.METRICS): every headline and pre-mortem metric the
    package names has an entry with a label and a unit."""
    pattern = re.compile(r'(?:"metric":\s*|HEADLINE_METRIC\s*=\s*)"([a-z][a-z0-9_]*)"')
    package = ROOT / "src" / "actspace"
    written = {m for path in package.rglob("*.py") for m in pattern.findall(path.read_text())}
    written |= {pm.metric for pm in plan.PREMORTEMS}
    assert written, "no metric found: the pattern no longer matches the code"
    assert written <= set(plan.METRIC_NAMES), written - set(plan.METRIC_NAMES)
    for entry in plan.METRICS:
        assert entry.label and entry.unit and "_" not in entry.label, entry
    assert plan.metric("transfer_gain_points").text == (
        "accuracy gain from activation transfer (percentage points)"
    )
    assert plan.metric("change_rate").percent and plan.premortem("pm3").metric_label == (
        "share of corrupted answers flipped to the clean answer"
    )
    # a metric the registry lacks still reads as words, never as an identifier
    assert plan.metric_text("some_new_rate") == "some new rate"


@pytest.mark.parametrize(
    ("metric", "value", "ci", "shown"),
    [
        ("heldout_balanced_accuracy_at_selected_layer", 0.812, [0.58, 0.97], "81.2%"),
        ("effective_accuracy_gain_at_threshold", 0.061, [0.012, 0.11], "6.10"),
        ("ccs_over_supervised_balanced_accuracy", 0.93, [0.84, 1.02], "0.930"),
    ],
)
def test_values_are_shown_in_the_metric_unit(metric, value, ci, shown):
    stats = statistics(comparison("x", "2B", metric=metric, value=value, ci=ci, success=True))
    (row,) = paper.comparison_rows(stats)
    assert row["value"] == shown
    assert row["metric"] == plan.metric_text(metric)


def test_count_words_agree_with_their_numbers():
    assert paper.count_phrase(1, "comparison") == "one comparison"
    assert paper.count_phrase(2, "comparison") == "two comparisons"
    assert paper.count_phrase(12, "test") == "12 tests"
    assert paper.none_of(2, "comparison") == "neither comparison"
    assert paper.none_of(3, "comparison") == "none of the three comparisons"
    assert paper.effect_name("hedges_g_z") == "Hedges' g_z"
    assert paper.effect_name("cohens_d") == "Cohen's d"
    assert str(paper.latex_prose("Hedges' g_z = 1.2 for a_b")) == r"Hedges' $g_z$ = 1.2 for a\_b"


# ---------------------------------------------------------------------------------------------
# the draft


def test_the_templates_are_package_data_with_one_block_per_entry_of_the_plan():
    assert TEMPLATES.is_dir() and (TEMPLATES / "draft.tex.j2").is_file() and BIB.is_file()
    for branch in plan.BRANCHES:
        if branch.venues:
            for part in ("abstract.txt.j2", "introduction.tex.j2", "contribution.tex.j2"):
                assert (TEMPLATES / "branches" / branch.name / part).is_file(), (branch.name, part)
    for pm in plan.PREMORTEMS:
        assert (TEMPLATES / "premortems" / f"{pm.name}.tex.j2").is_file(), pm.name
    for name in plan.EXPERIMENT_NAMES:
        assert (TEMPLATES / "experiments" / f"{name}.tex.j2").is_file(), name


def test_every_experiment_gets_its_own_paragraph_and_the_table_follows_the_plan():
    stats = statistics(*(comparison(e.name, e.branch, success=True) for e in plan.EXPERIMENTS))
    tex = paper.render_draft(stats, [], config(), "")  # the package's templates by default
    methods = section(tex, "Methods")
    assert methods.count(r"\paragraph{") == len(plan.EXPERIMENTS)
    assert "See its configuration" not in methods  # no experiment fell back to the default block
    assert r"\begin{tabular}{lllll}" in methods
    assert r"PM1 & PM2 & PM3 & Branches & \\" in methods
    assert r"FAIL & FAIL & FAIL & X (abort) &  \\" in methods
    # PM1 was INCONCLUSIVE (counts as FAIL), PM2 and PM3 passed
    assert r"FAIL & PASS & PASS & 2B, 2C & $\leftarrow$ \\" in methods
    for pm in plan.PREMORTEMS:
        assert f"{pm.label} measures" in methods
    intro = " ".join(section(tex, "Introduction").split())
    assert "we ran three cheap pre-mortems, one for each of cross-model similarity," in intro


def test_an_experiment_without_a_block_falls_back_to_its_name():
    stats = statistics(comparison("new_experiment", "2A", success=True))
    tex = paper.render_draft(stats, [], config(), "", templates_dir=TEMPLATES)
    assert r"\paragraph{new\_experiment.} See its configuration" in tex


@pytest.fixture
def draft() -> str:
    return paper.render_draft(
        full_statistics(), MANIFEST, config(), SUMMARY_MD, templates_dir=TEMPLATES
    )


def test_draft_is_complete_and_targets_the_venue(draft):
    assert paper.unfilled_slots(draft) == []
    # unsupervised_error is the only success: line of work 2B, ACL, two columns on A4.
    assert r"\documentclass[11pt,a4paper,twocolumn]{article}" in draft
    assert "acl.sty" in draft
    assert r"\footnote{The official" in draft
    assert "This draft targets ACL," in draft
    assert "with EMNLP as the alternative." in draft
    assert "smallest Holm-corrected p-value" in draft  # the rule is stated
    for name in (
        "Introduction",
        "Related Work",
        "Methods",
        "Experiments",
        "Analysis",
        "Conclusion",
    ):
        assert f"\\section{{{name}}}" in draft
    assert r"\appendix" in draft
    intro = section(draft, "Introduction")
    assert intro.count(r"\item") == 3


@pytest.mark.parametrize(
    ("branch", "documentclass"),
    [
        ("2A", r"\documentclass[10pt,letterpaper]{article}"),
        ("2C", r"\documentclass[10pt,letterpaper]{article}"),
    ],
)
def test_draft_preamble_follows_the_venue(branch, documentclass):
    tex = paper.render_draft(
        statistics(comparison("x", branch, success=True)), [], config(), "", templates_dir=TEMPLATES
    )
    venue = plan.branch(branch).venues[0]
    assert documentclass in tex
    assert f"% Venue: {venue}." in tex
    assert f"This draft targets {venue}" in tex


def test_results_table_lists_every_comparison(draft):
    experiments = section(draft, "Experiments")
    transfer = (
        r"Activation transfer into the target model & accuracy gain (points) & 1.20 & "
        r"{[}-0.500, 2.90{]} & 0.310 & 0.620 & Hedges' $g_z$ = 0.110 & 150 & no \\"
    )
    assert transfer in experiments
    patching = (
        r"change rate & 74.0\% & {[}62.0\%, 84.0\%{]} & \textless{} 0.001 & \textless{} 0.001 & "
        r"h = 0.500 & 50 & --- \\"
    )
    assert patching in experiments
    assert "& n/a & --- & n/a & 150 & --- \\\\" in experiments  # abstention: no p-values
    # pre-mortem table: the forced verdict is marked, with the measured one
    # with both verdicts, the control and the controlled comparison in the metric's unit
    pm1 = (
        r"PM1 & correlation after projection & 0.400 & {[}0.260, 0.550{]} & 0.300 & "
        r"INCONCLUSIVE & surface features: 0.300 {[}0.160, 0.450{]} & "
        r"0.100 {[}0.0500, 0.150{]}, bound 0 & INCONCLUSIVE & PASS$^{\dagger}$ (INCONCLUSIVE) \\"
    )
    assert pm1 in experiments
    assert (
        r"PM2 & balanced accuracy & 62.0\% & {[}58.0\%, 66.0\%{]} & 55.0\% & PASS & "
        r"surface features: 52.0\% {[}48.0\%, 56.0\%{]} & 10.0\% {[}5.00\%, 15.0\%{]}, bound 0\% & "
        r"PASS & PASS \\" in experiments
    )
    assert r"Used: the verdict the gate used (\texttt{gate.criterion}: controlled)." in experiments


def test_figures_are_included_from_the_manifest(draft):
    assert r"\includegraphics[width=\linewidth]{figures/patching_effect_by_layer.pdf}" in draft
    assert r"\includegraphics[width=\linewidth]{figures/cross_model_heatmap.pdf}" in draft
    assert r"95\% CIs \& the strongest layer marked." in draft
    assert r"\ref{fig:patching_effect_by_layer}" in draft


def test_failures_and_inconclusive_results_are_discussed_in_the_analysis(draft):
    analysis = section(draft, "Analysis")
    assert r"\paragraph{Activation transfer into the target model: negative result.}" in analysis
    assert "We expected that activation\\_transfer works." in analysis
    assert "does not meet the success criterion" in analysis
    assert "gain \\textgreater{}= 2 points with a CI excluding 0" in analysis
    assert "The interval includes zero" in analysis
    assert "Across two seeds the mean was 1.00 (SD 0.280)." in analysis
    assert (
        r"The accuracy gain (points) was 1.20 (95\% CI {[}-0.500, 2.90{]}) on n = 150, McNemar: "
        r"p = 0.310 and Holm-corrected p = 0.620, effect size Hedges' $g_z$ = 0.110." in analysis
    )
    # the pre-mortem that was INCONCLUSIVE (and forced) is discussed as such
    assert "PM1 (cross-model similarity) was INCONCLUSIVE" in analysis
    assert "forced to PASS by the configuration" in analysis
    # a success is not listed among the failures, and descriptive results are not failures
    failures = analysis.split(r"\subsection{Pre-mortem verdicts}")[0]
    assert "CCS" not in failures
    assert "Abstention" not in failures
    assert "Activation patching" not in failures


def test_no_significant_result_without_criterion_is_inconclusive():
    stats = statistics(
        comparison("activation_transfer", "2A", success=True, p_holm=0.01),
        comparison("patching_vs_prompting", "2C", success=None, p_holm=0.4),
    )
    tex = paper.render_draft(stats, [], config(), "", templates_dir=TEMPLATES)
    analysis = section(tex, "Analysis")
    assert r"\paragraph{Steering against prompting: inconclusive result.}" in analysis
    assert "neither an effect nor its absence is established" in analysis


def test_no_success_is_said_plainly_and_the_closest_names_its_failed_part():
    closest = comparison(
        "activation_transfer", "2A", p_holm=0.04, success=False, ci=[0.2, 2.9],
        criteria=[passed_part("the gain is at least 2 points"),
                  failed_part("beats_shuffled_control", SHUFFLED_RULE, 0.1, [-0.2, 0.4], 0.0)],
    )  # fmt: skip
    stats = statistics(closest, comparison("abstention", "2B", p_holm=0.8))
    tex = " ".join(paper.render_draft(stats, [], config(), "").split())
    assert (
        "The effect is detectable after Holm correction, but it does not beat the control named "
        "above" in section(tex, "Analysis")
    )
    assert "smaller than the criterion demands" not in tex
    assert paper.unfilled_slots(tex) == []
    assert (
        "No line of work met its criteria on a held-out test. We report the closest, from "
        "activation transfer into the target model, as a negative result: the accuracy gain "
        "(points) was 1.20" in tex
    )
    assert (
        "It fails one part of its criterion: target + transfer beats target + another item's "
        "mapped activation (the shuffled-item control): the paired 95\\% interval over items of "
        "transfer minus shuffled lies above 0 (0.100, 95\\% CI {[}-0.200, 0.400{]}, bound 0)."
        in tex
    )
    conclusion = section(tex, "Conclusion")
    assert (
        "the closest, from activation transfer into the target model, fails its criterion "
        "(target + transfer beats target + another item's mapped activation)." in conclusion
    )
    # the criteria appendix lists each part with its numbers
    appendix = section(tex, "Success criteria, part by part")
    assert (
        "Activation transfer into the target model & plan & the gain is at least 2 points & 3.00 "
        "& {[}2.50, 3.50{]} & 2.00 & yes \\\\" in appendix
    )
    assert " & control & target + transfer beats" in appendix


def test_the_venue_rule_is_a_latex_comment_and_in_paper_json_not_prose(tmp_path):
    tex = paper.render_draft(full_statistics(), [], config(), "")
    body = tex[tex.index(r"\begin{document}") :]
    assert "smallest Holm-corrected p-value" not in body
    assert "rule fixed before" not in body
    preamble = tex[: tex.index(r"\begin{document}")]
    comment = [line for line in preamble.splitlines() if "How the venue was chosen" in line]
    assert comment and comment[0].startswith("% ")
    rule_lines = preamble[preamble.index(comment[0]) :].split("\n\\usepackage")[0]
    assert all(line.startswith("% ") for line in rule_lines.splitlines())
    assert " ".join(line[2:] for line in rule_lines.splitlines()).endswith(paper.STRONGEST_RULE)
    paths = write_inputs(tmp_path)
    info = paper.write_paper(
        paths["statistics"], paths["manifest"], paths["config"], None, None, tmp_path / "out"
    )
    assert info["rule"] == paper.STRONGEST_RULE
    assert (info["closest"], info["failed_criteria"], info["held_out"]) == (False, [], True)


def test_the_holm_family_and_the_tests_left_out_are_stated():
    selected = comparison(
        "patching_layers", "2C", p_value=1e-4, p_holm=None, success=None, held_out=False,
        in_holm_family=False, excluded_from_family="not held out: the units it is tested on also "
        "chose it (strongest cell chosen on the same pairs)",
    )  # fmt: skip
    held = comparison("activation_transfer", "2A", p_holm=0.3, success=True, in_holm_family=True)
    stats = statistics(held, selected)
    stats["holm"] = {
        "alpha": 0.05, "n_comparisons": 1, "family": ["activation_transfer"],
        "excluded": [{"id": "patching_layers", "reason": selected["excluded_from_family"]}],
        "rule": "only held-out tests",
    }  # fmt: skip
    tex = " ".join(paper.render_draft(stats, [], config(), "").split())
    assert (
        "form the family whose p-values are corrected by the Holm procedure "
        "\\citep{holm1979simple} at $\\alpha = 0.05$: one test. One test stays outside the family, "
        "with uncorrected p-values (marked $^{\\ddagger}$ in Table~\\ref{tab:results}): activation "
        "patching layer by layer (not held out: the units it is tested on also chose it (strongest "
        "cell chosen on the same pairs))." in tex
    )
    assert "Holm-corrected one across the one held-out test of the family" in tex
    assert "& \\textless{} 0.001$^{\\ddagger}$ & --- &" in tex  # raw p marked, no Holm p


def test_appendix_lists_nested_config_keys_and_values(draft):
    appendix = draft[draft.index(r"\appendix") :].replace(r"\allowbreak{}", "")
    assert r"\texttt{premortems.pm1.threshold} & 0.3 \\" in appendix
    assert (
        r"\texttt{experiments.activation\_transfer.coefficients} & {[}0.25, 0.5{]} \\" in appendix
    )
    assert (
        r"\texttt{experiments.behavior\_edit.scorers.toxicity.label} & toxic\_50\% \\" in appendix
    )
    assert r"\texttt{gate.force.pm1} & PASS \\" in appendix
    assert r"\texttt{models.pythia\_70m.id} & EleutherAI/pythia\_70m \\" in appendix
    # the summary table from the analysis step
    assert "activation\\_transfer & 1.20 & {[}-0.500, 2.90{]}" in appendix


def test_special_characters_in_data_are_escaped(draft):
    assert "EleutherAI/pythia\\_70m" in draft
    assert "EleutherAI/pythia_70m" not in draft
    assert "toxic_50%" not in draft
    body = draft[draft.index(r"\begin{document}") :]
    # every % in the body is escaped or a LaTeX comment at the start of a line
    for line in body.splitlines():
        assert re.search(r"(?<!\\)%", line) is None or line.lstrip().startswith("%"), line


def test_every_cited_key_is_in_the_bibliography(draft):
    bib = BIB.read_text("utf-8")
    defined = set(re.findall(r"@\w+\{([^,\s]+),", bib))
    cited = {
        key.strip()
        for group in re.findall(r"\\cite[pt]?\{([^}]*)\}", draft)
        for key in group.split(",")
    }
    assert cited, "the draft cites nothing"
    assert cited <= defined, cited - defined
    for required in (
        "kornblith2019similarity",
        "lenc2015understanding",
        "bansal2021revisiting",
        "huh2024platonic",
        "burns2023discovering",
        "farquhar2023challenges",
        "levinstein2023still",
        "azaria2023internal",
        "marks2023geometry",
        "kadavath2022language",
        "meng2022locating",
        "zhang2024towards",
        "heimersheim2024use",
        "turner2023activation",
        "rimsky2024steering",
        "gao2023evalharness",
        "geifman2017selective",
    ):
        assert required in cited, required
    assert {"radford2019language", "biderman2023pythia", "zellers2019hellaswag"} <= cited


# ---------------------------------------------------------------------------------------------
# write_paper and the script


def write_inputs(folder: Path, stats: dict | None = None, manifest=MANIFEST) -> dict[str, Path]:
    analysis = folder / "analysis"
    figures = analysis / "figures"
    figures.mkdir(parents=True)
    paths = {
        "statistics": analysis / "statistics.json",
        "manifest": figures / "figures.json",
        "config": folder / "config.json",
    }
    paths["statistics"].write_text(json.dumps(stats or full_statistics()))
    paths["manifest"].write_text(json.dumps(manifest))
    paths["config"].write_text(json.dumps(config()))
    (analysis / "summary_table.md").write_text(SUMMARY_MD)
    for entry in manifest:
        tiny_pdf(figures / entry["pdf"])
    return paths


def tiny_pdf(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0.2, 0.7, 0.4], marker="o")
    ax.set_xlabel("layer")
    fig.savefig(path)
    plt.close(fig)


def test_write_paper_writes_every_output(tmp_path):
    paths = write_inputs(tmp_path)
    out = tmp_path / "paper"
    summary = paper.write_paper(
        paths["statistics"], paths["manifest"], paths["config"], TEMPLATES, BIB, out
    )
    assert summary["venue"] == "ACL"
    assert summary["alternative_venue"] == "EMNLP"
    assert summary["strongest_comparison"] == "unsupervised_error"
    assert summary["rule"] == paper.STRONGEST_RULE
    assert json.loads((out / "paper.json").read_text()) == summary
    assert (out / "related_work.bib").read_text() == BIB.read_text()
    assert (out / "figures" / "patching_effect_by_layer.pdf").read_bytes()[:4] == b"%PDF"
    assert (out / "figures" / "cross_model_heatmap.pdf").is_file()
    abstract = (out / "abstract.txt").read_text()
    assert "0.853" in abstract and "[0.811, 0.902]" in abstract
    assert paper.unfilled_slots((out / "draft.tex").read_text()) == []
    assert not list(out.rglob(".*.tmp"))


def test_write_paper_without_a_lead_result(tmp_path):
    """No held-out test had a criterion: the paper is still written, and paper.json says that
    no result leads."""
    stats = statistics(comparison("patching_layers", "2C", p_holm=0.001, success=None))
    paths = write_inputs(tmp_path, stats=stats)
    info = paper.write_paper(
        paths["statistics"], paths["manifest"], paths["config"], None, None, tmp_path / "out"
    )
    assert (info["strongest_comparison"], info["any_success"], info["closest"]) == (
        None, False, False,
    )  # fmt: skip
    assert (info["venue"], info["held_out"]) == ("ICLR", None)
    tex = (tmp_path / "out" / "draft.tex").read_text()
    assert "No held-out test had a success criterion, so no single result leads" in tex
    assert paper.unfilled_slots(tex) == []


def test_write_paper_refuses_unfilled_slots(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    broken = templates / "branches" / "2B" / "abstract.txt.j2"
    broken.write_text(broken.read_text() + "\nWe also report [UNKNOWN_SLOT].\n")
    paths = write_inputs(tmp_path / "in")
    out = tmp_path / "paper"
    with pytest.raises(ValueError, match=r"unfilled template slots: \[UNKNOWN_SLOT\]"):
        paper.write_paper(
            paths["statistics"], paths["manifest"], paths["config"], templates, BIB, out
        )
    assert not out.exists()


def test_write_paper_errors(tmp_path):
    paths = write_inputs(tmp_path, stats=statistics())
    with pytest.raises(ValueError, match="no comparisons"):
        paper.write_paper(
            paths["statistics"], paths["manifest"], paths["config"], TEMPLATES, BIB, tmp_path / "o"
        )
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match="statistics file not found"):
        paper.write_paper(
            missing, paths["manifest"], paths["config"], TEMPLATES, BIB, tmp_path / "o"
        )
    (tmp_path / "analysis" / "figures" / "cross_model_heatmap.pdf").unlink()
    paths["statistics"].write_text(json.dumps(full_statistics()))
    with pytest.raises(ValueError, match="cross_model_heatmap"):
        paper.write_paper(
            paths["statistics"], paths["manifest"], paths["config"], TEMPLATES, BIB, tmp_path / "o"
        )


def test_script_runs_and_reports_errors(tmp_path):
    paths = write_inputs(tmp_path)
    script = ROOT / "scripts" / "make_paper.py"
    args = [
        sys.executable,
        str(script),
        "--statistics",
        str(paths["statistics"]),
        "--figures-manifest",
        str(paths["manifest"]),
        "--config-json",
        str(paths["config"]),
        "--output-dir",
        str(tmp_path / "paper"),
    ]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "ACL" in done.stdout
    assert (tmp_path / "paper" / "draft.tex").is_file()  # from the package's templates
    assert (tmp_path / "paper" / "related_work.bib").read_text() == BIB.read_text()
    bad = args[:]
    bad[bad.index("--statistics") + 1] = str(tmp_path / "nope.json")
    done = subprocess.run(bad, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("error: statistics file not found")


# ---------------------------------------------------------------------------------------------
# a real compile


def compile_latex(folder: Path) -> subprocess.CompletedProcess:
    command = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "draft.tex"]
    for step in (command, ["bibtex", "draft"], command, command):
        done = subprocess.run(step, cwd=folder, capture_output=True, text=True, timeout=240)
        if done.returncode != 0:
            return done
    return done


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
@pytest.mark.skipif(shutil.which("bibtex") is None, reason="bibtex is not installed")
@pytest.mark.parametrize(
    "headline",
    [
        pytest.param("unsupervised_error", id="ACL-two-column"),
        pytest.param("activation_transfer", id="NeurIPS-one-column"),
    ],
)
def test_draft_compiles_with_pdflatex_and_bibtex(tmp_path, headline):
    stats = full_statistics()
    for c in stats["comparisons"]:
        c["success"] = c["id"] == headline
    paths = write_inputs(tmp_path, stats=copy.deepcopy(stats))
    out = tmp_path / "paper"
    summary = paper.write_paper(
        paths["statistics"], paths["manifest"], paths["config"], TEMPLATES, BIB, out
    )
    assert summary["strongest_comparison"] == headline
    done = compile_latex(out)
    log = (out / "draft.log").read_text(errors="replace") if (out / "draft.log").exists() else ""
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-2000:])
    assert (out / "draft.pdf").stat().st_size > 10_000
    assert "Citation" not in re.findall(r"Warning: (Citation)", log)
    assert "undefined references" not in log
    assert "There were undefined" not in log


def test_forced_verdict_comes_from_the_configuration_when_the_record_is_measured():
    stats = statistics(comparison("activation_transfer", "2A", success=True))
    # The contract's example: the record carries the measured verdict, decision.forced names pm1.
    stats["premortems"]["pm1"].update(verdict="INCONCLUSIVE", forced=False)
    stats["decision"]["forced"] = ["pm1"]
    rows = {row["key"]: row for row in paper.premortem_rows(stats, config())}
    assert rows["pm1"]["forced"] is True
    assert rows["pm1"]["verdict"] == "PASS"
    assert rows["pm1"]["measured_verdict"] == "INCONCLUSIVE"
    assert rows["pm2"]["forced"] is False
    tex = paper.render_draft(stats, [], config(), "", templates_dir=TEMPLATES)
    assert "PASS$^{\\dagger}$ (INCONCLUSIVE)" in tex
    assert "The verdict of PM1 was forced by the configuration" in tex


def test_failed_premortem_is_reported_and_its_branch_did_not_run():
    stats = statistics(comparison("unsupervised_error", "2B", success=True))
    stats["premortems"]["pm3"].update(
        value=0.2, ci=[0.1, 0.3], verdict="FAIL", measured_verdict="FAIL"
    )
    stats["decision"]["branches"] = ["2B"]
    tex = paper.render_draft(stats, [], config(), "", templates_dir=TEMPLATES)
    analysis = section(tex, "Analysis")
    assert "PM3 (activation patching) failed: 20.0\\% (95\\% CI {[}10.0\\%, 30.0\\%{]})" in analysis
    assert "so its branch did not run" in analysis
    assert "The branches that ran are 2B." in tex


def _control_failed(criterion: str) -> dict:
    """PM1 clears its threshold (plan PASS) but not its control (controlled FAIL); ``criterion``
    decided, so 2A ran under the plan criterion only."""
    stats = statistics(comparison("unsupervised_error", "2B", success=True))
    used = "PASS" if criterion == "plan" else "FAIL"
    stats["premortems"]["pm1"].update(
        value=0.4, ci=[0.35, 0.45], plan_verdict="PASS", controlled_verdict="FAIL",
        verdict=used, measured_verdict=used,
    )  # fmt: skip
    stats["premortems"]["pm1"]["controlled"].update(value=0.01, ci=[-0.03, 0.05], passed=False)
    branches = {"plan": ["2A", "2B", "2C"], "controlled": ["2B", "2C"]}
    other = "controlled" if criterion == "plan" else "plan"
    stats["decision"].update(
        criterion=criterion,
        branches=branches[criterion],
        other_criterion={"criterion": other, "branches": branches[other]},
    )
    return stats


def test_the_draft_names_the_criterion_and_shows_both_verdicts():
    tex = " ".join(
        paper.render_draft(
            _control_failed("controlled"), [], config(), "", templates_dir=TEMPLATES
        ).split()
    )
    assert (
        r"The gate decided on the controlled verdicts (\texttt{gate.criterion}); "
        r"Table~\ref{tab:premortems} shows both. Under the plan criterion it would have "
        "scheduled 2A, 2B and 2C." in tex
    )
    assert (
        r"PM1 & correlation after projection & 0.400 & {[}0.350, 0.450{]} & 0.300 & PASS & "
        r"surface features: 0.300 {[}0.160, 0.450{]} & 0.0100 {[}-0.0300, 0.0500{]}, bound 0 & "
        r"FAIL & FAIL \\" in tex
    )
    analysis = section(tex, "Analysis")
    assert (
        "PM1 (cross-model similarity) cleared its threshold but not its control: 0.400 (95\\% CI "
        "{[}0.350, 0.450{]}) lies above the threshold of 0.300 (plan verdict PASS), but against "
        "surface features (0.300, 95\\% CI {[}0.160, 0.450{]}) the controlled comparison, 0.0100 "
        "(95\\% CI {[}-0.0300, 0.0500{]}), does not lie above its bound of 0, so its controlled "
        "verdict is FAIL. The gate decided on the controlled verdicts, so its branch did not run."
        in analysis
    )


def test_under_the_plan_criterion_the_draft_says_the_branch_ran_without_beating_its_control():
    tex = " ".join(
        paper.render_draft(
            _control_failed("plan"), [], config(), "", templates_dir=TEMPLATES
        ).split()
    )
    assert r"The gate decided on the plan verdicts (\texttt{gate.criterion})" in tex
    assert "Under the controlled criterion it would have scheduled 2B and 2C." in tex
    assert r"0.0100 {[}-0.0300, 0.0500{]}, bound 0 & FAIL & PASS \\" in tex
    analysis = section(tex, "Analysis")
    assert (
        "The gate decided on the plan verdicts, so its branch ran although the metric does not "
        "beat its control; we read that branch's results as exploratory." in analysis
    )
    assert "PM1 (cross-model similarity) failed" not in analysis


# ---------------------------------------------------------------------------------------------
# the compiled PDF, looked at


def marked_figure(path: Path, marker: str) -> None:
    """A tiny figure titled ``marker``: its text comes from the figure's own content, so finding
    it on a page of the PDF shows the figure was drawn there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0.2, 0.7, 0.4], marker="o")
    ax.set_title(marker)
    fig.savefig(path)
    plt.close(fig)


def ink_share(png: Path) -> float:
    """The share of a page's pixels that are not near-white."""
    from PIL import Image

    gray = Image.open(png).convert("L")
    histogram = gray.histogram()
    return sum(histogram[:200]) / (gray.width * gray.height)


PDF_TOOLS = ("pdflatex", "bibtex", "pdftoppm", "pdftotext")


@pytest.mark.slow
@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in PDF_TOOLS),
    reason="needs pdflatex and bibtex (texlive-latex-recommended) and pdftoppm and pdftotext "
    "(poppler-utils)",
)
@pytest.mark.parametrize(
    ("headline", "name"),
    [
        pytest.param("unsupervised_error", "Unsupervised error discovery (CCS)", id="ACL"),
        pytest.param("activation_transfer", "Activation transfer into the target", id="NeurIPS"),
    ],
)
def test_the_compiled_draft_shows_its_figures_and_tables(tmp_path, headline, name):
    """Compile a draft from the fixture statistics and tiny figures (two columns for ACL, one for
    NeurIPS), render its pages to PNG, and look: no blank page, a plausible length, each figure
    drawn on the page of its caption, and every table's caption and rows in the text."""
    stats = full_statistics()
    for c in stats["comparisons"]:
        if c["success"] is not None:
            c["success"] = c["id"] == headline
            c["criteria"] = [{**passed_part("the part that held"), "passed": c["success"]}]
    paths = write_inputs(tmp_path / "in", stats=stats)
    for index, entry in enumerate(MANIFEST):
        marked_figure(paths["manifest"].parent / entry["pdf"], f"FIGMARK{index + 1}")
    paper.write_paper(
        paths["statistics"], paths["manifest"], paths["config"], None, None, tmp_path / "paper"
    )
    pdf = compile_paper(tmp_path / "paper", tmp_path / "build")
    pages = pdf_pages(pdf, tmp_path / "png")
    texts = [" ".join(text.split()) for text in pdf_page_texts(pdf)]
    assert len(pages) == len(texts)
    assert 4 <= len(pages) <= 20, len(pages)
    ink = [ink_share(page) for page in pages]
    assert min(ink) > 0.005, ink  # no blank page
    whole = " ".join(texts)
    for number in (1, 2):
        page = next((t for t in texts if f"Figure {number}:" in t), None)
        assert page is not None, f"no caption of Figure {number}"
        assert f"FIGMARK{number}" in page, f"Figure {number} is not drawn on its caption's page"
    assert "Patching effect by layer, with 95% CIs & the strongest layer marked." in whole
    for number, caption in enumerate(
        (
            "The decision table of the gate.",
            "Pre-mortem verdicts against thresholds fixed in advance",
            "Main results: one row per comparison.",
            "The parts of each success criterion, with their numbers.",
        ),
        start=1,
    ):
        assert f"Table {number}: {caption}" in whole, caption
    assert name in whole and "0.853" in whole and "1.20" in whole
    assert "Our strongest held-out result comes from" in whole
    assert "the part that held" in whole  # the criteria appendix
    assert "??" not in whole  # every reference resolved
