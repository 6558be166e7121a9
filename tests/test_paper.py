"""Phase 4, the paper draft: the strongest-result rule, templates, escaping and a real compile."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
        "effect_size": {"name": "d_z", "value": 0.11},
        "test": "McNemar",
        "p_value": 0.31,
        "p_holm": 0.62,
        "success": False,
        "success_rule": "gain >= 2 points with a CI excluding 0",
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


def test_without_success_the_smallest_holm_p_wins():
    stats = statistics(
        comparison("activation_transfer", "2A", p_holm=0.2, success=False),
        comparison("patching_layers", "2C", p_holm=0.03, success=None),
        comparison("abstention", "2B", p_holm=None, success=False),
    )
    best = paper.choose_strongest(stats)
    assert best["id"] == "patching_layers"
    assert best["succeeded"] is False
    assert best["venue"] == "ICLR"


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


@pytest.mark.parametrize("branch", ["2A", "2B", "2C"])
@pytest.mark.parametrize("success", [True, False, None])
def test_abstract_has_no_unfilled_slot_and_states_the_numbers(branch, success):
    best = comparison(
        "headline",
        branch,
        value=0.40,
        ci=[0.26, 0.55],
        p_value=0.0123,
        p_holm=0.0246,
        success=success,
    )
    other = comparison("other", "2A" if branch != "2A" else "2B", p_holm=0.9, success=False)
    text = paper.render_abstract(statistics(best, other), config(), templates_dir=TEMPLATES)
    assert paper.unfilled_slots(text) == []
    assert re.search(r"\[[^\d-]", text) is None  # every bracket left is an interval
    assert "0.400" in text
    assert "[0.260, 0.550]" in text
    assert "p = 0.012" in text
    assert "Holm-corrected p = 0.025" in text
    assert "d_z = 0.110" in text
    assert "{{" not in text and "{%" not in text
    assert text.count("\n") == 1  # one paragraph
    if success is True:
        assert "meets the success criterion" in text
    elif success is False:
        assert "falls short of the success criterion" in text
        assert "None of the two comparisons met a success criterion." in text
    else:
        assert "No success criterion was set" in text
        assert "None of the two comparisons met a success criterion (one fell short and one" in text


def test_abstracts_differ_by_line_of_work():
    texts = {
        branch: paper.render_abstract(
            statistics(comparison("x", branch, success=True)), config(), templates_dir=TEMPLATES
        )
        for branch in ("2A", "2B", "2C")
    }
    assert "shared activation space" in texts["2A"]
    assert "Contrast-Consistent Search" in texts["2B"]
    assert "Activation patching" in texts["2C"]


def test_abstract_with_missing_values_stays_grammatical():
    best = comparison(
        "headline",
        "2C",
        ci=None,
        p_value=None,
        p_holm=None,
        effect_size=None,
        n=None,
        success=None,
        seeds={},
    )
    text = paper.render_abstract(statistics(best), config(), templates_dir=TEMPLATES)
    assert paper.unfilled_slots(text) == []
    assert "the accuracy gain (points) was 1.20." in text
    assert "95% CI" not in text.split("headline")[1].split(".")[0]
    assert "n/a" not in text and "None" not in text
    assert "without a significance test" in text
    assert "significance after Holm" not in text  # no p-value: no claim about significance


def test_abstract_names_the_experiment_models_and_a_forced_gate():
    stats = statistics(comparison("activation_transfer", "2A", success=True), forced=("pm1",))
    text = paper.render_abstract(stats, config(), templates_dir=TEMPLATES)
    assert "gpt2 and EleutherAI/pythia_70m" in text
    assert "the gate was forced to PASS" in text
    assert "a verdict of INCONCLUSIVE" in text


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
        r"\texttt{activation\_\allowbreak{}transfer} & accuracy gain (points) & 1.20 & "
        r"{[}-0.500, 2.90{]} & 0.310 & 0.620 & d\_z = 0.110 & 150 & no \\"
    )
    assert transfer in experiments
    patching = (
        r"change rate & 74.0\% & {[}62.0\%, 84.0\%{]} & \textless{} 0.001 & \textless{} 0.001 & "
        r"h = 0.500 & 50 & --- \\"
    )
    assert patching in experiments
    assert "n/a & n/a" in experiments  # abstention: no p-values
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
    assert r"\texttt{activation\_\allowbreak{}transfer}: negative result.}" in analysis
    assert "We expected that activation\\_transfer works." in analysis
    assert "does not meet the success criterion" in analysis
    assert "gain \\textgreater{}= 2 points with a CI excluding 0" in analysis
    assert "The interval includes zero" in analysis
    assert "Across 2 seeds the mean was 1.00 (SD 0.280)." in analysis
    # the pre-mortem that was INCONCLUSIVE (and forced) is discussed as such
    assert "PM1 (cross-model similarity) was INCONCLUSIVE" in analysis
    assert "forced to PASS by the configuration" in analysis
    # a success is not listed among the failures, and descriptive results are not failures
    failures = analysis.split(r"\subsection{Pre-mortem verdicts}")[0]
    assert "unsupervised\\_\\allowbreak{}error" not in failures
    assert "abstention" not in failures
    assert "patching\\_\\allowbreak{}layers" not in failures


def test_no_significant_result_without_criterion_is_inconclusive():
    stats = statistics(
        comparison("activation_transfer", "2A", success=True, p_holm=0.01),
        comparison("patching_vs_prompting", "2C", success=None, p_holm=0.4),
    )
    tex = paper.render_draft(stats, [], config(), "", templates_dir=TEMPLATES)
    analysis = section(tex, "Analysis")
    assert (
        r"\texttt{patching\_\allowbreak{}vs\_\allowbreak{}prompting}: inconclusive result."
        in analysis
    )
    assert "neither an effect nor its absence is established" in analysis


def test_no_success_is_said_plainly():
    stats = statistics(
        comparison("activation_transfer", "2A"), comparison("abstention", "2B", p_holm=0.8)
    )
    tex = paper.render_draft(stats, [], config(), "", templates_dir=TEMPLATES)
    assert "No experiment met its success criterion." in tex
    assert paper.unfilled_slots(tex) == []


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
