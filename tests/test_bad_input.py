"""Bad input, end to end: each broken input is refused by the step that reads it, with one line
naming the file (or key) and what is wrong, and nothing already computed is lost.

This is the index of the bad-input suite. Every case found by trying the workflow as a new user
would, and where its regression test lives (each file's docstring lists its own cases in full):

Configuration files and types (tests/test_config_files.py)
  - ``--configfile my.yaml`` runs that study alone (no built-in organisms or facts merged in);
    ``--config`` still merges on top; results/analysis/config.json is the study that ran
  - an integer key given 1000.0 (``premortems.pm2.n_samples``), ``seeds: [42.0, 43.0]``, booleans
    as integers: refused, naming the key ("an integer; write 1000, not 1000.0")
  - a key given twice in a YAML file (a model defined twice): file, key and both lines
  - YAML syntax errors in config/config.yaml: file, line and column (a file given with
    ``--configfile`` is parsed by Snakemake itself, which names neither)
  - two models with the same spec; minItems / uniqueItems in words ("at least 2 distinct
    models"); ``subjects: "*"`` one line, not a YAML traceback
Cross-references before any job (tests/test_config_checks.py)
  - poolings used vs extracted (``extract.poolings: [last]`` with PM2 ``pooling: mean``)
  - layers beyond a model's depth for every section that takes layers (2A, 2B, 2C, PM2, PM3),
    hub models included when their config is in the local cache
  - a local model path, task file, dev file, pairs, attribute or prompt file that is missing or
    of the wrong kind (no 27-line MissingInputException)
  - task-type-specific keys: a hub-type task with ``path`` but no ``source: local``,
    ``num_fewshot`` on a jsonl task, ``subjects`` on a non-MMLU task, one choice per item
  - ``tracking.wandb`` set without wandb installed
  - ``revision`` on a local or organism model (tests/test_config.py: "applies to hub models only")
  - an unknown ``behavior_edit.builtin_sets``, ``kind: offline`` for formality, and ``offline``
    without alt-profanity-check installed (tests/test_steering_convention.py,
    tests/test_attribute_scorers.py)
Nothing already computed is lost (tests/test_nothing_lost.py, slow)
  - each case above that a check catches, run with ``snakemake --cores 2`` on a finished study:
    refused before any job, and the sha256 of every results file unchanged
  - an invalid results/gate/verdicts.json, or an unknown verdict in it: one line
Activation stores (tests/test_store_integrity.py, and below)
  - bytes flipped in the data region of an activation file: the sha256 in meta.json differs
  - score rows: label out of range, ``correct`` not a boolean, the wrong number of
    log-likelihoods, a row ``{}``, invalid UTF-8: one line naming the file and the line
  - a truncated model.safetensors or activation file: one line naming the file
  - contexts longer than the model's window: counted in meta.json and the summary line;
    ``extract.truncation: refuse`` stops instead
  - a task with one choice per item
A pre-mortem with no value (tests/test_gate.py, tests/test_summary.py, tests/test_premortems.py)
  - PM3 with no usable pair, PM2 with too few right or wrong answers, PM1 on a study of one model
    (and, forced open, the 2A experiments: "not measured"): INCONCLUSIVE with the reason; the
    abort report, the decision, the summary and the paper are written (the organisms
    at 150 training steps, slow)
Below: truncated, corrupted and NaN activation files, malformed task lines, out-of-range labels,
empty tasks, weightless model folders and oversized layers at the step that reads them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.scripts import load_script
from helpers.workflow import ROOT, copy_workflow, snakemake
from safetensors.numpy import load_file, save_file

from actspace.core.checksums import file_checksum

ITEMS = [
    {
        "id": f"q{i}",
        "context": f"Question {i}: the answer is",
        "choices": [" yes", " no", " maybe", " never"],
        "label": i % 4,
        "metadata": {},
    }
    for i in range(24)
]


def _write_task(path: Path, rows: list[dict] | list[str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _refused(main, argv: list[str], *words: str) -> str:
    """Run a script's main; it must exit with one 'error: ...' line containing ``words``."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("error:") and "\n" not in message, message
    for word in words:
        assert word in message, (word, message)
    return message


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def computed(tiny_model_dir, tmp_path_factory):
    """A real store of a tiny GPT-2 and a PM2 result computed from it: what must not be lost."""
    root = tmp_path_factory.mktemp("computed")
    extract = load_script("extract").main
    task = _write_task(root / "task.jsonl", ITEMS)
    store = root / "store"
    extract(["--model", str(tiny_model_dir("gpt2")), "--task", str(task), "--device", "cpu",
             "--dtype", "float32", "--no-progress", "--output-dir", str(store)])  # fmt: skip
    pm2 = root / "pm2"
    load_script("pm2_error_prediction").main(
        ["--store", str(store), "--params", '{"n_bootstrap": 100, "cv_folds": 2}',
         "--layers", "1", "--output-dir", str(pm2)]
    )  # fmt: skip
    return {"root": root, "store": store, "pm2": pm2, "model": tiny_model_dir("gpt2")}


