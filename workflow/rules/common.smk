# Configuration validation, wildcard constraints and the input functions every phase uses.

import json
import os
import re
from importlib import resources
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.io import apply_wildcards
from snakemake.logging import logger

from actspace import plan
from actspace.config import ConfigError, resolve_config
from actspace.core.io import read_json
from actspace.gate.decision import (
    VerdictsError,
    effective_verdicts,
    forced_branches,
    read_verdicts,
)

try:
    _resolved = resolve_config(config)
except ConfigError as error:
    raise WorkflowError(f"configuration refused before any job ran: {error}") from None
config.clear()
config.update(_resolved)

MODELS = config["models"]
TASKS = config["tasks"]
PM = config["premortems"]
EXTRACT = config["extract"]
R = plan.RESULTS
CONDA_ENV = "../../envs/actspace.yaml"


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    task="|".join(map(re.escape, TASKS)),


def as_json(value):
    """A configuration value as compact JSON, for params that a script parses."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# Every rule's params are plain values or functions of the wildcards only: Snakemake records those
# in .snakemake/metadata and re-runs a job when one changes. It does not record params computed
# from a job's input or output, so no params function takes them.


def path_param(pattern):
    """A params function: ``pattern`` (a path; ``{model}``-style wildcards allowed) with the
    job's wildcards filled in, e.g. an output folder built by the same function as the output.

    A function of the wildcards alone, so Snakemake records it; a function, not a plain string,
    because ``snakemake --lint`` takes a plain string that prefixes an input or output for a
    hard-coded path that a storage plugin would move (the workflow runs on a shared file system,
    locally or under SLURM).
    """
    return lambda wildcards: apply_wildcards(pattern, wildcards)


def model_input(name):
    """The trained folder of a built-in organism or a local model; nothing for a hub id."""
    spec = MODELS[name]
    if spec["source"] == "organism":
        return f"{R}/models/{name}"
    return []


def model_threads(name):
    """Threads of a job that runs model ``name``: one for a built-in organism, which is too small
    to gain from a second (so the other core runs the next job), two for any other model."""
    return 1 if MODELS[name]["source"] == "organism" else 2


def model_ref(name):
    """What --model receives: a folder (organism, local) or a Hugging Face id."""
    spec = MODELS[name]
    if spec["source"] == "organism":
        return f"{R}/models/{name}"
    if spec["source"] == "local":
        return spec["path"]
    return spec["id"]


def model_reference(name):
    """The resolved reference of a model a step loads: where from, and which revision.

    Every rule that loads a model passes this (as ``model_ref`` in ``--params``), so that every
    step loads exactly the weights the extraction used.
    """
    spec = MODELS[name]
    return {
        "name": name,
        "source": spec["source"],
        "path": model_ref(name),
        "revision": spec.get("revision"),
    }


def step_params(section, **extra):
    """The ``--params`` argument of a script: its resolved configuration section (and extras).

    Sorted, compact JSON, so that Snakemake re-runs the step exactly when a value it reads changes.
    """
    return as_json({**section, **extra})


def experiment_folder(name, seed="{seed}"):
    """The folder of one experiment from the plan's registry; ``seed`` fills a seeded one's (the
    ``{seed}`` wildcard by default, filled per job in a params string)."""
    exp = plan.experiment(name)
    return exp.folder(seed) if exp.seeded else exp.folder()


def experiment_output(name, seed="{seed}"):
    """The files of one experiment from the plan's registry, by key (``results``, ``config``,
    ``summary``, ``figure_data``, ...); ``seed`` fills the folder of a seeded experiment."""
    folder = experiment_folder(name, seed)
    return {file.split(".")[0]: f"{folder}/{file}" for file in plan.experiment(name).outputs}


def experiment_log(name, suffix):
    """A step's log or benchmark path (``suffix`` .log or .tsv); seeded steps get one per seed."""
    kind = "logs" if suffix == ".log" else "benchmarks"
    seeded = plan.experiment(name).seeded
    return f"{R}/{kind}/{name}/seed{{seed}}{suffix}" if seeded else f"{R}/{kind}/{name}{suffix}"


def store_path(model, task):
    """The folder of one activation store (``{model}``/``{task}`` wildcards work too)."""
    return f"{R}/activations/{model}/{task}"


def store_paths(pairs):
    """The ``--stores`` argument of a step reading several stores: their folders, comma-separated,
    for (model, task) pairs."""
    return ",".join(store_path(model, task) for model, task in pairs)


def store_files(model, task):
    """The files of one activation store, by name (meta.json is written last)."""
    folder = store_path(model, task)
    return {
        "pooled": f"{folder}/pooled.safetensors",
        "choice_end": f"{folder}/choice_end.safetensors",
        "scores": f"{folder}/scores.jsonl",
        "meta": f"{folder}/meta.json",
    }


def read_checkpoint_verdicts(path):
    """The checkpoint's verdicts.json, checked; one line naming the file when it is not as the
    gate wrote it (not JSON, a pre-mortem missing, an unknown verdict), and Snakemake stops.

    An input function's exception would be wrapped in a multi-line InputFunctionException with a
    traceback; SystemExit is not. The file is read here only once the checkpoint is complete: a
    bad one is found when the DAG is built, before any job (a gate that has just run wrote it
    through gate.measured_verdicts, valid).
    """
    try:
        return read_verdicts(path)
    except VerdictsError as error:
        logger.error(f"error: {error}")
        raise SystemExit(1) from None


