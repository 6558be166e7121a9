"""The plan, in one place: pre-mortems, branches and experiments, and how they connect.

Everything else derives the plan from this registry: the gate's decision table and the schema's
``gate.force`` keys, the workflow's rule targets and output files, the statistics, the summary,
the abort report, the figures and the paper templates. Adding an experiment to a branch takes one
:class:`Experiment` entry here (and its module, schema block, rule and template block; see the
README's "Extending the plan").

This module imports nothing from the package, so every layer may read it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RESULTS = "results"
#: Verdicts, strongest first; INCONCLUSIVE counts as FAIL for planning.
VERDICTS = ("PASS", "INCONCLUSIVE", "FAIL")
#: The files every experiment and pre-mortem folder holds.
EXPERIMENT_FILES = ("results.json", "config.json", "summary.md")


@dataclass(frozen=True)
class PreMortem:
    """A cheap Phase-1 experiment whose verdict opens one branch."""

    name: str  #: key in the configuration (``premortems.<name>``) and in every record
    subject: str  #: what it measures, in a few words ("cross-model similarity")
    rule: str  #: the Snakemake rule, its script and its folder under results/pre_mortems
    metric: str  #: the metric its verdict reads (its label and unit: :data:`METRICS`)
    axis_label: str  #: the metric on a figure's axis, with its unit
    scale: float  #: the factor that puts a value in ``axis_label``'s unit (1 or 100 for percent)
    branch: str  #: the branch it opens when it passes
    control: str  #: what a trivial explanation would already give on the same items
    #: what its FAIL rules out, for the negative-results report (completes "...threshold: ")
    fail_meaning: str

    @property
    def metric_label(self) -> str:
        """The metric for a person, with its unit (from :data:`METRICS`)."""
        return metric_text(self.metric)

    @property
    def label(self) -> str:
        """How tables name it: ``PM1``."""
        return self.name.upper()

    @property
    def title(self) -> str:
        """How reports name it: ``PM1 cross-model similarity``."""
        return f"{self.label} {self.subject}"

    @property
    def folder(self) -> str:
        return f"{RESULTS}/pre_mortems/{self.rule}"

    @property
    def threshold_key(self) -> str:
        return f"premortems.{self.name}.threshold"


@dataclass(frozen=True)
class Experiment:
    """One Phase-2 experiment: a rule, a script, a module, a schema block and a folder."""

    name: str  #: rule, script, folder and ``experiments.<name>`` schema key
    branch: str
    title: str
    seeded: bool  #: one run per configured seed, in ``seed{N}/`` sub-folders
    extra_outputs: tuple[str, ...] = ()  #: files beyond EXPERIMENT_FILES
    figure: str | None = None  #: the Phase-3 figure drawn from it

    @property
    def outputs(self) -> tuple[str, ...]:
        return (*EXPERIMENT_FILES, *self.extra_outputs)

    def folder(self, seed: int | str | None = None) -> str:
        """Its output folder; ``seed`` may be a wildcard pattern such as ``{seed}``."""
        base = f"{RESULTS}/experiments/{self.name}"
        if not self.seeded:
            return base
        if seed is None:
            raise ValueError(f"experiment {self.name} is seeded: its folder needs a seed")
        return f"{base}/seed{seed}"


@dataclass(frozen=True)
class Branch:
    """A line of work the gate can open (or the abort branch)."""

    name: str
    title: str  #: short title for tables and summaries
    topic: str  #: what the line of work is about, for prose
    paper_title: str = ""
    venues: tuple[str, ...] = ()  #: the target venue first, then the alternative
    experiments: tuple[str, ...] = field(default_factory=tuple)


PREMORTEMS: tuple[PreMortem, ...] = (
    PreMortem(
        name="pm1",
        subject="cross-model similarity",
        rule="pm1_cross_model",
        metric="heldout_projection_correlation",
        axis_label="Pearson r (held-out)",
        scale=1.0,
        branch="2A",
        control="surface features of the input (token embeddings) mapped across models",
        fail_meaning="a linear map does not carry one model's activations onto another's on "
        "held-out items, so activation transfer between these models has nothing to build on",
    ),
    PreMortem(
        name="pm2",
        subject="error prediction",
        rule="pm2_error_prediction",
        metric="heldout_balanced_accuracy",
        axis_label="balanced accuracy (%)",
        scale=100.0,
        branch="2B",
        control="a probe on the output confidence alone",
        fail_meaning="a linear probe on the model's own activations does not tell its right "
        "answers from its wrong ones better than the threshold, so error prediction and "
        "abstention would not pay",
    ),
    PreMortem(
        name="pm3",
        subject="activation patching",
        rule="pm3_patching",
        metric="change_rate",
        axis_label="answers changed (% of pairs)",
        scale=100.0,
        branch="2C",
        control="the cells next to the input and the read-out, kept as known-answer checks",
        fail_meaning="patching one layer's clean activation into the corrupted run rarely "
        "restores the clean answer, so single-layer interventions are too weak a handle for "
        "behaviour editing",
    ),
)

EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "cross_model_extended",
        "2A",
        "layer-by-layer cross-model alignment",
        seeded=False,
        extra_outputs=("figure_data.json",),
        figure="cross_model_heatmap",
    ),
    Experiment(
        "activation_transfer",
        "2A",
        "activation transfer into the target model",
        seeded=True,
        figure="transfer_gain",
    ),
    Experiment(
        "error_prediction_extended",
        "2B",
        "the correctness probe at every layer",
        seeded=True,
        extra_outputs=("figure_data.json",),
        figure="error_prediction_roc",
    ),
    Experiment(
        "unsupervised_error",
        "2B",
        "unsupervised error discovery (CCS)",
        seeded=True,
        extra_outputs=("figure_data.json",),
    ),
    Experiment(
        "abstention",
        "2B",
        "abstention by the correctness probe",
        seeded=True,
        extra_outputs=("figure_data.json",),
        figure="risk_coverage",
    ),
    Experiment(
        "patching_layers",
        "2C",
        "activation patching layer by layer",
        seeded=False,
        extra_outputs=("figure_data.json", "per_pair.jsonl"),
        figure="patching_effect_by_layer",
    ),
    Experiment(
        "behavior_edit",
        "2C",
        "behaviour editing by steering vectors",
        seeded=True,
        extra_outputs=("vectors.safetensors", "generations.jsonl"),
        figure="steering_effect",
    ),
    Experiment(
        "patching_vs_prompting",
        "2C",
        "steering against prompting",
        seeded=True,
        extra_outputs=("generations.jsonl",),
    ),
)

ABORT = "X"
BRANCHES: tuple[Branch, ...] = (
    Branch(
        name="2A",
        title="cross-model transfer",
        topic="cross-model similarity and activation transfer",
        paper_title="Do Small Language Models Share an Activation Space? "
        "Cross-Model Similarity and Activation Transfer under a Gated Protocol",
        venues=("NeurIPS", "ICLR"),
    ),
    Branch(
        name="2B",
        title="error prediction",
        topic="predicting a model's errors from its activations",
        paper_title="Reading a Language Model's Errors from Its Activations: "
        "Supervised and Unsupervised Probes, and Abstention",
        venues=("ACL", "EMNLP"),
    ),
    Branch(
        name="2C",
        title="activation patching and behaviour editing",
        topic="activation patching and behavior editing",
        paper_title="Where One Layer Carries the Answer: "
        "Activation Patching, Steering and Prompting under a Gated Protocol",
        venues=("ICLR", "ICML"),
    ),
    Branch(name=ABORT, title="abort: negative-results report", topic="the negative result"),
)
#: The abort branch's one output.
ABORT_REPORT = f"{RESULTS}/negative_results.md"


@dataclass(frozen=True)
class Metric:
    """A headline metric as a reader meets it: what it measures, and in which unit.

    Results files name metrics by identifier (``transfer_gain_points``); every text a person reads
    (the paper, its tables) names them through this registry, so that a label is written once.
    """

    name: str  #: the identifier results.json uses
    label: str  #: what it measures, in words, without the unit
    unit: str  #: the unit a value is shown in: "%", "Pearson r", "percentage points", ...
    scale: float = 1.0  #: the factor that puts a stored value in ``unit`` (100: proportion in %)

    @property
    def percent(self) -> bool:
        """Whether a value is shown as a percentage (its number carries the unit)."""
        return self.unit == "%"

    @property
    def text(self) -> str:
        """The label with its unit, for prose and tables: ``accuracy gain (percentage points)``;
        a percentage needs no unit after the label, its numbers carry ``%``."""
        return self.label if self.percent or not self.unit else f"{self.label} ({self.unit})"


METRICS: tuple[Metric, ...] = (
    # the pre-mortems'
    Metric(
        "heldout_projection_correlation",
        "held-out correlation after a linear map",
        "Pearson r",
    ),
    Metric(
        "heldout_balanced_accuracy",
        "held-out balanced accuracy of the correctness probe",
        "%",
        100.0,
    ),
    Metric("change_rate", "share of corrupted answers flipped to the clean answer", "%", 100.0),
    # the branch experiments' headlines
    Metric(
        "heldout_projection_correlation_at_layer_depth",
        "held-out correlation after a linear map at the configured depth",
        "Pearson r",
    ),
    Metric("transfer_gain_points", "accuracy gain from activation transfer", "percentage points"),
    Metric(
        "heldout_balanced_accuracy_at_selected_layer",
        "held-out balanced accuracy of the correctness probe at its selected layer",
        "%",
        100.0,
    ),
    Metric(
        "ccs_over_supervised_balanced_accuracy",
        "balanced accuracy of CCS relative to the supervised probe",
        "ratio",
    ),
    Metric(
        "effective_accuracy_gain_at_threshold",
        "effective-accuracy gain from abstention",
        "percentage points",
        100.0,
    ),
    Metric(
        "denoising_change_rate_at_strongest_cell",
        "share of corrupted answers flipped by patching the strongest cell",
        "%",
        100.0,
    ),
    Metric(
        "attribute_shift_at_best_setting",
        "shift in attribute score at the best steering setting",
        "score difference",
    ),
    Metric(
        "steering_minus_prompting_shift",
        "attribute-score shift of steering minus that of prompting",
        "score difference",
    ),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)


def metric(name: str) -> Metric:
    """The registered metric called ``name``; a name the registry lacks gets a label made from
    its words (``some_new_rate`` -> ``some new rate``, no unit) so that a report never fails on
    it, and tests/test_paper.py checks that every metric the package writes is registered."""
    for entry in METRICS:
        if entry.name == name:
            return entry
    return Metric(name, " ".join(str(name).replace("_", " ").split()), "")


def metric_text(name: str) -> str:
    """The metric's label with its unit (:attr:`Metric.text`)."""
    return metric(name).text


