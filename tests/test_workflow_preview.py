"""Previewing the decision path with ``snakemake -n`` on a fresh copy, and refusing bad config."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from pathlib import Path

import pytest
from helpers.premortem_records import verdicts_file
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
        ('gate={"criterion": "strict"}', "gate.criterion"),
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


# --- gate.criterion: the checkpoint holds both verdicts, the criterion picks one ------------------

#: What runs after a finished checkpoint: the decision and Phase 3 (Phase 4 unless it aborts).
AFTER_GATE = {"decision", "statistics", "figures", "study_summary", "all"}


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy whose every step up to the gate looks done: each output the dry run of
    results/gate/verdicts.json lists exists (a folder for a model), newer than the workflow's
    files and in the order the jobs run, so that Snakemake reads the checkpoint when it builds
    the DAG. Each test writes the verdicts.json it needs (keeping its time)."""
    root = copy_workflow(tmp_path_factory.mktemp("checkpointed"))
    old = time.time() - 5000
    for path in root.rglob("*"):  # the copy keeps the working tree's times; make them older
        os.utime(path, (old, old))
    listed = snakemake(root, "-n", "--cores", "1", "results/gate/verdicts.json").stdout
    outputs = [
        path.strip()
        for line in listed.splitlines()
        if (match := re.match(r"\s+output: (.*)$", line))
        for path in match.group(1).split(",")
    ]
    assert outputs[-1] == "results/gate/verdicts.json"
    for k, relative in enumerate(outputs):
        path = root / relative
        if relative.startswith("results/models/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}", encoding="utf-8")
        os.utime(path, (old + 1000 + k, old + 1000 + k))
    return root


def _write_verdicts(root: Path, plan: dict[str, str], controlled: dict[str, str]) -> None:
    """The checkpoint's verdicts.json in its shape (gate.measured_verdicts), time kept."""
    path = root / "results" / "gate" / "verdicts.json"
    stat = path.stat()
    path.write_text(json.dumps(verdicts_file(plan, controlled)), encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _criterion_args(criterion: str, force: str = "") -> list[str]:
    return ["--config", f'gate={{"criterion": "{criterion}"{force}}}']


def _expected(branches: list[str]) -> set[str]:
    rules = AFTER_GATE.union(*(BRANCH_RULES[b] for b in branches))
    return rules if branches == ["X"] else rules | PAPER_RULES


def test_both_criteria_schedule_the_same_jobs_when_the_verdicts_agree(checkpointed):
    verdicts = {"pm1": "PASS", "pm2": "FAIL", "pm3": "PASS"}
    _write_verdicts(checkpointed, verdicts, verdicts)
    by_plan = dry_run(checkpointed, *_criterion_args("plan"))
    controlled = dry_run(checkpointed, *_criterion_args("controlled"))
    assert by_plan == controlled
    assert set(controlled) == _expected(["2A", "2C"])
    assert "gate" not in controlled  # neither the checkpoint nor a pre-mortem runs again


def test_the_criterion_changes_the_branches_when_the_verdicts_disagree(checkpointed):
    """PM1 clears its threshold but not its control: 2A runs under the plan criterion only, and
    switching criterion re-runs the decision, never the checkpoint or the pre-mortems."""
    _write_verdicts(
        checkpointed,
        {"pm1": "PASS", "pm2": "FAIL", "pm3": "PASS"},
        {"pm1": "FAIL", "pm2": "FAIL", "pm3": "PASS"},
    )
    by_plan = dry_run(checkpointed, *_criterion_args("plan"))
    controlled = dry_run(checkpointed, *_criterion_args("controlled"))
    assert set(by_plan) == _expected(["2A", "2C"])
    assert set(controlled) == _expected(["2C"])
    assert set(by_plan) - set(controlled) == BRANCH_RULES["2A"]
    for jobs in (by_plan, controlled):
        assert not {"gate", "pm1_cross_model", "pm2_error_prediction", "pm3_patching"} & set(jobs)
    # gate.force still overrides the criterion's verdict
    forced = dry_run(checkpointed, *_criterion_args("controlled", ', "force": {"pm1": "PASS"}'))
    assert forced == by_plan
