"""Snakemake re-runs exactly the jobs that a changed setting reaches, and no other.

Snakemake records each job's params in .snakemake/metadata and re-runs the job when they change,
but it does not record params computed from the job's input or output; so no rule's params may
take them (the fast test reads every rule of the workflow).

The slow test builds a small study: a local model (a tiny random GPT-2 in a folder) and a hub
model (a tiny random Llama in an offline Hugging Face cache, so that its revision means
something), a HellaSwag and an MMLU task read from local files (tests/fixtures), and runs it up to
the activation stores. Then it changes one setting at a time and reads ``snakemake --summary``
(one row per output file: the rule, why it is outdated, whether it would be updated): a task's
setting (limit, subsample, path; num_fewshot, subjects, dev_path) re-makes that task's items and
its stores for every model, nothing of the other task; a model's setting (path, revision)
re-makes that model's stores for every task, nothing of the other model and no task file.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.workflow import copy_workflow, snakemake

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: The commit of the tiny hub model in the test's Hugging Face cache (branch main points to it).
SHA = "0123456789abcdef0123456789abcdef01234567"
HUB_ID = "tests/tiny-llama"
MODELS = ("gpt2_local", "llama_hub")
TASKS = ("hs", "mmlu")
#: Arguments a params function may take that make Snakemake leave it out of its records.
NOT_RECORDED = ("input", "output", "threads", "resources")

#: Loads the workflow (in its own process, where it may change directory) and prints, for every
#: rule, its params functions and the arguments each takes.
_PARAMS_PROBE = """
import inspect, json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(),
        config_settings=ConfigSettings(),
        snakefile=Path("Snakefile"),
        workdir=Path("."),
    )._workflow
    out = {
        rule.name: {
            name: sorted(inspect.signature(value).parameters) if callable(value) else None
            for name, value in rule.params.items()
        }
        for rule in workflow.rules
    }
print("PARAMS " + json.dumps(out))
"""


def test_no_rules_params_take_input_or_output(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    result = subprocess.run(
        [sys.executable, "-c", _PARAMS_PROBE],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("PARAMS "))
    rules = json.loads(line.removeprefix("PARAMS "))
    # the probe saw the workflow: its rules and their params, functions among them
    assert {"prepare_task", "extract", "pm1_cross_model", "figures", "paper"} <= set(rules)
    assert rules["extract"]["step"] == ["wc"] and rules["extract"]["outdir"] == ["wildcards"]
    offenders = [
        f"{rule}.{name}({', '.join(args)})"
        for rule, params in rules.items()
        for name, args in params.items()
        if args is not None and set(args) & set(NOT_RECORDED)
    ]
    assert offenders == []


# --- the study ------------------------------------------------------------------------------------


@dataclass
class Study:
    workdir: Path
    config: dict[str, Any]
    moved_model: str  # a copy of the local model's folder elsewhere


STORE_FILES = ("pooled.safetensors", "choice_end.safetensors", "scores.jsonl", "meta.json")


def _store(model: str, task: str) -> list[str]:
    return [f"results/activations/{model}/{task}/{name}" for name in STORE_FILES]


TARGETS = [f"results/activations/{model}/{task}/meta.json" for model in MODELS for task in TASKS]


def _write_config(study: Study, config: dict[str, Any], name: str) -> str:
    path = study.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path.name


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_model_dir) -> Iterator[Study]:
    """The small study, run up to its activation stores, in a scratch copy of the workflow."""
    root = tmp_path_factory.mktemp("rerun")
    workdir = copy_workflow(root / "wf")
    local = shutil.copytree(tiny_model_dir("gpt2"), root / "models" / "gpt2")
    moved = shutil.copytree(local, root / "models" / "gpt2_moved")
    repo = root / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)
    shutil.copytree(tiny_model_dir("llama"), repo / "snapshots" / SHA)
    data = workdir / "data"
    data.mkdir()
    for name in ("tasks_hellaswag.jsonl", "tasks_mmlu_test.jsonl", "tasks_mmlu_dev.jsonl"):
        shutil.copy(FIXTURES / name, data / name)
        shutil.copy(FIXTURES / name, data / name.replace(".jsonl", "_copy.jsonl"))  # same items
    config = {
        "models": {
            "gpt2_local": {"source": "local", "path": str(local)},
            "llama_hub": {"source": "hub", "id": HUB_ID},
        },
        "tasks": {
            "hs": {
                "type": "hellaswag",
                "source": "local",
                "path": "data/tasks_hellaswag.jsonl",
                "limit": 2,
            },
            "mmlu": {
                "type": "mmlu",
                "source": "local",
                "path": "data/tasks_mmlu_test.jsonl",
                "dev_path": "data/tasks_mmlu_dev.jsonl",
                "num_fewshot": 1,
            },
        },
        "extract": {"device": "cpu", "batch_size": 4},
    }
    result = Study(workdir, config, str(moved))
    configfile = _write_config(result, config, "study")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_CACHE", str(root / "hub"))
        env.setenv("HF_HUB_OFFLINE", "1")
        env.setenv("OMP_NUM_THREADS", "1")
        snakemake(workdir, *TARGETS, "--cores", "2", "--configfile", configfile)
        yield result


def _summary(study: Study, config: dict[str, Any], name: str) -> dict[str, tuple[str, str]]:
    """Each output file of the targets' jobs -> (status, plan) from ``snakemake --summary``."""
    configfile = _write_config(study, config, name)
    result = snakemake(study.workdir, *TARGETS, "--summary", "--configfile", configfile)
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("output_file\t"))
    header = lines[start].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[start + 1 :] if line]
    return {row["output_file"]: (row["status"], row["plan"]) for row in rows}


