"""Cross-references checked by resolve_config before any job runs, each refused in one line.

Cases (the input on top of config/config.yaml -> the message, or accepted):

Poolings used vs extracted
- extract.poolings [last], premortems.pm2.pooling mean -> "premortems.pm2.pooling: pooling 'mean'
  is not extracted (extract.poolings: last); use one of those, or add mean to extract.poolings"
- the same for premortems.pm1 and experiments.cross_model_extended / error_prediction_extended /
  unsupervised_error / abstention (behavior_edit's pooling pools its own texts: not checked)
- extract.poolings [mean], every section on mean -> "extract.poolings:
  experiments.activation_transfer reads the stores' 'last' pooling"
- extract.poolings [last], every section on last -> accepted
Layers vs each model's depth (organisms: 4 blocks; size small: 2)
- error_prediction_extended.layers [1, 99] -> "...layers: layer 99 is beyond model 'tiny_gpt2',
  which has 4 blocks (allowed: 0 = embeddings to 4)"
- error_prediction_extended {models: [tiny_gpt2, mini], layers: [3]} -> "...beyond model 'mini',
  which has 2 blocks"
- unsupervised_error.layer 7, unsupervised_error.layers [5], abstention.layer 5 -> same line
- activation_transfer.source_layer 9 -> model 'tiny_gpt2' (allowed: 0 = embeddings to 4);
  target_layer 9 -> model 'tiny_neox' (allowed: 1 to 4)
- behavior_edit.layers [9] -> "(allowed: 1 to 4)"
- premortems.pm3.layers [40] on hub model gpt2 whose config.json (12 layers) is in the local
  Hugging Face cache -> "layer 40 is beyond model 'gpt2', which has 12 blocks"; not cached, or
  another revision pinned -> accepted (depth unknown)
Files and folders named by the config
- models.mine.path missing / a file / a folder without config.json -> "models.mine.path: folder
  ... not found" / "is a file" / "has no config.json"
- tasks.mine.path missing / a folder / a .txt file -> "tasks.mine.path: file ... not found" /
  "is a folder" / "is not a .json, .jsonl, .json.gz or .jsonl.gz file"; a relative path names the
  working directory
- tasks.m.dev_path (local mmlu, 5-shot) missing -> "tasks.m.dev_path: file ... not found"
- premortems.pm3.pairs, experiments.patching_layers.pairs, behavior_edit.attribute_sets,
  behavior_edit.prompts missing or a folder -> "<key>: file ... not found; expected <what>"
- pm3.pairs naming the world's results/world/prompt_pairs.jsonl on a fresh study -> accepted
Task-type-specific keys and task contents
- hellaswag with path, no source: local -> "tasks.hs.path: path is set but source is hub; set
  source: local"
- num_fewshot 3 on jsonl / builtin -> "tasks.j.num_fewshot: num_fewshot applies to mmlu only,
  not jsonl" (not builtin)
- subjects on hellaswag -> "tasks.h.subjects: subjects applies to mmlu only, not hellaswag"
- builtin key on jsonl, path on builtin, hub_id on jsonl, split on a local hellaswag, dev_path on
  hellaswag, 5-shot local mmlu without dev_path -> one line each naming the key
- a jsonl task with one choice per item -> "tasks.one.path: item 'a' of ... has one choice; a
  multiple-choice task needs at least two choices per item"
- a jsonl task with a row missing its label -> "tasks.j.path: ..., line 2: ..."
- a good jsonl task -> accepted
Optional extras
- tracking.wandb with wandb not installed -> 'tracking.wandb: needs the wandb package, which is
  not installed; install the "tracking" extra (pip install -e ".[tracking]")'
Through ``snakemake`` on a fresh copy of the workflow: the pooling case, a missing pm3 pairs file,
a missing jsonl task file, a hub task with path (a real run, not -n: nothing is written) and PM3
layers on a cached hub model are refused with "configuration refused before any job ran".
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from helpers.workflow import copy_workflow

from actspace.config import ConfigError, resolve_config
from actspace.core import checks

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = "which has 4 blocks (allowed: 0 = embeddings to 4)"
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def default() -> dict:
    with open(ROOT / "config" / "config.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _with(config: dict, **sections) -> dict:
    """``config`` with ``sections`` deep-merged into it (dotted keys as nested mappings)."""
    config = copy.deepcopy(config)

    def merge(into: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(config, sections)
    return config


def _refused(config: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve_config(config)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _items(n_choices: int) -> list[dict]:
    choices = [f"c{index}" for index in range(n_choices)]
    return [{"id": key, "context": "Q", "choices": choices, "label": 0} for key in "abc"]


# --- poolings used vs extracted --------------------------------------------------------------


def test_a_pooling_not_extracted_is_refused(default):
    config = _with(default, extract={"poolings": ["last"]}, premortems={"pm2": {"pooling": "mean"}})
    assert _refused(config) == (
        "premortems.pm2.pooling: pooling 'mean' is not extracted (extract.poolings: last); "
        "use one of those, or add mean to extract.poolings"
    )


@pytest.mark.parametrize(
    "section",
    [
        "premortems.pm1",
        "experiments.cross_model_extended",
        "experiments.error_prediction_extended",
        "experiments.unsupervised_error",
        "experiments.abstention",
    ],
)
def test_every_section_reading_stores_uses_an_extracted_pooling(default, section):
    top, name = section.split(".")
    config = _with(default, extract={"poolings": ["last"]}, **{top: {name: {"pooling": "mean"}}})
    assert _refused(config).startswith(f"{section}.pooling: pooling 'mean' is not extracted")


def _all_poolings(config: dict, pooling: str) -> dict:
    sections = ("cross_model_extended", "error_prediction_extended", "unsupervised_error")
    return _with(
        config,
        extract={"poolings": [pooling]},
        premortems={"pm1": {"pooling": pooling}, "pm2": {"pooling": pooling}},
        experiments={name: {"pooling": pooling} for name in (*sections, "abstention")},
    )


def test_activation_transfer_needs_the_last_pooling(default):
    assert _refused(_all_poolings(default, "mean")).startswith(
        "extract.poolings: experiments.activation_transfer reads the stores' 'last' pooling"
    )


def test_one_pooling_used_everywhere_is_accepted(default):
    resolved = resolve_config(_all_poolings(default, "last"))
    assert resolved["extract"]["poolings"] == ["last"]
    # behavior_edit pools its own contrast texts, not the stores: its mean stays allowed
    assert resolved["experiments"]["behavior_edit"]["pooling"] == "mean"


# --- layers vs each model's depth ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "value", "bad"),
    [
        ("error_prediction_extended", "layers", [1, 99], 99),
        ("unsupervised_error", "layer", 7, 7),
        ("unsupervised_error", "layers", [5], 5),
        ("abstention", "layer", 5, 5),
        ("activation_transfer", "source_layer", 9, 9),
    ],
)
def test_experiment_layers_beyond_the_model_are_refused(default, name, key, value, bad):
    config = _with(default, experiments={name: {key: value}})
    assert _refused(config) == (
        f"experiments.{name}.{key}: layer {bad} is beyond model 'tiny_gpt2', {BLOCKS}"
    )


def test_layers_are_checked_against_every_model_of_a_section(default):
    config = _with(
        default,
        models={"mini": {"source": "organism", "family": "gpt2", "size": "small"}},
        experiments={"error_prediction_extended": {"models": ["tiny_gpt2", "mini"], "layers": [3]}},
    )
    assert _refused(config) == (
        "experiments.error_prediction_extended.layers: layer 3 is beyond model 'mini', which has "
        "2 blocks (allowed: 0 = embeddings to 2)"
    )


def test_injected_and_steered_layers_start_at_one(default):
    config = _with(default, experiments={"activation_transfer": {"target_layer": 9}})
    assert _refused(config) == (
        "experiments.activation_transfer.target_layer: layer 9 is beyond model 'tiny_neox', "
        "which has 4 blocks (allowed: 1 to 4)"
    )
    config = _with(default, experiments={"behavior_edit": {"layers": [9]}})
    assert _refused(config).endswith("which has 4 blocks (allowed: 1 to 4)")


def _hub_cache(root: Path, repo: str, config: dict) -> Path:
    """A Hugging Face hub cache holding ``repo``'s config.json at commit SHA (branch main)."""
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(SHA)
    snapshot = folder / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    return root