PREMORTEM_NAMES: tuple[str, ...] = tuple(pm.name for pm in PREMORTEMS)
BRANCH_NAMES: tuple[str, ...] = tuple(b.name for b in BRANCHES)
EXPERIMENT_NAMES: tuple[str, ...] = tuple(e.name for e in EXPERIMENTS)
#: The figures Phase 3 draws, in order: the pre-mortems', then one per experiment that has one.
FIGURES: tuple[str, ...] = ("premortem_verdicts", *(e.figure for e in EXPERIMENTS if e.figure))


def premortem(name: str) -> PreMortem:
    """The pre-mortem called ``name``."""
    return _find(PREMORTEMS, name, "pre-mortem")


def experiment(name: str) -> Experiment:
    """The experiment called ``name``."""
    return _find(EXPERIMENTS, name, "experiment")


def branch(name: str) -> Branch:
    """The branch called ``name`` (with its experiments filled in from the registry)."""
    found = _find(BRANCHES, name, "branch")
    return Branch(
        name=found.name,
        title=found.title,
        topic=found.topic,
        paper_title=found.paper_title,
        venues=found.venues,
        experiments=branch_experiments(name),
    )


def branch_experiments(name: str) -> tuple[str, ...]:
    """The experiments of a branch, in registry order."""
    return tuple(e.name for e in EXPERIMENTS if e.branch == name)


