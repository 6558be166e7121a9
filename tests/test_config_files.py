"""Configuration files and exact types: your config file is your study, refused in one line.

Cases (the input; what is given now):

- ``--configfile my.yaml`` (two hub models, one task): the study of that file only; no organism is
  trained and no built-in task is planned (config/config.yaml is used only without --configfile)
- ``--configfile my.yaml --config seed=7 ...``: the overrides merge on top of the file; the
  resolved configuration (results/analysis/config.json) is that study
- ``--config seed=7`` without --configfile: merged over config/config.yaml, as before
- a model defined twice in a config file: "my.yaml, line 4: key models.a is given twice (first on
  line 2)"; a key given twice at the top level, likewise
- a YAML syntax error in config/config.yaml: "config/config.yaml, line N, column M: not valid YAML:
  ..."; with tabs: "... indent with spaces, not tabs"; an unquoted ``*``: "... quote a value that
  starts with * or &"; a list or an empty file: "a configuration is a mapping of keys to values"
- a JSON config file giving a key twice: "key seed is given twice"
- a YAML syntax error in a --configfile: refused before any job ran by Snakemake itself ("Config
  file is not valid JSON or YAML"), which reads command-line config files before the workflow
- ``premortems.pm2.n_samples: 1000.0``: "premortems.pm2.n_samples: 1000.0 is not allowed (an
  integer; write 1000, not 1000.0)"; the same from ``--config`` ("1000.0")
- ``seeds: [42.0, 43.0]``: "seeds[0]: 42.0 is not allowed (an integer; write 42, not 42.0)"
- ``seed: true`` / ``n_samples: false``: "an integer; true is a boolean"
- ``premortems.pm2.layer: 3.0``: '"auto" or an integer; write 3, not 3.0'
- ``premortems.pm3.layers: ["1", "2.0"]`` from --config: "premortems.pm3.layers[1]: 2.0"
- ``tasks.t.subsample: 1``: "(true or false)"
- ``premortems.pm1.models: [tiny_gpt2]``: "a list of at least 2 distinct models"
- ``premortems.pm1.models: [tiny_gpt2, tiny_gpt2]``: 'each of the models once; "tiny_gpt2" is
  repeated'; ``seeds: [1, 1]`` likewise; ``seeds: []``: "a non-empty list of distinct seeds";
  ``models: {}``: "at least one entry under models"
- ``tasks.t.subjects: "*"``: 'tasks.t.subjects: "*" is not allowed (a list or null — MMLU only;
  null for every subject)', one line, no traceback
- two hub models with one id and revision: "models.b: the same model as models.a (source hub, id
  "gpt2", revision null)"; with different revisions: accepted
- two organisms with one family, size, train_seed and train_steps: "models.x: the same model as
  models.tiny_gpt2"; a different train_seed: accepted
- two local models naming one folder (``m`` and ``./m/``): "the same model as models.a"
- every refusal above through ``snakemake -n --configfile``: "configuration refused before any job
  ran: ..." on one line, no job planned
"""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import pytest
import yaml
from helpers.workflow import copy_workflow, dry_run, force_args, snakemake

from actspace.config import ConfigError, resolve_config
from actspace.core.schema import check_config_file

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "configuration refused before any job ran: "

#: A user's own study: two hub models and one hub task (never loaded by a dry run).
USER_STUDY = """\
models:
  gpt2: {source: hub, id: gpt2}
  p: {source: hub, id: EleutherAI/pythia-70m}
tasks:
  hs: {type: hellaswag, source: hub}
"""