def scheduled_branches():
    """The branches the gate schedules: the measured verdict gate.criterion names, with gate.force
    applied on top (an input-function helper).

    When every pre-mortem's verdict is forced, the checkpoint is not read at all, so even a fresh
    clone previews the whole forced path. The checkpoint records both verdicts, so switching the
    criterion changes the branches here without re-running it or the pre-mortems.
    """
    force = config["gate"]["force"]
    branches = forced_branches(force)
    if branches is None:
        verdicts = read_checkpoint_verdicts(checkpoints.gate.get().output.verdicts)
        effective = effective_verdicts(verdicts, force, config["gate"]["criterion"])
        branches = plan.branches_for({pm: info["verdict"] for pm, info in effective.items()})
    return branches


def branch_targets(wildcards):
    """The files of the branches the gate schedules (from the plan's registry)."""
    return plan.targets_for(scheduled_branches(), config)


def experiment_results(wildcards):
    """The results.json of every branch experiment the gate schedules (each seed's, if seeded)."""
    return [
        path
        for branch in scheduled_branches()
        if branch != plan.ABORT
        for name in plan.branch_experiments(branch)
        for path in plan.experiment_outputs(name, config["seeds"])
        if os.path.basename(path) == "results.json"
    ]


def progress_arg(name):
    """The ``--progress-file`` argument of a long step (read by scripts/status.py); ``name`` may
    hold ``{wildcards.x}`` fields, filled in when the shell command is formatted."""
    return f"--progress-file {R}/progress/{name}.json "


def gate_output(name):
    """A file of the gate, by name: ``verdicts`` (the checkpoint's), ``decision`` (JSON) or
    ``decision_md`` (for people)."""
    files = {
        "verdicts": f"{R}/gate/verdicts.json",
        "decision": f"{R}/gate/decision.json",
        "decision_md": f"{R}/gate/decision.md",
    }
    return files[name]


def gate_params():
    """The ``--params`` of the steps written from the decision: the resolved gate section, so that
    they re-run when gate.criterion or gate.force changes (the checkpoint does not)."""
    return step_params(config["gate"])


def analysis_output(name):
    """A file of Phase 3, by name: ``config``, ``statistics``, ``summary_table``, ``figures`` (a
    folder), ``tracking`` or ``summary``."""
    files = {
        "config": f"{R}/analysis/config.json",
        "statistics": f"{R}/analysis/statistics.json",
        "summary_table": f"{R}/analysis/summary_table.md",
        "figures": f"{R}/analysis/figures",
        "tracking": f"{R}/analysis/tracking.json",
        "summary": f"{R}/summary.md",
    }
    return files[name]


def report_caption(name):
    """A caption of Snakemake's HTML report: package data of actspace (``actspace/report/``)."""
    return str(resources.files("actspace") / "report" / name)


def paper_templates():
    """The paper's templates and its bibliography: package data of actspace, found wherever it is
    installed (make_paper.py reads them from there by default)."""
    folder = Path(str(resources.files("actspace") / "templates"))
    return sorted(str(path) for path in folder.rglob("*") if path.suffix in (".j2", ".bib"))


def paper_targets(wildcards):
    """The paper is drafted unless the plan aborted."""
    return [] if scheduled_branches() == [plan.ABORT] else [f"{R}/paper/draft.tex"]


def tracking_targets(wildcards):
    """The W&B log, only when tracking.wandb is configured."""
    return [analysis_output("tracking")] if config["tracking"]["wandb"] else []


def abort_targets(wildcards):
    """The negative-results report when the plan aborted."""
    return [plan.ABORT_REPORT] if scheduled_branches() == [plan.ABORT] else []


# --- inputs of the prepare phase -----------------------------------------------------------------


def organism_spec(wildcards):
    spec = MODELS[wildcards.model]
    if spec["source"] != "organism":
        raise WorkflowError(f"model {wildcards.model!r} is not a built-in organism")
    return spec


def builtin_task_file(builtin):
    """The world's file of a built-in task (make_world writes it)."""
    return f"{R}/world/tasks/{builtin}.jsonl"


def task_inputs(wildcards):
    """A built-in task's world file, or a local task's data files; nothing for the hub."""
    spec = TASKS[wildcards.task]
    if spec["type"] == "builtin":
        return [builtin_task_file(spec["builtin"])]
    if spec["type"] == "jsonl" or spec["source"] == "local":
        return [spec[key] for key in ("path", "dev_path") if key in spec]
    return []


def prepared_task_spec(task):
    """The task's spec as prepare_task reads it: a built-in task is the world's JSONL file.

    Built from the configuration alone (not from the rule's input), so that Snakemake tracks it
    as a parameter: changing a task's setting re-runs prepare_task for that task.
    """
    spec = dict(TASKS[task])
    if spec["type"] == "builtin":
        spec.update(type="jsonl", source="local", path=builtin_task_file(spec.pop("builtin")))
    return spec


# --- pre-mortems ----------------------------------------------------------------------------------

def pm_outputs(pm):
    """The files of one pre-mortem (its folder from the plan's registry)."""
    folder = plan.premortem(pm).folder
    return {
        "results": f"{folder}/results.json",
        "config": f"{folder}/config.json",
        "summary": f"{folder}/summary.md",
    }


def pm3_pairs():
    return PM["pm3"]["pairs"] or f"{R}/world/prompt_pairs.jsonl"