def experiment_branch(name: str) -> str:
    """The branch an experiment belongs to."""
    return experiment(name).branch


def opening_premortem(branch_name: str) -> str | None:
    """The pre-mortem whose PASS opens ``branch_name`` (None for the abort branch)."""
    return next((pm.name for pm in PREMORTEMS if pm.branch == branch_name), None)


def planning_verdict(verdict: str) -> str:
    """INCONCLUSIVE counts as FAIL for planning (and is reported as INCONCLUSIVE)."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r} (allowed: {', '.join(VERDICTS)})")
    return "PASS" if verdict == "PASS" else "FAIL"


def branches_for(verdicts: Mapping[str, str]) -> list[str]:
    """The branches the decision table schedules for the pre-mortems' verdicts (abort if none)."""
    opened = [pm.branch for pm in PREMORTEMS if planning_verdict(verdicts[pm.name]) == "PASS"]
    return opened or [ABORT]


def decision_table() -> list[tuple[list[str], list[str]]]:
    """Every row of the decision table: (verdict per pre-mortem, branches), FAIL before PASS."""
    rows = []
    for combo in itertools.product(("FAIL", "PASS"), repeat=len(PREMORTEMS)):
        verdicts = dict(zip(PREMORTEM_NAMES, combo, strict=True))
        rows.append((list(combo), branches_for(verdicts)))
    return rows


def experiment_outputs(name: str, seeds: Sequence[int] = ()) -> list[str]:
    """Every file an experiment writes: once, or once per seed for a seeded experiment."""
    exp = experiment(name)
    folders = [exp.folder(seed) for seed in seeds] if exp.seeded else [exp.folder()]
    return [f"{folder}/{file}" for folder in folders for file in exp.outputs]


def branch_targets(branch_name: str, config: Mapping[str, Any]) -> list[str]:
    """The files a branch must produce for a resolved configuration (its experiments, per seed)."""
    if branch_name == ABORT:
        return [ABORT_REPORT]
    seeds = config["seeds"]
    return [
        path for name in branch_experiments(branch_name) for path in experiment_outputs(name, seeds)
    ]


def targets_for(branches: Sequence[str], config: Mapping[str, Any]) -> list[str]:
    """The files the scheduled branches must produce."""
    return [path for name in branches for path in branch_targets(name, config)]


def _find(entries: Sequence[Any], name: str, kind: str) -> Any:
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(entry.name for entry in entries)
    raise KeyError(f"unknown {kind} {name!r} (known: {known})")