def _hub_pm3(default: dict, revision: str | None = None) -> dict:
    return _with(
        default,
        models={"gpt2": {"source": "hub", "id": "gpt2", "revision": revision}},
        premortems={"pm3": {"model": "gpt2", "layers": [40]}},
    )


def test_a_hub_models_depth_is_read_from_the_local_cache(default, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve_config(_hub_pm3(default))["premortems"]["pm3"]["layers"] == [40]  # unknown
    _hub_cache(tmp_path, "gpt2", {"model_type": "gpt2", "n_layer": 12})
    assert _refused(_hub_pm3(default)) == (
        "premortems.pm3.layers: layer 40 is beyond model 'gpt2', which has 12 blocks "
        "(allowed: 0 = embeddings to 12)"
    )
    assert _refused(_hub_pm3(default, SHA)).endswith(
        "which has 12 blocks (allowed: 0 = embeddings to 12)"
    )
    other = "f" * 40  # a revision that is not in the cache: depth unknown, not checked
    assert resolve_config(_hub_pm3(default, other))["models"]["gpt2"]["revision"] == other


# --- files and folders named by the config ---------------------------------------------------


def _local_model(default: dict, path: Path | str) -> dict:
    return _with(default, models={"mine": {"source": "local", "path": str(path)}})


def test_a_local_model_must_be_a_folder_with_a_config(default, tmp_path):
    missing = tmp_path / "nope"
    assert _refused(_local_model(default, missing)) == (
        f"models.mine.path: folder '{missing}' not found; expected a model folder written by "
        "save_pretrained (config.json and the weights)"
    )
    afile = tmp_path / "model.bin"
    afile.write_text("x")
    assert f"models.mine.path: '{afile}' is a file" in _refused(_local_model(default, afile))
    assert f"models.mine.path: folder '{tmp_path}' has no config.json" in _refused(
        _local_model(default, tmp_path)
    )
    (tmp_path / "config.json").write_text('{"n_layer": 2}')
    assert resolve_config(_local_model(default, tmp_path))["models"]["mine"]["path"] == str(
        tmp_path
    )


def _task(default: dict, name: str = "mine", **spec) -> dict:
    return _with(default, tasks={name: spec})


def test_a_local_task_file_must_exist_and_be_json(default, tmp_path, monkeypatch):
    missing = tmp_path / "nope.jsonl"
    assert _refused(_task(default, type="jsonl", path=str(missing))) == (
        f"tasks.mine.path: file '{missing}' not found; expected a .json, .jsonl, .json.gz or "
        ".jsonl.gz file"
    )
    assert f"tasks.mine.path: '{tmp_path}' is a folder" in _refused(
        _task(default, type="jsonl", path=str(tmp_path))
    )
    text = tmp_path / "items.txt"
    text.write_text("{}\n")
    assert _refused(_task(default, type="jsonl", path=str(text))) == (
        f"tasks.mine.path: '{text}' is not a .json, .jsonl, .json.gz or .jsonl.gz file"
    )
    monkeypatch.chdir(tmp_path)
    assert f"file 'data/x.jsonl' not found (relative to {tmp_path})" in _refused(
        _task(default, type="jsonl", path="data/x.jsonl")
    )


def test_a_local_mmlu_dev_file_must_exist(default, tmp_path):
    test = _jsonl(tmp_path / "test.jsonl", [{}])
    config = _task(
        default, "m", type="mmlu", source="local", path=str(test),
        dev_path=str(tmp_path / "dev.jsonl"), num_fewshot=5,
    )  # fmt: skip
    assert _refused(config).startswith(
        f"tasks.m.dev_path: file '{tmp_path / 'dev.jsonl'}' not found"
    )


@pytest.mark.parametrize(
    ("section", "what"),
    [
        ("premortems.pm3.pairs", "a JSONL file of prompt pairs"),
        ("experiments.patching_layers.pairs", "a JSONL file of prompt pairs"),
        ("experiments.behavior_edit.attribute_sets", "a JSONL file of contrast texts"),
        ("experiments.behavior_edit.prompts", "a JSONL file of neutral prompts {id, prompt}"),
    ],
)
def test_files_a_step_reads_must_exist(default, tmp_path, section, what):
    top, name, key = section.split(".")
    missing = tmp_path / "nope.jsonl"
    message = _refused(_with(default, **{top: {name: {key: str(missing)}}}))
    assert message.startswith(f"{section}: file '{missing}' not found; expected {what}")
    message = _refused(_with(default, **{top: {name: {key: str(tmp_path)}}}))
    assert message.startswith(f"{section}: '{tmp_path}' is a folder; expected {what}")
    _jsonl(missing, [{"id": 1}])
    assert resolve_config(_with(default, **{top: {name: {key: str(missing)}}}))


def test_the_worlds_own_files_may_be_named_before_they_exist(default, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _with(default, premortems={"pm3": {"pairs": "results/world/prompt_pairs.jsonl"}})
    assert (
        resolve_config(config)["premortems"]["pm3"]["pairs"] == "results/world/prompt_pairs.jsonl"
    )


# --- task-type-specific keys and task contents -----------------------------------------------


def test_a_hub_task_with_a_path_needs_source_local(default, tmp_path):
    config = _task(default, "hs", type="hellaswag", path=str(tmp_path / "hs.jsonl"))
    assert _refused(config) == "tasks.hs.path: path is set but source is hub; set source: local"


@pytest.mark.parametrize("kind", ["jsonl", "builtin"])
def test_num_fewshot_is_for_mmlu_only(default, tmp_path, kind):
    spec = {"path": str(tmp_path / "x.jsonl")} if kind == "jsonl" else {"builtin": "facts"}
    config = _task(default, "j", type=kind, num_fewshot=3, **spec)
    assert _refused(config) == f"tasks.j.num_fewshot: num_fewshot applies to mmlu only, not {kind}"


def test_subjects_are_for_mmlu_only(default):
    config = _task(default, "h", type="hellaswag", subjects=["anatomy"])
    assert _refused(config) == "tasks.h.subjects: subjects applies to mmlu only, not hellaswag"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "jsonl", "path": "x.jsonl", "builtin": "facts"},
            "tasks.t.builtin: applies to type builtin only, not jsonl",
        ),
        (
            {"type": "builtin", "builtin": "facts", "path": "x.jsonl"},
            "tasks.t.path: a builtin task is made from the synthetic world; path applies to "
            "jsonl tasks and hub-type tasks with source: local",
        ),
        (
            {"type": "jsonl", "path": "x.jsonl", "hub_id": "cais/mmlu"},
            "tasks.t.hub_id: applies to hub-type tasks (hellaswag, truthfulqa_mc1, "
            "truthfulqa_mc2, mmlu) with source: hub, not a jsonl task",
        ),
        (
            {"type": "hellaswag", "source": "local", "path": "x.jsonl", "split": "train"},
            "tasks.t.split: applies to hub-type tasks (hellaswag, truthfulqa_mc1, "
            "truthfulqa_mc2, mmlu) with source: hub, not a local file",
        ),
        (
            {"type": "hellaswag", "dev_path": "dev.jsonl"},
            "tasks.t.dev_path: applies to an mmlu task with source: local only (its dev split, "
            "for num_fewshot examples)",
        ),
        (
            {"type": "mmlu", "source": "local", "path": "x.jsonl", "num_fewshot": 5},
            "tasks.t.dev_path: required for num_fewshot > 0 on a local mmlu task (the dev split, "
            "a .json, .jsonl, .json.gz or .jsonl.gz file in the same schema)",
        ),
    ],
)
def test_keys_a_task_type_would_ignore_are_refused(default, spec, message):
    assert _refused(_task(default, "t", **spec)) == message