@pytest.fixture(scope="module")
def default() -> dict:
    with open(ROOT / "config" / "config.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _refusal(config: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve_config(config)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _with(default: dict, **sections) -> dict:
    config = copy.deepcopy(default)
    for dotted, value in sections.items():
        node = config
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return config


# --- exact types -------------------------------------------------------------------------------

TYPES = [
    (
        "premortems__pm2__n_samples",
        1000.0,
        "premortems.pm2.n_samples: 1000.0 is not allowed (an integer; write 1000, not 1000.0)",
    ),
    ("premortems__pm2__n_samples", "1000.0", "premortems.pm2.n_samples: 1000.0 is not allowed"),
    ("seeds", [42.0, 43.0], "seeds[0]: 42.0 is not allowed (an integer; write 42, not 42.0)"),
    ("seed", True, "seed: true is not allowed (an integer; true is a boolean"),
    ("premortems__pm1__n_samples", False, "n_samples: false is not allowed (an integer; false"),
    ("premortems__pm2__layer", 3.0, '("auto" or an integer; write 3, not 3.0)'),
    ("premortems__pm3__layers", ["1", "2.0"], "premortems.pm3.layers[1]: 2.0 is not allowed"),
    ("world__n_entities", 80.0, "world.n_entities: 80.0 is not allowed"),
]


@pytest.mark.parametrize(("key", "value", "words"), TYPES, ids=[f"{k}={v}" for k, v, _ in TYPES])
def test_integer_keys_take_integers_exactly(default, key, value, words):
    assert words in _refusal(_with(default, **{key: value}))


def test_integers_and_integer_strings_still_pass_as_integers(default):
    config = _with(default, premortems__pm2__n_samples="1000", seeds=[42, 43])
    resolved = resolve_config(config)
    assert resolved["premortems"]["pm2"]["n_samples"] == 1000
    assert type(resolved["premortems"]["pm2"]["n_samples"]) is int
    assert resolved["seeds"] == [42, 43]


def test_booleans_take_booleans(default):
    config = _with(default, tasks={"t": {"type": "mmlu", "subsample": 1}})
    assert "tasks.t.subsample: 1 is not allowed (true or false)" in _refusal(config)


# --- list rules in words -----------------------------------------------------------------------

LISTS = [
    ("premortems__pm1__models", ["tiny_gpt2"], "(a list of at least 2 distinct models)"),
    (
        "premortems__pm1__models",
        ["tiny_gpt2", "tiny_gpt2"],
        '(each of the models once; "tiny_gpt2" is repeated)',
    ),
    ("seeds", [1, 1], "seeds: [1, 1] is not allowed (each of the seeds once; 1 is repeated)"),
    ("seeds", [], "seeds: [] is not allowed (a non-empty list of distinct seeds)"),
    ("extract__poolings", [], "(a non-empty list of distinct poolings)"),
    ("models", {}, "models: {} is not allowed (at least one entry under models)"),
]


@pytest.mark.parametrize(("key", "value", "words"), LISTS, ids=[f"{k}={v}" for k, v, _ in LISTS])
def test_list_rules_are_said_in_words(default, key, value, words):
    message = _refusal(_with(default, **{key: value}))
    assert words in message
    assert "Models compared pairwise" not in message  # the rule, not the key's description


def test_subjects_star_is_one_line(default):
    config = _with(default, tasks={"t": {"type": "mmlu", "subjects": "*"}})
    assert 'tasks.t.subjects: "*" is not allowed (a list or null — MMLU only' in _refusal(config)


# --- one model, two names ----------------------------------------------------------------------

SAME = [
    (
        {"a": {"source": "hub", "id": "gpt2"}, "b": {"source": "hub", "id": "gpt2"}},
        'models.b: the same model as models.a (source hub, id "gpt2", revision null)',
    ),
    (
        {
            "tiny_gpt2": {"source": "organism", "family": "gpt2", "train_seed": 1},
            "x": {"source": "organism", "family": "gpt2", "train_seed": 1, "size": "default"},
        },
        'models.x: the same model as models.tiny_gpt2 (source organism, family "gpt2"',
    ),
    (
        {"a": {"source": "local", "path": "m"}, "b": {"source": "local", "path": "./m/"}},
        "models.b: the same model as models.a (source local, path",
    ),
]


@pytest.mark.parametrize(("models", "words"), SAME, ids=["hub", "organism", "local"])
def test_one_model_under_two_names_is_refused(default, models, words):
    assert words in _refusal(_with(default, models=models))


def test_models_that_differ_in_one_key_are_two_models(default):
    hub = {
        "a": {"source": "hub", "id": "gpt2"},
        "b": {"source": "hub", "id": "gpt2", "revision": "main"},
    }
    config = _with(default, models=hub, premortems={})
    assert set(resolve_config(config)["models"]) == {"a", "b"}
    organisms = {
        "a": {"source": "organism", "family": "gpt2", "train_seed": 1},
        "b": {"source": "organism", "family": "gpt2", "train_seed": 2},
    }
    config = _with(default, models=organisms, premortems={})
    assert set(resolve_config(config)["models"]) == {"a", "b"}


# --- reading a config file strictly ------------------------------------------------------------

FILES = [
    (
        "models:\n  a: {source: hub, id: gpt2}\n  b: {source: hub, id: x}\n  a: {source: hub}\n",
        "my.yaml, line 4: key models.a is given twice (first on line 2)",
    ),
    ("seed: 1\nseeds: [1]\nseed: 2\n", "my.yaml, line 3: key seed is given twice (first on line 1"),
    (
        "models:\n  a: {source: hub, id: gpt2\n",
        "my.yaml, line 3, column 1: not valid YAML: expected ',' or '}'",
    ),
    ("models:\n\ta: 1\n", "my.yaml, line 2, column 1: not valid YAML"),
    ("models:\n\ta: 1\n", "indent with spaces, not tabs"),
    ("tasks:\n  t: {type: mmlu, subjects: *}\n", "quote a value that starts with * or &"),
    ("- a\n- b\n", "my.yaml: a configuration is a mapping of keys to values (found a sequence)"),
    ("", "my.yaml: a configuration is a mapping of keys to values (the file is empty)"),
    ('{"seed": 1,\n "seed": 2}\n', "my.yaml, line 2: key seed is given twice"),
    ('{\n\t"seed": 1,\n\t"seed": 2\n}\n', "my.yaml, line 3: key seed is given twice"),
]


@pytest.mark.parametrize(("text", "words"), FILES, ids=[w[:40] for _, w in FILES])
def test_config_files_are_read_strictly(tmp_path, monkeypatch, text, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        check_config_file(tmp_path / "my.yaml")
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_valid_config_files_pass(tmp_path):
    for name in ("config.yaml", "paper.yaml"):
        check_config_file(ROOT / "config" / name)
    aliases = "models:\n  a: &m {source: hub, id: gpt2}\n  b: *m\n"
    (tmp_path / "aliases.yaml").write_text(aliases, encoding="utf-8")
    check_config_file(tmp_path / "aliases.yaml")
    (tmp_path / "tabs.json").write_text('{\n\t"seed": 1\n}\n', encoding="utf-8")
    check_config_file(tmp_path / "tabs.json")


# --- the workflow: your config file is your study ----------------------------------------------


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("config_files"))
    (workdir / "my.yaml").write_text(USER_STUDY, encoding="utf-8")
    return workdir


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _study_config(workdir: Path, *args: str) -> dict:
    """The configuration rule study_config writes to results/analysis/config.json, from a dry run
    that forces every verdict to PASS (so that the paper's rules are planned)."""
    result = snakemake(workdir, "-n", "-p", "--cores", "1", *args)
    for line in (result.stdout + result.stderr).splitlines():
        if "write_config.py --config-json" in line:
            words = shlex.split(line.split(":", 1)[1])
            return json.loads(words[words.index("--config-json") + 1])
    raise AssertionError("study_config was not planned")


def test_a_config_file_replaces_the_default_study(fresh):
    result = snakemake(fresh, "-n", "-p", "--cores", "1", "--configfile", "my.yaml")
    text = result.stdout + result.stderr
    assert "train_organism" not in text
    assert "tiny_gpt2" not in text and "tiny_neox" not in text
    assert "task=facts" not in text and "task=arithmetic" not in text
    jobs = dry_run(fresh, "--configfile", "my.yaml")
    assert jobs["extract"] == 2  # gpt2 and p on hs


def test_config_overrides_merge_over_the_config_file(fresh):
    force = force_args("PASS", "PASS", "PASS")
    config = _study_config(fresh, "--configfile", "my.yaml", "--config", "seed=7", force[1])
    assert set(config["models"]) == {"gpt2", "p"}
    assert set(config["tasks"]) == {"hs"}
    assert config["seed"] == 7
    assert config["premortems"]["pm1"]["models"] == ["gpt2", "p"]
    assert config["premortems"]["pm2"]["task"] == "hs"


def test_without_a_config_file_the_default_study_runs_with_overrides(fresh):
    force = force_args("PASS", "PASS", "PASS")
    config = _study_config(fresh, "--config", "seed=7", force[1])
    assert set(config["models"]) == {"tiny_gpt2", "tiny_neox"}
    assert set(config["tasks"]) == {"facts", "arithmetic"}
    assert config["seed"] == 7


def _refused(workdir: Path, *args: str) -> str:
    result = snakemake(workdir, "-n", "--cores", "1", *args, check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Job stats" not in text
    assert "Traceback" not in text
    assert not (workdir / "results").exists()
    return text


def _refusal_line(text: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(PREFIX)]
    return line


BAD_FILES = [
    (
        USER_STUDY + "models:\n  q: {source: hub, id: gpt2}\n",
        "bad.yaml, line 6: key models is given twice (first on line 1)",
    ),
    (
        USER_STUDY + "premortems:\n  pm2: {n_samples: 1000.0}\n",
        "premortems.pm2.n_samples: 1000.0 is not allowed (an integer; write 1000, not 1000.0)",
    ),
    (USER_STUDY + "seeds: [42.0, 43.0]\n", "seeds[0]: 42.0 is not allowed"),
    (
        USER_STUDY.replace("hellaswag, source: hub", 'mmlu, subjects: "*"'),
        'tasks.hs.subjects: "*" is not allowed (a list or null',
    ),
    (
        USER_STUDY.replace("EleutherAI/pythia-70m", "gpt2"),
        "models.p: the same model as models.gpt2",
    ),
    (
        USER_STUDY + "premortems:\n  pm1: {models: [gpt2]}\n",
        'premortems.pm1.models: ["gpt2"] is not allowed (a list of at least 2 distinct models)',
    ),
]


@pytest.mark.parametrize(("text", "words"), BAD_FILES, ids=[w[:40] for _, w in BAD_FILES])
def test_a_bad_config_file_is_refused_before_any_job(fresh, text, words):
    (fresh / "bad.yaml").write_text(text, encoding="utf-8")
    assert words in _refusal_line(_refused(fresh, "--configfile", "bad.yaml"))


def test_a_yaml_error_in_the_default_config_names_file_and_line(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    default = workdir / "config" / "config.yaml"
    lines = default.read_text(encoding="utf-8").splitlines()
    default.write_text("\n".join(lines) + "\nseeds: [42\n", encoding="utf-8")
    line = _refusal_line(_refused(workdir))
    assert f"config/config.yaml, line {len(lines) + 2}, column 1: not valid YAML" in line
    assert f"(while parsing a flow sequence started on line {len(lines) + 1})" in line


def test_a_yaml_error_in_a_config_file_on_the_command_line_runs_nothing(fresh):
    # Snakemake reads --configfile files before the workflow; it refuses them with its own line.
    (fresh / "broken.yaml").write_text("models:\n  a: {source: hub, id: gpt2\n", encoding="utf-8")
    result = snakemake(fresh, "-n", "--cores", "1", "--configfile", "broken.yaml", check=False)
    assert result.returncode != 0
    assert "Config file is not valid JSON or YAML" in result.stdout + result.stderr
    assert not (fresh / "results").exists()