def _pm2_refuses(computed, store: Path, *words: str) -> None:
    before = _digest(computed["pm2"])
    _refused(
        load_script("pm2_error_prediction").main,
        ["--store", str(store), "--layers", "1", "--output-dir", str(computed["pm2"])],
        *words,
    )
    assert _digest(computed["pm2"]) == before, "a refused run changed earlier results"


def _broken_copy(computed, name: str) -> Path:
    copy = computed["root"] / name
    copy.mkdir()
    for path in computed["store"].iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def test_a_truncated_activation_file_is_named(computed):
    store = _broken_copy(computed, "truncated")
    data = (store / "pooled.safetensors").read_bytes()
    (store / "pooled.safetensors").write_bytes(data[: len(data) // 2])
    _pm2_refuses(computed, store, "pooled.safetensors")


def test_a_corrupted_activation_header_is_named(computed):
    store = _broken_copy(computed, "corrupted")
    data = bytearray((store / "pooled.safetensors").read_bytes())
    data[8:24] = b"\x00" * 16
    (store / "pooled.safetensors").write_bytes(bytes(data))
    _pm2_refuses(computed, store, "pooled.safetensors")


def test_nan_activations_are_refused_naming_file_and_tensor(computed):
    store = _broken_copy(computed, "nan")
    tensors = load_file(str(store / "pooled.safetensors"))
    name = next(iter(tensors))
    poisoned = {k: v.copy() for k, v in tensors.items()}
    poisoned[name][0, 1, 0] = np.nan
    save_file(poisoned, str(store / "pooled.safetensors"))
    _pm2_refuses(computed, store, "pooled.safetensors", "sha256 differs")  # edited after extraction
    # a NaN that the recorded checksums agree with is named by the read check
    meta = json.loads((store / "meta.json").read_text())
    meta["checksums"]["pooled.safetensors"] = file_checksum(store / "pooled.safetensors")
    (store / "meta.json").write_text(json.dumps(meta))
    _pm2_refuses(computed, store, "pooled.safetensors", "NaN")


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ([json.dumps(ITEMS[0]), "{not json"], ["task.jsonl", "line 2", "not valid JSON"]),
        ([{**ITEMS[0], "label": 7}], ["row 1", "label", "7"]),
        ([""], ["no items"]),
    ],
    ids=["malformed line", "label out of range", "empty task"],
)
def test_a_bad_task_file_is_refused_before_the_model_runs(computed, tmp_path, rows, words):
    task = _write_task(tmp_path / "task.jsonl", rows)
    store = computed["store"]
    before = _digest(store)
    _refused(
        load_script("extract").main,
        ["--model", str(computed["model"]), "--task", str(task), "--device", "cpu",
         "--output-dir", str(store)],
        *words,
    )  # fmt: skip
    assert _digest(store) == before


def test_a_model_folder_without_weights_is_named(computed, tmp_path):
    folder = tmp_path / "no_weights"
    folder.mkdir()
    for path in Path(computed["model"]).iterdir():
        if not path.name.endswith((".safetensors", ".bin")):
            (folder / path.name).write_bytes(path.read_bytes())
    task = _write_task(tmp_path / "task.jsonl", ITEMS)
    _refused(
        load_script("extract").main,
        ["--model", str(folder), "--task", str(task), "--device", "cpu",
         "--output-dir", str(tmp_path / "store")],
        str(folder),
    )  # fmt: skip
    assert not (tmp_path / "store").exists()


def test_a_hub_id_offline_says_what_to_set(tmp_path):
    """The step as Snakemake runs it (a fresh process) with the hub off and an empty cache."""
    task = _write_task(tmp_path / "task.jsonl", ITEMS)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "extract.py"), "--model",
         "someone/not-cached-model", "--task", str(task), "--device", "cpu",
         "--output-dir", str(tmp_path / "store")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    message = result.stderr.strip()
    assert message.startswith("error: could not load model 'someone/not-cached-model'"), message
    for fix in ("HF_HOME", "HF_HUB_OFFLINE"):
        assert fix in message
    assert "Traceback" not in result.stderr and len(message.splitlines()) == 1
    assert not (tmp_path / "store").exists()


def test_layers_that_do_not_fit_the_model_stop_the_workflow_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    result = snakemake(
        workdir,
        "-n",
        "--cores",
        "1",
        "--config",
        'premortems={"pm2": {"layer": 9}}',
        check=False,
    )
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "premortems.pm2.layer: layer 9 is beyond model 'tiny_gpt2'" in text
    assert "Traceback" not in text and not (workdir / "results").exists()
    assert os.listdir(workdir)  # the workflow files themselves are untouched
