"""Config validation: defaults filled in; each kind of bad input named with what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from actspace.config import ConfigError, load_config, resolve_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default() -> dict:
    with open(ROOT / "config" / "config.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_shipped_configurations_are_valid_and_get_defaults():
    config = load_config(ROOT / "config" / "config.yaml")
    assert config["premortems"]["pm1"]["threshold"] == 0.3
    assert config["premortems"]["pm2"]["threshold"] == 0.55
    assert config["premortems"]["pm3"]["threshold"] == 0.5
    assert config["premortems"]["pm2"]["cv_folds"] == 5  # a default from the schema
    assert config["models"]["tiny_gpt2"]["size"] == "default"
    paper = load_config(ROOT / "config" / "paper.yaml")
    assert paper["seeds"] == [42, 123, 456, 789, 1000]
    assert paper["premortems"]["pm1"]["models"] == ["gpt2", "pythia-70m", "pythia-160m", "opt-125m"]
    assert paper["premortems"]["pm1"]["n_samples"] == 2000
    assert paper["premortems"]["pm2"]["n_samples"] == 1000
    assert paper["premortems"]["pm3"]["n_pairs"] == 50


def test_empty_configuration_uses_the_defaults():
    config = resolve_config({})
    assert set(config["models"]) == {"tiny_gpt2", "tiny_neox"}
    assert config["premortems"]["pm1"]["models"] == ["tiny_gpt2", "tiny_neox"]
    assert config["premortems"]["pm2"]["model"] == "tiny_gpt2"
    assert config["premortems"]["pm2"]["task"] == "facts"


def _set(config: dict, dotted: str, value) -> dict:
    config = copy.deepcopy(config)
    node = config
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return config


BAD = [
    # (what, key, value, the words the message must contain)
    ("unknown top-level key", "colour", "blue", ["unknown key colour", "known keys"]),
    (
        "unknown nested key",
        "premortems.pm2.treshold",
        0.5,
        ["premortems.pm2.treshold", "known keys"],
    ),
    ("wrong type", "premortems.pm1.n_samples", "many", ["premortems.pm1.n_samples", "integer"]),
    (
        "threshold out of range",
        "premortems.pm2.threshold",
        1.5,
        ["premortems.pm2.threshold", "[0, 1]"],
    ),
    ("bad enum", "extract.dtype", "float8", ["extract.dtype", "bfloat16"]),
    ("bad pooling", "premortems.pm1.pooling", "max", ["premortems.pm1.pooling", '"last"']),
    (
        "undefined model",
        "premortems.pm2.model",
        "gpt5",
        ["premortems.pm2.model", "gpt5", "tiny_gpt2"],
    ),
    ("undefined task", "premortems.pm1.task", "sqad", ["premortems.pm1.task", "sqad", "facts"]),
    ("undefined model in list", "premortems.pm1.models", ["tiny_gpt2", "nope"], ["pm1.models[1]"]),
    ("layer beyond depth", "premortems.pm2.layer", 99, ["premortems.pm2.layer", "99", "blocks"]),
    ("patch layer beyond depth", "premortems.pm3.layers", [1, 50], ["premortems.pm3.layers", "50"]),
    ("bad force", "gate.force.pm1", "MAYBE", ["gate.force.pm1", '"PASS"']),
    ("negative seed", "seed", -1, ["seed", "[0, inf]"]),
    ("fractions too large", "premortems.pm2.val_fraction", 0.8, ["premortems.pm2.val_fraction"]),
    ("bad layer kind", "premortems.pm2.layer", "middle", ["premortems.pm2.layer", '"auto"']),
    ("one model for pm1", "premortems.pm1.models", ["tiny_gpt2"], ["premortems.pm1.models"]),
    ("revision of an organism", "models.tiny_gpt2.revision", "main", ["hub models only"]),
]


@pytest.mark.parametrize(("what", "key", "value", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_configuration_names_the_key_and_what_is_allowed(default, what, key, value, words):
    with pytest.raises(ConfigError) as caught:
        resolve_config(_set(default, key, value))
    message = str(caught.value)
    for word in words:
        assert word in message, f"{what}: {word!r} missing from {message!r}"
    assert "\n" not in message


def test_model_and_task_source_requirements(default):
    config = _set(
        default, "models", {"a": {"source": "hub"}, "b": {"source": "organism", "family": "gpt2"}}
    )
    with pytest.raises(ConfigError, match=r"models\.a\.id: required"):
        resolve_config(config)
    config = _set(default, "tasks", {"t": {"type": "jsonl"}})
    with pytest.raises(ConfigError, match=r"tasks\.t\.path: required"):
        resolve_config(config)
    config = _set(default, "models", {"a b": {"source": "hub", "id": "x"}})
    with pytest.raises(ConfigError, match=r"models: \"a b\" is not allowed \(a string matching"):
        resolve_config(config)


def test_layer_check_reads_a_local_models_depth(default, tmp_path):
    (tmp_path / "config.json").write_text('{"n_layer": 3}')
    config = _set(
        default,
        "models",
        {
            "a": {"source": "local", "path": str(tmp_path)},
            "b": {"source": "organism", "family": "gpt2"},
        },
    )
    config["premortems"] = {"pm1": {}, "pm2": {"model": "a", "layer": 4}, "pm3": {"model": "b"}}
    with pytest.raises(ConfigError, match="model 'a', which has 3 blocks"):
        resolve_config(config)
    config["premortems"]["pm2"]["layer"] = 3
    assert resolve_config(config)["premortems"]["pm2"]["layer"] == 3


def test_snakemake_cli_strings_are_read_as_numbers(default):
    config = _set(default, "premortems.pm2.threshold", "0.6")
    config = _set(config, "premortems.pm3.layers", ["1", "2"])
    config = _set(config, "gate.force.pm1", "null")
    resolved = resolve_config(config)
    assert resolved["premortems"]["pm2"]["threshold"] == 0.6
    assert resolved["premortems"]["pm3"]["layers"] == [1, 2]
    assert resolved["gate"]["force"]["pm1"] is None


def test_a_one_model_study_resolves_and_pm1_records_why_later(default):
    """A study of one model is valid: PM1 and the 2A experiments run on it and say, in their
    results, why they have no value; a pm1.models list written by hand still needs two."""
    config = copy.deepcopy(default)
    config["models"] = {"tiny_gpt2": config["models"]["tiny_gpt2"]}
    config["premortems"]["pm1"].pop("models", None)
    config["premortems"]["pm2"]["model"] = config["premortems"]["pm3"]["model"] = "tiny_gpt2"
    resolved = resolve_config(config)
    assert resolved["premortems"]["pm1"]["models"] == ["tiny_gpt2"]
    transfer = resolved["experiments"]["activation_transfer"]
    assert transfer["source"] == transfer["target"] == "tiny_gpt2"
    assert resolved["experiments"]["cross_model_extended"]["models"] == ["tiny_gpt2"]
    config["premortems"]["pm1"]["models"] = ["tiny_gpt2"]
    with pytest.raises(ConfigError, match="premortems.pm1.models"):
        resolve_config(config)
