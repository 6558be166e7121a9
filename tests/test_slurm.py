"""The workflow through SLURM: the cluster profile previews and evaluates its resources (fast), and
a reduced study run on a real one-machine SLURM cluster gives the results of a local run (slow).

The slow test starts its own cluster from Debian's packages (tests/slurm_cluster.py; as root,
``apt-get install slurm-wlm munge``). Where it cannot, it is skipped with what to install; in CI
(``CI`` set) it fails instead, since CI installs them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
import yaml
from helpers.slurm_cluster import ClusterUnavailable, SlurmCluster, start_cluster
from helpers.workflow import copy_workflow, force_args, scheduled_jobs, snakemake

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "workflow/profiles/slurm"
PROFILE_SETTINGS = yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text(encoding="utf-8"))
HAS_PLUGIN = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
NO_PLUGIN = 'snakemake-executor-plugin-slurm is not installed (pip install -e ".[slurm]")'


def unavailable(reason: str) -> NoReturn:
    """Skip for want of ``reason``; in CI, which installs what these tests need, fail."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI installs it (.ci/run)")
    pytest.skip(reason)


#: The rules that run a model, and so ask the cluster for a GPU.
MODEL_RULES = (
    "train_organism",
    "extract",
    "pm3_patching",
    "activation_transfer",
    "patching_layers",
    "behavior_edit",
    "patching_vs_prompting",
)
#: The per-seed experiments, submitted as array jobs.
SEEDED_RULES = (
    "activation_transfer",
    "error_prediction_extended",
    "unsupervised_error",
    "abstention",
    "behavior_edit",
    "patching_vs_prompting",
)

#: The default study made small enough to run twice in a few minutes on two cores: fewer entities,
#: organisms trained for 300 steps (enough for usable prompt pairs), fewer items, pairs and
#: resamples, two seeds (so that the seeded experiments fan out as arrays), every verdict
#: forced to PASS (so that every branch runs).
SEEDS = [1, 2]
REDUCED = {
    "seeds": SEEDS,
    "world": {
        "n_entities": 24,
        "corpus_lines": 4000,
        "n_prompt_pairs": 48,
        "n_attribute_texts": 40,
        "n_neutral_prompts": 12,
    },
    "models": {
        "tiny_gpt2": {"source": "organism", "family": "gpt2", "train_seed": 1, "train_steps": 300},
        "tiny_neox": {
            "source": "organism",
            "family": "gpt_neox",
            "train_seed": 2,
            "train_steps": 300,
        },
    },
    "premortems": {
        "pm1": {"n_samples": 200, "n_bootstrap": 100, "n_permutations": 1},
        # arithmetic has 100 items: enough right and wrong answers for PM2's probe.
        "pm2": {"task": "arithmetic", "n_samples": 200, "n_bootstrap": 100, "cv_folds": 3},
        "pm3": {"n_pairs": 40, "n_bootstrap": 100},
    },
    "experiments": {
        "cross_model_extended": {
            "n_samples": 200,
            "n_permutations": 1,
            "n_bootstrap": 100,
            "full_grid": False,
        },
        "activation_transfer": {"n_samples": 100, "n_bootstrap": 100, "coefficients": [0.5, 1.0]},
        "error_prediction_extended": {
            "n_samples": 200,
            "cv_folds": 3,
            "Cs": 3,
            "n_bootstrap": 100,
        },
        "unsupervised_error": {
            "n_samples": 200,
            "n_restarts": 2,
            "n_epochs": 100,
            "n_random": 5,
            "cv_folds": 3,
            "Cs": 3,
            "n_bootstrap": 100,
        },
        "abstention": {
            "n_samples": 200,
            "cv_folds": 3,
            "Cs": 3,
            "n_bootstrap": 100,
            "n_random": 10,
        },
        "patching_layers": {"n_bootstrap": 100},
        "behavior_edit": {
            "coefficients": [4.0],
            "max_new_tokens": 6,
            "samples_per_prompt": 1,
            "n_neutral_texts": 6,
            "side_task_items": 10,
            "n_bootstrap": 100,
        },
        "patching_vs_prompting": {"timing_repeats": 1},
    },
    "analysis": {"statistics": {"n_bootstrap": 200, "n_permutations": 99}, "figures": {"dpi": 60}},
    "gate": {"force": {"pm1": "PASS", "pm2": "PASS", "pm3": "PASS"}},
}
#: Both runs: the reduced study, one thread per job (so two jobs share the two-CPU node, and both
#: runs compute with the same thread count).
COMMON = ("--configfile", "reduced.yaml", "--max-threads", "1")

#: Keys whose values depend on the wall clock, the machine or the checkout, not on the
#: computation: run dates and durations, timing and cost in seconds, provenance.
VOLATILE = re.compile(
    r"^(date|timestamp|provenance|timings|updated|peak_memory_mb)$|seconds|duration|(^|_)s$"
)
#: Resources the one-machine cluster has no use for: it has no GPU, one partition, no accounts.
NOT_ON_TEST_NODE = {"gpu", "gpu_model", "gres", "slurm_partition", "slurm_account"}


