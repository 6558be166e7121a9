"""Validate a study configuration against the schema and fill in its defaults.

Snakemake's own ``validate`` reports a failure with the whole schema attached; researchers need one
line that names the bad key and what is allowed. This module gives that. The checks a JSON schema
cannot express (references between sections, layers against a model's depth) live with each phase's
resolver and are run by :func:`actspace.config.resolve_config`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

import jsonschema
import yaml

from actspace.plan import PREMORTEM_NAMES


class ConfigError(ValueError):
    """A configuration that the workflow refuses, with a message naming the key."""


def load_schema() -> dict[str, Any]:
    """The configuration schema as a dict, with each branch's experiment schemas merged in.

    The schema is package data (``actspace/schemas/``), so an installed package finds it. Each
    branch keeps the schema of its experiments in its own file,
    ``experiments/<branch>.schema.yaml``: a mapping from experiment name to the schema of its
    section under ``experiments:``. The ``gate.force`` keys are the plan's pre-mortems.
    """
    folder = resources.files("actspace") / "schemas"
    schema = yaml.safe_load((folder / "config.schema.yaml").read_text(encoding="utf-8"))
    experiments = schema["properties"]["experiments"]["properties"]
    parts = sorted((folder / "experiments").iterdir(), key=lambda part: part.name)
    for part in parts:
        if part.name.endswith(".schema.yaml"):
            experiments.update(yaml.safe_load(part.read_text(encoding="utf-8")) or {})
    force = schema["properties"]["gate"]["properties"]["force"]["properties"]
    for name in PREMORTEM_NAMES:
        force[name] = {"enum": ["PASS", "FAIL", None], "default": None}
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
    return f"see {validator} in actspace/schemas/config.schema.yaml"


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


def check_name(value: str | None, defined: Mapping[str, Any], key: str, kind: str) -> None:
    """Refuse a reference to a model or task that the configuration does not define."""
    if value is not None and value not in defined:
        raise ConfigError(
            f"{key}: {kind} {value!r} is not defined (defined {kind}s: {', '.join(defined)})"
        )


def check_layers(
    key: str,
    model: str,
    layers: list[int],
    depths: Mapping[str, int | None],
    *,
    lowest: int = 0,
) -> None:
    """Refuse layers beyond a model's depth (when its depth is known without loading it)."""
    depth = depths.get(model)
    if depth is None:
        return
    bad = [layer for layer in layers if layer > depth or layer < lowest]
    if bad:
        first = "0 = embeddings" if lowest == 0 else str(lowest)
        raise ConfigError(
            f"{key}: layer {bad[0]} is beyond model {model!r}, which has {depth} blocks "
            f"(allowed: {first} to {depth})"
        )
