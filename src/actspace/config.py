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
from actspace.core.checks import check_extra, check_file, check_model_folder
from actspace.core.schema import ConfigError, check_config_file, check_layers, validate_schema
from actspace.lm.tasks import HUB_DEFAULTS, SPEC_KEYS, check_spec, load_task
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
        if spec.get("revision") is not None and spec["source"] != "hub":
            raise ConfigError(
                f"models.{name}.revision: applies to hub models only (a {spec['source']} model "
                "has no revisions to choose from); remove it"
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


#: What a local task file may be, in words (as actspace.lm.tasks.read_records reads it).
TASK_FILE = "a .json, .jsonl, .json.gz or .jsonl.gz file"
#: The keys that choose a hub data set, and the tasks they apply to.
HUB_KEYS = ("hub_id", "hub_config", "split")
HUB_TYPES = ", ".join(HUB_DEFAULTS)


def _check_local_models(models: Mapping[str, Any]) -> None:
    for name, spec in models.items():
        if spec["source"] == "local":
            check_model_folder(f"models.{name}.path", spec["path"])


def _spec_error(name: str, error: ValueError) -> ConfigError:
    """The tasks module's ``task spec: <key> ...`` message, as ``tasks.<name>.<key>: ...``."""
    message = str(error).removeprefix("task spec: ")
    first = message.split(" ", 1)[0].rstrip(":")
    key = f"tasks.{name}.{first}" if first in SPEC_KEYS else f"tasks.{name}"
    return ConfigError(f"{key}: {message}")


def _check_task_keys(name: str, spec: Mapping[str, Any]) -> None:
    """Refuse keys that the task's type (or source) would silently ignore."""
    kind, source = spec["type"], spec["source"]
    probe = dict(spec)
    if kind == "builtin":  # its item file is the world's, written by the workflow
        probe["path"] = f"results/world/tasks/{spec.get('builtin')}.jsonl"
    try:
        check_spec(probe)
    except ValueError as error:
        raise _spec_error(name, error) from None
    if "builtin" in spec and kind != "builtin":
        raise ConfigError(f"tasks.{name}.builtin: applies to type builtin only, not {kind}")
    if kind == "builtin":
        for key in ("path", "dev_path"):
            if key in spec:
                raise ConfigError(
                    f"tasks.{name}.{key}: a builtin task is made from the synthetic world; {key} "
                    "applies to jsonl tasks and hub-type tasks with source: local"
                )
    for key in HUB_KEYS:
        if key in spec and not (kind in HUB_DEFAULTS and source == "hub"):
            where = "a local file" if kind in HUB_DEFAULTS else f"a {kind} task"
            raise ConfigError(
                f"tasks.{name}.{key}: applies to hub-type tasks ({HUB_TYPES}) with source: hub, "
                f"not {where}"
            )
    local_mmlu = kind == "mmlu" and source == "local"
    if "dev_path" in spec and kind != "builtin" and not local_mmlu:
        raise ConfigError(
            f"tasks.{name}.dev_path: applies to an mmlu task with source: local only (its dev "
            "split, for num_fewshot examples)"
        )
    if local_mmlu and spec["num_fewshot"] > 0 and "dev_path" not in spec:
        raise ConfigError(
            f"tasks.{name}.dev_path: required for num_fewshot > 0 on a local mmlu task "
            f"(the dev split, {TASK_FILE} in the same schema)"
        )


def _check_task_files(name: str, spec: Mapping[str, Any]) -> None:
    """Local task files exist and load as the task's items, each with at least two choices."""
    if spec["type"] == "builtin" or (spec["type"] != "jsonl" and spec["source"] != "local"):
        return
    for key in ("path", "dev_path"):
        if key in spec:
            check_file(f"tasks.{name}.{key}", spec[key], TASK_FILE)
            stem = spec[key].removesuffix(".gz")
            if not stem.endswith((".json", ".jsonl")):
                raise ConfigError(f"tasks.{name}.{key}: {spec[key]!r} is not {TASK_FILE}")
    try:
        items = load_task({**spec, "limit": None, "subsample": False})
    except ValueError as error:
        raise ConfigError(f"tasks.{name}.path: {error}") from None
    for item in items:
        if len(item.choices) < 2:
            raise ConfigError(
                f"tasks.{name}.path: item {item.id!r} of {spec['path']} has one choice; a "
                "multiple-choice task needs at least two choices per item"
            )


def _depth_of(config_file: Path) -> int | None:
    """Number of blocks a Hugging Face config.json declares (None when it declares none)."""
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        if isinstance(data.get(key), int) and not isinstance(data[key], bool):
            return data[key]
    text_config = data.get("text_config") or {}
    if isinstance(text_config, dict) and isinstance(text_config.get("num_hidden_layers"), int):
        return text_config["num_hidden_layers"]
    return None


def _cached_hub_config(model_id: str, revision: str | None) -> Path | None:
    """The hub model's config.json in the local Hugging Face cache, if it is there (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except Exception:  # a malformed id or cache: the depth is unknown, which skips the check
        return None
    return Path(found) if isinstance(found, str) else None


def model_depth(spec: Mapping[str, Any]) -> int | None:
    """Number of blocks of a configured model, when it is known without loading it: always for
    an organism, from config.json for a local folder, and for a hub model when its config.json
    is in the local Hugging Face cache (nothing is downloaded)."""
    if spec["source"] == "organism":
        return organism_depth(spec["family"], spec["size"])
    if spec["source"] == "local":
        return _depth_of(Path(spec["path"]) / "config.json")
    cached = _cached_hub_config(spec["id"], spec.get("revision"))
    return _depth_of(cached) if cached is not None else None


def _check_extract_layers(layers: list[int] | None, depths: Mapping[str, int | None]) -> None:
    """Refuse ``extract.layers`` beyond any model's depth (where it is known before loading), or
    without layer 0: PM1's control reads the embeddings output."""
    if layers is None:
        return
    if 0 not in layers:
        raise ConfigError(
            f"extract.layers: {layers} lacks layer 0 (the embeddings output, which PM1's control "
            "reads); add 0"
        )
    for model in depths:
        check_layers("extract.layers", model, layers, depths)


def resolve_config(config: Mapping[str, Any], schema: dict[str, Any] | None = None) -> dict:
    """Validate, fill defaults, resolve ``null`` model/task choices, and check cross-references.

    Checked before any job: each model's and task's keys against its source and type (the tasks
    module's own spec check included), local model folders and task files (which must load, every
    item with two choices or more), the optional extras a section needs, and, through each phase's
    resolver, names, poolings against ``extract.poolings``, layers against every model's depth
    and the files a section names. Raises ConfigError naming the first bad key and what is allowed.
    """
    data = validate_schema(config, schema)
    _check_model_sources(data["models"])
    _check_task_sources(data["tasks"])
    _check_local_models(data["models"])
    for name, spec in data["tasks"].items():
        _check_task_keys(name, spec)
    if data["tracking"]["wandb"] is not None:
        check_extra("tracking.wandb", "wandb", "tracking")
    depths = {name: model_depth(spec) for name, spec in data["models"].items()}
    _check_extract_layers(data["extract"]["layers"], depths)
    for resolver in RESOLVERS:
        resolver(data, depths)
    for name, spec in data["tasks"].items():
        _check_task_files(name, spec)
    return data


def load_config(path: str | os.PathLike[str]) -> dict:
    """Read a YAML configuration file strictly (one value per key) and resolve it."""
    check_config_file(path)
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    return resolve_config(raw)