def test_a_task_with_one_choice_per_item_is_refused(default, tmp_path):
    path = _jsonl(tmp_path / "one.jsonl", _items(1))
    assert _refused(_task(default, "one", type="jsonl", path=str(path))) == (
        f"tasks.one.path: item 'a' of {path} has one choice; a multiple-choice task needs at "
        "least two choices per item"
    )


def test_a_task_file_is_read_before_any_job(default, tmp_path):
    rows = _items(2)
    del rows[1]["label"]
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    message = _refused(_task(default, "j", type="jsonl", path=str(path)))
    assert message.startswith(f"tasks.j.path: {path}, line 2: ")
    good = _jsonl(tmp_path / "good.jsonl", _items(2))
    resolved = resolve_config(_task(default, "j", type="jsonl", path=str(good), limit=2))
    assert resolved["tasks"]["j"]["limit"] == 2


# --- optional extras -------------------------------------------------------------------------


def test_tracking_needs_the_tracking_extra(default, monkeypatch):
    config = _with(default, tracking={"wandb": {"project": "p", "mode": "offline"}})
    monkeypatch.setattr(checks, "installed", lambda module: module != "wandb")
    assert _refused(config) == (
        'tracking.wandb: needs the wandb package, which is not installed; install the "tracking" '
        'extra (pip install -e ".[tracking]") or remove tracking.wandb'
    )
    monkeypatch.setattr(checks, "installed", lambda module: True)
    assert resolve_config(config)["tracking"]["wandb"]["project"] == "p"


