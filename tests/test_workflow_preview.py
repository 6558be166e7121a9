"""Previewing the decision path with ``snakemake -n`` on a fresh copy, and refusing bad config."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from helpers.workflow import copy_workflow, dry_run, force_args, snakemake

from actspace.gate.decision import branches_for

ROOT = Path(__file__).resolve().parents[1]
PRE_BRANCH = {
    "make_world": 1,
    "train_organism": 2,
    "prepare_task": 1,
    "extract": 2,
    "pm1_cross_model": 1,
    "pm2_error_prediction": 1,
    "pm3_patching": 1,
    "gate": 1,
    "decision": 1,
    "statistics": 1,
    "figures": 1,
    "study_summary": 1,
    "all": 1,
}
#: Phase 4, drafted unless the plan aborts.
PAPER_RULES = {"study_config", "paper"}
#: The rules each branch schedules; a branch issue adds its rules here with its targets.
BRANCH_RULES: dict[str, set[str]] = {
    "2A": {"cross_model_extended", "activation_transfer"},
    "2B": {"error_prediction_extended", "unsupervised_error", "abstention"},
    "2C": {"patching_layers", "behavior_edit", "patching_vs_prompting"},
    "X": {"abort_report"},
}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("fresh"))


def test_before_the_premortems_the_preview_stops_at_the_gate(fresh):
    jobs = dry_run(fresh)
    assert jobs == PRE_BRANCH
    assert "abort_report" not in jobs


@pytest.mark.parametrize("combo", list(itertools.product(("PASS", "FAIL"), repeat=3)))
def test_each_forced_combination_schedules_exactly_its_branches(fresh, combo):
    jobs = dry_run(fresh, *force_args(*combo))
    branches = branches_for(dict(zip(("pm1", "pm2", "pm3"), combo, strict=True)))
    expected_rules = set(PRE_BRANCH).union(*(BRANCH_RULES[b] for b in branches))
    if branches != ["X"]:
        expected_rules |= PAPER_RULES
    assert set(jobs) == expected_rules
    assert ("abort_report" in jobs) == (combo == ("FAIL", "FAIL", "FAIL"))


def test_a_partly_forced_preview_needs_the_checkpoint(fresh):
    jobs = dry_run(fresh, *force_args("PASS", None, None))
    assert jobs == PRE_BRANCH


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ('premortems={"pm2": {"threshold": 2}}', "premortems.pm2.threshold"),
        ('premortems={"pm1": {"task": "nope"}}', "premortems.pm1.task"),
        ('gate={"force": {"pm3": "YES"}}', "gate.force.pm3"),
        ("colour=blue", "unknown key colour"),
    ],
)
def test_bad_configuration_stops_before_any_job(fresh, config, words):
    result = snakemake(fresh, "-n", "--cores", "1", "--config", config, check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "configuration refused before any job ran" in text
    assert words in text
    assert "Job stats" not in text
    assert not (fresh / "results" / "world").exists()


def test_lint_is_clean(fresh):
    result = snakemake(fresh, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (
            'experiments={"patching_layers": {"layers": [0, 99]}}',
            "experiments.patching_layers.layers: layer 99 is beyond model 'tiny_gpt2'",
        ),
        (
            'experiments={"patching_layers": {"model": "nope"}}',
            "experiments.patching_layers.model: model 'nope' is not defined",
        ),
        (
            'experiments={"behavior_edit": {"side_task": "nope"}}',
            "experiments.behavior_edit.side_task: task 'nope' is not defined",
        ),
    ],
)
def test_bad_experiment_setting_stops_before_any_job(fresh, config, words):
    result = snakemake(fresh, "-n", "--cores", "1", "--config", config, check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and words in text
    assert "Job stats" not in text


def test_seeds_fan_out_every_seeded_experiment(fresh):
    """One job per configured seed for every seeded experiment; the rest run once."""
    force = 'gate={"force": {"pm1": "PASS", "pm2": "PASS", "pm3": "PASS"}}'
    jobs = dry_run(fresh, "--config", force, "seeds=[1, 2, 3]")
    seeded = {
        "activation_transfer", "error_prediction_extended", "unsupervised_error", "abstention",
        "behavior_edit", "patching_vs_prompting",
    }  # fmt: skip
    for rule in seeded:
        assert jobs[rule] == 3, (rule, jobs[rule])
    for rule in ("cross_model_extended", "patching_layers", "statistics", "figures", "paper"):
        assert jobs[rule] == 1, (rule, jobs[rule])
