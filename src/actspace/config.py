"""The study configuration, resolved: validated, defaults filled, every reference checked.

:func:`resolve_config` is the one place where a configuration becomes the study that runs. It
validates against the schema (:mod:`actspace.core.schema`), checks the model and task sections,
then hands the whole configuration to each phase's resolver (the pre-mortems' and each branch's,
kept beside their code), which fills ``null`` choices (a model, a task) and refuses what cannot run.
Snakemake rules then only read the resolved configuration.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from actspace.branches.cross_model.resolve import resolve as resolve_cross_model
from actspace.branches.error_prediction.resolve import resolve as resolve_error_prediction
from actspace.branches.patching.resolve import resolve as resolve_patching
from actspace.core.schema import ConfigError, validate_schema
from actspace.premortems.resolve import resolve as resolve_premortems
from actspace.world.organisms import organism_depth

#: Each phase's resolver: it fills null choices of its sections in place and raises ConfigError.
#: It receives the depth (number of blocks) of every model whose depth is known without loading.
Resolver = Callable[[dict[str, Any], Mapping[str, int | None]], None]
RESOLVERS: tuple[Resolver, ...] = (
    resolve_premortems,
    resolve_cross_model,
    resolve_error_prediction,
    resolve_patching,
)


def _check_model_sources(models: Mapping[str, Any]) -> None:
    required = {"organism": "family", "hub": "id", "local": "path"}
    for name, spec in models.items():
        needed = required[spec["source"]]
        if needed not in spec:
            raise ConfigError(
                f"models.{name}.{needed}: required when models.{name}.source is {spec['source']!r}"
            )


def _check_task_sources(tasks: Mapping[str, Any]) -> None:
    for name, spec in tasks.items():
        kind = spec["type"]
        if kind == "builtin" and "builtin" not in spec:
            raise ConfigError(
                f"tasks.{name}.builtin: required for a builtin task (one of facts, arithmetic)"
            )
        if kind == "jsonl" and "path" not in spec:
            raise ConfigError(f"tasks.{name}.path: required for a jsonl task (a local file)")
        if kind not in {"builtin", "jsonl"} and spec["source"] == "local" and "path" not in spec:
            raise ConfigError(f"tasks.{name}.path: required when tasks.{name}.source is 'local'")


def model_depth(spec: Mapping[str, Any]) -> int | None:
    """Number of blocks of a configured model, when it is known without loading it."""
    if spec["source"] == "organism":
        return organism_depth(spec["family"], spec["size"])
    if spec["source"] == "local":
        config_file = Path(spec["path"]) / "config.json"
        if config_file.is_file():
            data = json.loads(config_file.read_text(encoding="utf-8"))
            for key in ("num_hidden_layers", "n_layer", "num_layers"):
                if isinstance(data.get(key), int):
                    return data[key]
            text_config = data.get("text_config") or {}
            if isinstance(text_config.get("num_hidden_layers"), int):
                return text_config["num_hidden_layers"]
    return None


def resolve_config(config: Mapping[str, Any], schema: dict[str, Any] | None = None) -> dict:
    """Validate, fill defaults, resolve ``null`` model/task choices, and check cross-references.

    Raises ConfigError naming the first bad key and what is allowed.
    """
    data = validate_schema(config, schema)
    _check_model_sources(data["models"])
    _check_task_sources(data["tasks"])
    depths = {name: model_depth(spec) for name, spec in data["models"].items()}
    for resolver in RESOLVERS:
        resolver(data, depths)
    return data


def load_config(path: str | os.PathLike[str]) -> dict:
    """Read a YAML configuration file and resolve it."""
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of keys to values")
    return resolve_config(raw)