# --- through snakemake: refused before any job, nothing written ------------------------------


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("checks"))


def _snakemake_refuses(workdir: Path, *args: str, env: dict | None = None) -> str:
    before = sorted(path.name for path in workdir.iterdir())
    result = subprocess.run(
        ["snakemake", *args], cwd=workdir, capture_output=True, text=True, timeout=600, env=env
    )
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "configuration refused before any job ran: " in text
    assert "Job stats" not in text and "MissingInputException" not in text
    assert not (workdir / "results").exists()
    after = sorted(path.name for path in workdir.iterdir() if path.name != ".snakemake")
    assert after == [name for name in before if name != ".snakemake"]
    return text


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (
            ['extract={"poolings": ["last"]}', 'premortems={"pm2": {"pooling": "mean"}}'],
            "premortems.pm2.pooling: pooling 'mean' is not extracted (extract.poolings: last)",
        ),
        (
            ['premortems={"pm3": {"pairs": "data/pairs.jsonl"}}'],
            "premortems.pm3.pairs: file 'data/pairs.jsonl' not found",
        ),
        (
            ['tasks={"mine": {"type": "jsonl", "path": "data/mine.jsonl"}}'],
            "tasks.mine.path: file 'data/mine.jsonl' not found",
        ),
    ],
)
def test_snakemake_preview_refuses_before_any_job(fresh, config, words):
    text = _snakemake_refuses(fresh, "-n", "--cores", "1", "--config", *config)
    assert words in text


def test_a_real_run_refuses_and_writes_nothing(fresh):
    config = 'tasks={"hs": {"type": "hellaswag", "path": "data/hs.jsonl"}}'
    text = _snakemake_refuses(fresh, "--cores", "1", "--config", config)
    assert "tasks.hs.path: path is set but source is hub; set source: local" in text


def test_snakemake_reads_a_cached_hub_models_depth(fresh, tmp_path):
    cache = _hub_cache(tmp_path / "hub", "gpt2", {"model_type": "gpt2", "n_layer": 12})
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    config = [
        'models={"gpt2": {"source": "hub", "id": "gpt2"}}',
        'premortems={"pm3": {"model": "gpt2", "layers": [40]}}',
    ]
    text = _snakemake_refuses(fresh, "-n", "--cores", "1", "--config", *config, env=env)
    assert "premortems.pm3.layers: layer 40 is beyond model 'gpt2', which has 12 blocks" in text