def without_volatile(value: object) -> object:
    """``value`` with every key matching :data:`VOLATILE` removed, at any depth."""
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if not VOLATILE.search(k)}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def compared_results(workdir: Path) -> dict[str, object]:
    """The decision, every pre-mortem's and experiment's results.json and the statistics, by
    path, without their volatile keys."""
    results = workdir / "results"
    files = [
        results / "gate" / "decision.json",
        *sorted((results / "pre_mortems").glob("*/results.json")),
        *sorted((results / "experiments").rglob("results.json")),
        results / "analysis" / "statistics.json",
    ]
    return {
        str(path.relative_to(results)): without_volatile(json.loads(path.read_text("utf-8")))
        for path in files
    }


def differences(a: object, b: object, where: str = "") -> list[str]:
    """Where two JSON values differ, one line each (``path: a != b``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                out.append(f"{where}/{key}: only in {'second' if key in b else 'first'}")
            else:
                out.extend(differences(a[key], b[key], f"{where}/{key}"))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            line
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for line in differences(x, y, f"{where}[{i}]")
        ]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def test_the_volatile_keys_are_dropped_and_results_kept():
    record = {
        "value": 0.5,
        "n_samples": 20,
        "duration_s": 1.2,
        "date": "2026-01-01",
        "provenance": {"git_commit": "abc"},
        "cost": {"forward_passes": 12, "seconds": 0.3, "seconds_per_round": [0.3]},
        "grid": [{"shift": 0.1, "generation_cost": {"seconds_per_generated_token": 0.01}}],
    }
    assert without_volatile(record) == {
        "value": 0.5,
        "n_samples": 20,
        "cost": {"forward_passes": 12},
        "grid": [{"shift": 0.1, "generation_cost": {}}],
    }
    assert differences({"a": [1, 2]}, {"a": [1, 3]}) == ["/a[1]: 2 != 3"]


def node_arguments(cluster: SlurmCluster) -> list[str]:
    """The profile's resources as this cluster can grant them: what it cannot have is dropped
    (GPU, partition, account), memory is capped at the node's share per CPU, everything else
    (runtime, the retry scaling) stays as the profile has it. On the command line these replace
    the profile's own ``default-resources`` and ``set-resources``."""
    cap = cluster.memory_mb // cluster.cpus

    def adapt(key: str, value: object) -> str:
        return f"min({value}, {cap})" if key == "mem_mb" else str(value)

    defaults = [
        f"{key}={adapt(key, value)}"
        for key, value in PROFILE_SETTINGS.get("default-resources", {}).items()
        if key not in NOT_ON_TEST_NODE
    ]
    per_rule = [
        f"{rule}:{key}={adapt(key, value)}"
        for rule, resources in PROFILE_SETTINGS.get("set-resources", {}).items()
        for key, value in resources.items()
        if key not in NOT_ON_TEST_NODE
    ]
    return [
        *(["--default-resources", *defaults] if defaults else []),
        *(["--set-resources", *per_rule] if per_rule else []),
    ]


# --- the profile, without a cluster (fast) --------------------------------------------------------


def _resources_by_rule(output: str) -> dict[str, str]:
    """The ``resources:`` line of each rule's first job in a dry run's output."""
    found: dict[str, str] = {}
    rule = None
    for line in output.splitlines():
        match = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            found.setdefault(rule, line.strip())
    return found


def test_the_slurm_profile_previews_every_branch_with_its_resources(tmp_path):
    """``snakemake --profile workflow/profiles/slurm -n`` on a fresh copy: every resource
    expression evaluates, model rules ask for a GPU and the seeded rules are array rules."""
    if not HAS_PLUGIN:
        unavailable(NO_PLUGIN)
    workdir = copy_workflow(tmp_path / "study")
    done = snakemake(workdir, "--profile", PROFILE, "-n", *force_args("PASS", "PASS", "PASS"))
    output = done.stdout + done.stderr
    jobs = scheduled_jobs(output)
    resources = _resources_by_rule(output)
    assert {*MODEL_RULES, *SEEDED_RULES} <= set(jobs)
    for rule in MODEL_RULES:
        assert "gpu=1" in resources[rule], (rule, resources[rule])
    for rule, wanted in PROFILE_SETTINGS["set-resources"].items():
        line = resources[rule]
        assert "attempt" not in line and all(f" {key}=" in line for key in wanted), (rule, line)
    assert "gpu=" not in resources["pm2_error_prediction"]
    arrays = {r.strip() for r in PROFILE_SETTINGS["slurm-array-jobs"].split(",")}
    assert arrays == set(SEEDED_RULES)


# --- a real one-machine cluster (slow) ----------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    """A one-machine SLURM cluster for this module; skipped (failed in CI) where it cannot start."""
    if not HAS_PLUGIN:
        unavailable(NO_PLUGIN)
    try:
        running = start_cluster()
    except ClusterUnavailable as error:
        unavailable(f"no SLURM test cluster: {error}")
    yield running
    running.stop()