def _changed(config: dict[str, Any], section: str, name: str, key: str, value: Any) -> dict:
    out = copy.deepcopy(config)
    out[section][name][key] = value
    return out


ALL_OUTPUTS = {f"results/tasks/{task}.jsonl" for task in TASKS} | {
    path for model in MODELS for task in TASKS for path in _store(model, task)
}

#: (section, name, key, new value or a function of the study giving it)
CHANGES: list[tuple[str, str, str, Any]] = [
    ("tasks", "hs", "limit", 1),
    ("tasks", "hs", "subsample", True),
    ("tasks", "hs", "path", "data/tasks_hellaswag_copy.jsonl"),
    ("tasks", "mmlu", "num_fewshot", 0),
    ("tasks", "mmlu", "subjects", ["elementary_mathematics"]),
    ("tasks", "mmlu", "dev_path", "data/tasks_mmlu_dev_copy.jsonl"),
    ("models", "gpt2_local", "path", lambda study: study.moved_model),
    ("models", "llama_hub", "revision", SHA),
]


def _expected(section: str, name: str) -> tuple[set[str], set[str]]:
    """The outputs to re-make, and those whose own job's record changed (the rest are re-made
    because their input is)."""
    if section == "tasks":
        task_file = f"results/tasks/{name}.jsonl"
        stores = {path for model in MODELS for path in _store(model, name)}
        return stores | {task_file}, {task_file}
    stores = {path for task in TASKS for path in _store(name, task)}
    return stores, stores


@pytest.mark.slow
def test_an_unchanged_study_reruns_nothing(study):
    tasks = study.workdir / "results" / "tasks"
    # hs: the first 2 of 3 items (limit 2); mmlu: all 3 items
    assert [len(tasks.joinpath(f"{t}.jsonl").read_text().splitlines()) for t in TASKS] == [2, 3]
    summary = _summary(study, study.config, "unchanged")
    assert set(summary) == ALL_OUTPUTS
    assert {path for path, (_, plan) in summary.items() if plan != "no update"} == set()
    assert {status for status, _ in summary.values()} == {"ok"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("section", "name", "key", "value"),
    CHANGES,
    ids=[f"{section}.{name}.{key}" for section, name, key, _ in CHANGES],
)
def test_a_changed_setting_reruns_exactly_its_jobs(study, section, name, key, value):
    if callable(value):
        value = value(study)
    assert study.config[section][name].get(key) != value  # the case changes something
    changed = _changed(study.config, section, name, key, value)
    summary = _summary(study, changed, f"{section}_{name}_{key}")
    assert set(summary) == ALL_OUTPUTS
    rerun, recorded = _expected(section, name)
    pending = {path for path, (_, plan) in summary.items() if plan == "update pending"}
    assert pending == rerun
    assert {path for path, (_, plan) in summary.items() if plan == "no update"} == (
        ALL_OUTPUTS - rerun
    )
    # the changed jobs are outdated by their own record (params, or the set of input files)
    assert all(summary[path][0] != "ok" for path in recorded)
    assert all(summary[path][0] == "ok" for path in ALL_OUTPUTS - recorded)
