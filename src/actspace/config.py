"""Validate a study configuration against the schema, fill defaults, and check cross-references.

Snakemake's own ``validate`` reports a failure with the whole schema attached; researchers need one
line that names the bad key and what is allowed. This module gives that, and adds the checks a JSON
schema cannot express: references to models and tasks that are not defined, and layers beyond a
model's depth.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

#: Blocks of the built-in organisms, per size (see ``actspace.world.organisms.organism_config``).
PREMORTEMS = ("pm1", "pm2", "pm3")


class ConfigError(ValueError):
    """A configuration that the workflow refuses, with a message naming the key."""


def load_schema(path: str | os.PathLike[str] = SCHEMA_PATH) -> dict[str, Any]:
    """The configuration schema as a dict, with each branch's experiment schemas merged in.

    Each branch of the plan keeps the schema of its experiments in its own file,
    ``workflow/schemas/experiments/*.schema.yaml``: a mapping from experiment name to the schema
    of its section under ``experiments:``.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    experiments = schema["properties"]["experiments"]["properties"]
    for part in sorted((path.parent / "experiments").glob("*.schema.yaml")):
        with open(part, encoding="utf-8") as handle:
            experiments.update(yaml.safe_load(handle) or {})
    return schema


def _with_defaults(validator_class: type) -> type:
    """A validator class that fills in ``default`` values of properties while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(jsonschema.Draft202012Validator)


def _key(path: Any) -> str:
    parts = [str(part) for part in path]
    return ".".join(parts) if parts else "(top level)"


def _allowed(error: jsonschema.ValidationError) -> str:
    """Describe what the schema allows at the failing spot."""
    schema = error.schema
    validator = error.validator
    if validator == "enum":
        return "one of " + ", ".join(json.dumps(value) for value in schema["enum"])
    if validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        return "known keys: " + (", ".join(allowed) if allowed else "(none)")
    if validator in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        low_s = "-inf" if low is None else str(low)
        high_s = "inf" if high is None else str(high)
        return f"a number in [{low_s}, {high_s}]"
    if validator == "type":
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return "a value of type " + " or ".join(kinds)
    if validator == "oneOf":
        return " or ".join(
            json.dumps(option["const"]) if "const" in option else option.get("type", "?")
            for option in schema["oneOf"]
        )
    if validator == "pattern":
        return f"a string matching {schema['pattern']}"
    if validator == "required":
        return "required keys: " + ", ".join(schema["required"])
    if "description" in schema:
        return schema["description"].strip()
    return f"see {validator} in workflow/schemas/config.schema.yaml"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line: the key, what is wrong, and what is allowed."""
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = _key(error.absolute_path)
        keys = ", ".join(f"{where}.{name}" if error.absolute_path else name for name in extra)
        return f"unknown key {keys} ({_allowed(error)})"
    if error.validator == "propertyNames":
        return f"bad name at {_key(error.absolute_path)}: {error.message} ({_allowed(error)})"
    key = _key(error.absolute_path)
    if error.validator == "required":
        return f"{key}: {error.message} ({_allowed(error)})"
    return f"{key}: {json.dumps(error.instance)} is not allowed ({_allowed(error)})"


def _accepts_string(schema: Mapping[str, Any], value: str) -> bool:
    if "enum" in schema:
        return value in schema["enum"]
    if "const" in schema:
        return schema["const"] == value
    if "oneOf" in schema:
        return any(_accepts_string(option, value) for option in schema["oneOf"])
    kinds = schema.get("type")
    if kinds is None:
        return True
    return "string" in (kinds if isinstance(kinds, list) else [kinds])


def _coerce_strings(data: Any, schema: Mapping[str, Any]) -> Any:
    """Undo Snakemake's ``--config`` habit of turning nested numbers and booleans into strings.

    ``--config 'premortems={pm2: {threshold: 0.6}}'`` arrives as ``{"threshold": "0.6"}``; where
    the schema does not take a string at that spot, the string is read as YAML instead.
    """
    if isinstance(data, str):
        if _accepts_string(schema, data):
            return data
        parsed = yaml.safe_load(data) if data.strip() else data
        return data if isinstance(parsed, str | dict) else parsed
    if isinstance(data, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, value in data.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            out[key] = _coerce_strings(value, sub) if sub is not None else value
        return out
    if isinstance(data, list) and isinstance(schema.get("items"), dict):
        return [_coerce_strings(value, schema["items"]) for value in data]
    return data


def validate_schema(config: Mapping[str, Any], schema: dict[str, Any] | None = None) -> dict:
    """Validate ``config`` against the schema and return a copy with every default filled in."""
    schema = schema if schema is not None else load_schema()
    data = _coerce_strings(copy.deepcopy(dict(config)), schema)
    validator = _DefaultingValidator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        raise ConfigError("invalid configuration: " + "; ".join(_describe(e) for e in errors[:5]))
    return data


def _check_name(value: str | None, defined: Mapping[str, Any], key: str, kind: str) -> None:
    if value is not None and value not in defined:
        raise ConfigError(
            f"{key}: {kind} {value!r} is not defined (defined {kind}s: {', '.join(defined)})"
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
        from actspace.world.organisms import organism_depth

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


def _check_layers(config: Mapping[str, Any]) -> None:
    pm2 = config["premortems"]["pm2"]
    pm3 = config["premortems"]["pm3"]
    checks: list[tuple[str, str, list[int]]] = []
    if isinstance(pm2["layer"], int):
        checks.append(("premortems.pm2.layer", pm2["model"], [pm2["layer"]]))
    if pm3["layers"]:
        checks.append(("premortems.pm3.layers", pm3["model"], list(pm3["layers"])))
    for key, model, layers in checks:
        depth = model_depth(config["models"][model])
        if depth is None:
            continue
        too_deep = [layer for layer in layers if layer > depth]
        if too_deep:
            raise ConfigError(
                f"{key}: layer {too_deep[0]} is beyond model {model!r}, which has {depth} blocks "
                f"(allowed: 0 = embeddings to {depth})"
            )


def resolve_config(config: Mapping[str, Any], schema: dict[str, Any] | None = None) -> dict:
    """Validate, fill defaults, resolve ``null`` model/task choices, and check cross-references.

    Raises ConfigError naming the first bad key and what is allowed.
    """
    data = validate_schema(config, schema)
    models, tasks = data["models"], data["tasks"]
    _check_model_sources(models)
    _check_task_sources(tasks)
    first_model, first_task = next(iter(models)), next(iter(tasks))

    pm1 = data["premortems"]["pm1"]
    if pm1["models"] is None:
        pm1["models"] = list(models)
    if len(pm1["models"]) < 2:
        raise ConfigError(
            "premortems.pm1.models: cross-model similarity needs at least two models "
            f"(configured models: {', '.join(models)})"
        )
    for index, name in enumerate(pm1["models"]):
        _check_name(name, models, f"premortems.pm1.models[{index}]", "model")
    pm1["task"] = pm1["task"] or first_task
    _check_name(pm1["task"], tasks, "premortems.pm1.task", "task")

    for key in ("pm2", "pm3"):
        section = data["premortems"][key]
        section["model"] = section["model"] or first_model
        _check_name(section["model"], models, f"premortems.{key}.model", "model")
    pm2 = data["premortems"]["pm2"]
    pm2["task"] = pm2["task"] or first_task
    _check_name(pm2["task"], tasks, "premortems.pm2.task", "task")
    if pm2["test_fraction"] + pm2["val_fraction"] >= 1:
        raise ConfigError(
            "premortems.pm2.val_fraction: test_fraction + val_fraction must be below 1 "
            f"(got {pm2['test_fraction']} + {pm2['val_fraction']})"
        )
    _check_layers(data)
    return data


def load_config(path: str | os.PathLike[str]) -> dict:
    """Read a YAML configuration file and resolve it."""
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of keys to values")
    return resolve_config(raw)