@dataclass
class Runs:
    """The two runs of the reduced study: their folders, and what the SLURM one left behind."""

    local: Path
    slurm: Path
    slurm_output: str
    local_jobs: dict[str, int]
    cluster_jobs: list[dict[str, str]]


def _study(folder: Path) -> Path:
    workdir = copy_workflow(folder)
    (workdir / "reduced.yaml").write_text(yaml.safe_dump(REDUCED, sort_keys=False), "utf-8")
    return workdir


#: The SLURM run's own flags: job states from squeue (with no accounting database ``sacct`` does
#: not answer; MinJobAge keeps finished jobs in squeue), no account, and a first status check
#: after 3 s instead of 40 (the plugin then waits 10 s longer at each check where no job
#: finished: checks 3, 16 and 39 s after a submission).
SLURM_FLAGS = (
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks",
    "3",
    "--slurm-keep-successful-logs",
)


@pytest.fixture(scope="module")
def runs(cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The reduced study run twice in fresh copies: through the SLURM profile on the cluster,
    and meanwhile locally on two cores (the SLURM run mostly waits between status checks)."""
    local = _study(tmp_path_factory.mktemp("local") / "study")
    slurm = _study(tmp_path_factory.mktemp("slurm") / "study")
    command = ["snakemake", "--profile", PROFILE, *COMMON, *SLURM_FLAGS, *node_arguments(cluster)]
    out, err = slurm.parent / "snakemake.out", slurm.parent / "snakemake.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        submitted = subprocess.Popen(command, cwd=slurm, stdout=stdout, stderr=stderr, text=True)
        try:
            local_run = snakemake(local, "--cores", "2", *COMMON)
            returncode = submitted.wait(timeout=1500)
        finally:
            if submitted.poll() is None:
                submitted.terminate()  # the plugin cancels its jobs
                submitted.wait(timeout=60)
    slurm_output = out.read_text("utf-8") + err.read_text("utf-8")
    if returncode != 0:
        pytest.fail(
            f"the SLURM run failed ({returncode}):\n{slurm_output[-8000:]}\n{cluster.log_tails()}"
        )
    return Runs(
        local=local,
        slurm=slurm,
        slurm_output=slurm_output,
        local_jobs=dict(scheduled_jobs(local_run.stdout + local_run.stderr)),
        cluster_jobs=cluster.finished_jobs(),
    )


def _rules_by_jobid(output: str) -> dict[str, str]:
    """Snakemake's job id -> rule, from the job descriptions it prints (``rule x:``, ``jobid:``)."""
    found = {}
    rule = None
    for line in output.splitlines():
        match = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if match:
            rule = match.group(1)
        elif rule and (jobid := re.match(r"^\s+jobid: (\d+)$", line)):
            found[jobid.group(1)] = rule
    return found


@pytest.mark.slow
def test_every_job_went_through_slurm_and_seeds_as_arrays(runs: Runs):
    """Every job of the study but the local target ``all`` was submitted with sbatch and run to
    completion by the cluster, in the study's folder; seeded experiments whose seeds were ready
    together went in as one array job of two tasks."""
    output = runs.slurm_output
    rule_of = _rules_by_jobid(output)
    single = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output)
    arrays = [
        (ids.split(","), slurm_id)
        for ids, slurm_id in re.findall(
            r"Submitted array job with Snakemake IDs ([\d,]+) and SLURM job ID (\d+)", output
        )
    ]
    rules = {rule_of[job] for job, _ in single} | {rule_of[j] for ids, _ in arrays for j in ids}
    assert rules == set(runs.local_jobs) - {"all"}, (rules, runs.local_jobs)
    assert arrays, "no array job was submitted"
    assert all(len(ids) == len(SEEDS) for ids, _ in arrays)
    assert {rule_of[j] for ids, _ in arrays for j in ids} <= set(SEEDED_RULES)
    finished = runs.cluster_jobs
    assert {job["JobState"] for job in finished} == {"COMPLETED"}, finished
    assert {job["WorkDir"] for job in finished} == {str(runs.slurm)}
    assert len(finished) == len(single) + sum(len(ids) for ids, _ in arrays)
    for ids, slurm_id in arrays:
        tasks = {job["ArrayTaskId"] for job in finished if job.get("ArrayJobId") == slurm_id}
        assert tasks == {str(i) for i in range(1, len(ids) + 1)}, (slurm_id, finished)


@pytest.mark.slow
def test_the_slurm_run_gives_the_results_of_the_local_run(runs: Runs):
    local, slurm = compared_results(runs.local), compared_results(runs.slurm)
    assert set(slurm) == set(local)
    assert len([name for name in local if name.startswith("experiments/")]) == 14
    found = {
        name: differences(local[name], slurm[name]) for name in local if local[name] != slurm[name]
    }
    assert not found, "\n".join(f"{name}: {lines[:10]}" for name, lines in found.items())


@pytest.mark.slow
def test_the_slurm_run_has_nothing_left_to_do(runs: Runs):
    done = snakemake(runs.slurm, "-n", "--cores", "1", *COMMON)
    assert scheduled_jobs(done.stdout + done.stderr) == {}
