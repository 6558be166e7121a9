"""Validate a study configuration against the schema and fill in its defaults.

Snakemake's own ``validate`` reports a failure with the whole schema attached; researchers need one
line that names the bad key and what is allowed. This module gives that. The checks a JSON schema
cannot express (references between sections, layers against a model's depth) live with each phase's
resolver and are run by :func:`actspace.config.resolve_config`.

Types are exact: an integer key takes an integer, not ``1000.0`` and not ``true`` (a script's
argument parser would refuse them at run time, after Snakemake deleted the step's old outputs).
:func:`check_config_file` reads a configuration file strictly (a YAML syntax error or a key given
twice is one line naming the file and the line) before Snakemake merges it.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
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


def _is_integer(_checker: Any, instance: Any) -> bool:
    """An integer, exactly: not a float with a zero fraction (1000.0), not a boolean."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_ExactTypes = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)
_DefaultingValidator = _with_defaults(_ExactTypes)

#: How each JSON schema type is named in a message.
_KIND_WORDS = {
    "array": "a list",
    "object": "a mapping of keys to values",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _key(path: Any) -> str:
    key = ""
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def _noun(error: jsonschema.ValidationError) -> str:
    """What the items of a list (or entries of a mapping) are called: the key's own name."""
    names = [part for part in error.absolute_path if isinstance(part, str)]
    return names[-1] if names else "items"


def _repeated(values: list[Any]) -> str:
    seen: set[str] = set()
    for value in values:
        text = json.dumps(value, sort_keys=True)
        if text in seen:
            return text
        seen.add(text)
    return "a value"


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
        return " or ".join(_KIND_WORDS.get(kind, kind) for kind in kinds)
    if validator == "oneOf":
        return " or ".join(
            json.dumps(option["const"])
            if "const" in option
            else _KIND_WORDS.get(option.get("type", "?"), option.get("type", "?"))
            for option in schema["oneOf"]
        )
    if validator == "minItems":
        distinct = "distinct " if schema.get("uniqueItems") else ""
        if schema["minItems"] == 1:
            return f"a non-empty list of {distinct}{_noun(error)}"
        return f"a list of at least {schema['minItems']} {distinct}{_noun(error)}"
    if validator == "maxItems":
        return f"a list of at most {schema['maxItems']} {_noun(error)}"
    if validator == "uniqueItems":
        return f"each of the {_noun(error)} once; {_repeated(error.instance)} is repeated"
    if validator == "minProperties":
        count = schema["minProperties"]
        return f"at least {'one' if count == 1 else count} entry under {_noun(error)}"
    if validator == "minLength":
        return f"a string of at least {schema['minLength']} character(s)"
    if validator == "const":
        return json.dumps(schema["const"])
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
    allowed = _allowed(error)
    value = error.instance
    if isinstance(value, float) and value.is_integer() and "an integer" in allowed:
        allowed += f"; write {int(value)}, not {value}"
    if isinstance(value, bool) and "an integer" in allowed:
        allowed += f"; {json.dumps(value)} is a boolean"
    if error.validator == "type" and "description" in error.schema:
        allowed += " — " + " ".join(error.schema["description"].split()).rstrip(".")
    return f"{key}: {json.dumps(value)} is not allowed ({allowed})"


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
        try:
            parsed = yaml.safe_load(data) if data.strip() else data
        except yaml.YAMLError:  # not a YAML value (e.g. "*"): the schema refuses the string
            return data
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
    if isinstance(data.get("models"), dict):
        check_model_specs(data["models"])
    return data


def _model_identity(spec: Mapping[str, Any]) -> tuple | None:
    """What makes two configured models the same model (None when the spec is incomplete)."""
    source = spec.get("source")
    if source == "organism" and "family" in spec:
        keys = ("family", "size", "train_seed", "train_steps")
        return (source, *(spec.get(key) for key in keys))
    if source == "hub" and "id" in spec:
        return (source, spec["id"], spec.get("revision"))
    if source == "local" and "path" in spec:
        folder = os.path.normpath(os.path.abspath(os.path.expanduser(spec["path"])))
        return (source, folder, spec.get("revision"))
    return None


def check_model_specs(models: Mapping[str, Any]) -> None:
    """Refuse two model names for one model (same source and id/path/revision, or the same
    organism family, size, train_seed and train_steps): the study would compare it with itself."""
    seen: dict[tuple, str] = {}
    for name, spec in models.items():
        identity = _model_identity(spec)
        if identity is None:
            continue
        if identity in seen:
            source, *rest = identity
            keys = {
                "organism": ("family", "size", "train_seed", "train_steps"),
                "hub": ("id", "revision"),
                "local": ("path", "revision"),
            }[source]
            what = ", ".join(f"{k} {json.dumps(v)}" for k, v in zip(keys, rest, strict=True))
            raise ConfigError(
                f"models.{name}: the same model as models.{seen[identity]} (source {source}, "
                f"{what}); define each model once, or change a key that makes them differ"
            )
        seen[identity] = name


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


def _yaml_error(label: str, error: yaml.YAMLError) -> ConfigError:
    """A YAML syntax error as one line: the file, the line and column, and what is wrong."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{label}, line {mark.line + 1}, column {mark.column + 1}" if mark else label
    problem = " ".join(str(getattr(error, "problem", None) or error).split())
    context = getattr(error, "context", None)
    context_mark = getattr(error, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        problem += f" ({' '.join(context.split())} started on line {context_mark.line + 1})"
    if "'\\t'" in problem:
        problem += "; indent with spaces, not tabs"
    if "alias" in problem or "anchor" in problem:
        problem += "; quote a value that starts with * or &"
    return ConfigError(f"{where}: not valid YAML: {problem}")


def _check_duplicate_keys(node: yaml.Node, path: str, label: str, seen: set[int]) -> None:
    """Refuse a mapping that gives one key twice (YAML keeps the last one silently)."""
    if id(node) in seen:  # an alias of a node already checked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = f"{path}.{key_node.value}" if path else key_node.value
            line = key_node.start_mark.line + 1
            if key_node.tag != "tag:yaml.org,2002:merge":
                identity = (key_node.tag, key_node.value)
                if identity in lines:
                    raise ConfigError(
                        f"{label}, line {line}: key {key} is given twice (first on line "
                        f"{lines[identity]}); give each key once (YAML would keep only the last)"
                    )
                lines[identity] = line
            _check_duplicate_keys(value_node, key, label, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{path}[{index}]", label, seen)


def _check_json_duplicates(text: str, label: str) -> None:
    """A JSON configuration (which YAML cannot read) given one key twice."""

    def pairs(items: list[tuple[str, Any]]) -> dict:
        keys = [key for key, _ in items]
        for key in keys:
            if keys.count(key) > 1:
                found = [i + 1 for i, line in enumerate(text.splitlines()) if f'"{key}"' in line]
                line = f", line {found[1]}" if len(found) > 1 else ""
                raise ConfigError(f"{label}{line}: key {key} is given twice; give each key once")
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)


def config_file_label(path: str | os.PathLike[str]) -> str:
    """A configuration file as a message names it: relative to the working folder when inside."""
    relative = os.path.relpath(os.path.abspath(path))
    return relative if not relative.startswith("..") else str(path)


def check_config_file(path: str | os.PathLike[str]) -> None:
    """Refuse a configuration file that is not a YAML (or JSON) mapping, or gives a key twice.

    Snakemake reads configuration files leniently (a key given twice keeps its last value); this
    reads one strictly, before Snakemake uses it. Raises ConfigError naming the file and the line.
    """
    label = config_file_label(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such configuration file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{label}: not UTF-8 text (byte {error.start})") from None
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as error:
        try:  # Snakemake also takes JSON, which YAML may not read (tabs)
            _check_json_duplicates(text, label)
            return
        except json.JSONDecodeError:
            raise _yaml_error(label, error) from None
    if not isinstance(root, yaml.MappingNode):
        found = "the file is empty" if root is None else f"found a {root.id}"
        raise ConfigError(f"{label}: a configuration is a mapping of keys to values ({found})")
    _check_duplicate_keys(root, "", label, set())
