"""PM3 loads exactly the weights the extraction used.

The model reference (with its revision) reaches scripts/pm3_patching.py through --params, and the
script hands the revision to load_model.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from helpers.scripts import assert_clean_exit, load_script
from helpers.workflow import copy_workflow, snakemake

from actspace.lm.models import ModelLoadError

HUB = {"source": "hub", "id": "org/model", "revision": "abc"}
REFERENCE = {"name": "hub", "path": "org/model", "revision": "abc"}
SECTION = {
    "model": "hub",
    "pairs": None,
    "position": "diff",
    "layers": None,
    "n_pairs": 50,
    "selection_fraction": 0.5,
    "n_bootstrap": 1000,
    "threshold": 0.5,
    "seed": 0,
    "dtype": "float32",
    "device": "cpu",
}


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    row = {
        "id": "p0",
        "clean": "The cat sat on roof mat",
        "corrupted": "The cat sat on A mat",
        "clean_answer": "roof",
        "corrupted_answer": "A",
        "metadata": {},
    }
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return path


def _recording_loader(calls: list[dict]):
    """A load_model that records its arguments and stops the script there."""

    def load(source, **kwargs):
        calls.append({"source": str(source), **kwargs})
        raise ModelLoadError("stopped after load_model")

    return load


def test_script_loads_the_revision_of_the_model_reference(monkeypatch, tmp_path, pairs_file):
    script = load_script("pm3_patching")
    calls: list[dict] = []
    monkeypatch.setattr(script, "load_model", _recording_loader(calls))
    params = json.dumps({**SECTION, "model_ref": REFERENCE})
    argv = ["--params", params, "--pairs", str(pairs_file), "--output-dir", str(tmp_path / "out")]
    assert_clean_exit(script.main, argv, "stopped after load_model")
    assert calls == [
        {"source": "org/model", "revision": "abc", "dtype": "float32", "device": "cpu"}
    ]
    # by hand, --model and --revision replace the reference
    hand = [*argv, "--model", "other/model", "--revision", "v2"]
    assert_clean_exit(script.main, hand, "stopped after load_model")
    assert calls[-1]["source"] == "other/model" and calls[-1]["revision"] == "v2"


def _params_of(output: str, script: str) -> list[dict]:
    """The --params JSON of every scheduled shell command that runs ``script``."""
    found = []
    for line in output.splitlines():
        if f"scripts/{script}.py" not in line or "--params" not in line:
            continue
        words = shlex.split(re.sub(r"^.*?(python )", r"\1", line).split(">")[0])
        found.append(json.loads(words[words.index("--params") + 1]))
    return found


def test_workflow_passes_pm3_the_revision_extraction_used(tmp_path):
    """With a hub model pinned to a revision, PM3 and the extraction of that model get the same
    model reference, revision included (PM3 used to load the hub's default revision)."""
    workdir = copy_workflow(tmp_path / "study")
    models = json.dumps({"hub": HUB})
    premortems = json.dumps({"pm2": {"model": "hub"}, "pm3": {"model": "hub"}})
    result = snakemake(
        workdir,
        "-n",
        "-p",
        "--cores",
        "1",
        "--config",
        f"models={models}",
        f"premortems={premortems}",
    )
    output = result.stdout + result.stderr
    (pm3,) = _params_of(output, "pm3_patching")
    assert pm3["model_ref"] == {**REFERENCE, "source": "hub"}
    extracted = [p["model_ref"] for p in _params_of(output, "extract")]
    assert {**REFERENCE, "source": "hub"} in extracted
