"""Cross-reference checks that every phase's resolver runs before any job.

A JSON schema checks each key on its own; these check one key against another (a pooling against
the poolings extracted, layers against every model a section uses) and against the files the
configuration names. Each raises :class:`~actspace.core.schema.ConfigError` with one line naming
the key and what is allowed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from actspace.core.schema import ConfigError, check_layers
from actspace.plan import RESULTS

#: Where the synthetic world's files are (written by the prepare phase).
WORLD = f"{RESULTS}/world"
#: The world's files that the pre-mortems and 2C read by default; a configuration may name them
#: too, and a fresh study does not have them yet, so they are not checked for existence.
WORLD_FILES = {
    "pairs": f"{WORLD}/prompt_pairs.jsonl",
    "attribute_sets": f"{WORLD}/attributes.jsonl",
    "prompts": f"{WORLD}/neutral_prompts.jsonl",
}
#: What PM3's and patching_layers' prompt pairs file is, in words.
PAIRS_FILE = "a JSONL file of prompt pairs {id, clean, corrupted, clean_answer, corrupted_answer}"


def check_pooling(key: str, pooling: str, config: Mapping[str, Any]) -> None:
    """Refuse a section's pooling that the extraction does not write into the stores."""
    extracted = list(config["extract"]["poolings"])
    if pooling not in extracted:
        raise ConfigError(
            f"{key}: pooling {pooling!r} is not extracted (extract.poolings: "
            f"{', '.join(extracted)}); use one of those, or add {pooling} to extract.poolings"
        )


def check_section_layers(
    key: str,
    models: Iterable[str],
    layers: int | list[int] | None | str,
    depths: Mapping[str, int | None],
    *,
    lowest: int = 0,
) -> None:
    """Refuse layers (an index, a list; None or 'auto' for none) beyond any of ``models``."""
    if layers is None or isinstance(layers, str):
        return
    chosen = [layers] if isinstance(layers, int) else list(layers)
    for model in models:
        check_layers(key, model, chosen, depths, lowest=lowest)


def check_stored_layers(key: str, layers: Any, config: Mapping[str, Any]) -> None:
    """Refuse a section's explicit layers (an index, a list; None or 'auto' for none) that
    ``extract.layers`` does not store: a step reads them from the activation stores."""
    stored = config["extract"]["layers"]
    if stored is None or layers is None or isinstance(layers, str):
        return
    chosen = [layers] if isinstance(layers, int) else list(layers)
    missing = [layer for layer in chosen if layer not in stored]
    if missing:
        raise ConfigError(
            f"{key}: layer {missing[0]} is not stored (extract.layers: {list(stored)}); add it "
            "to extract.layers or choose a stored layer"
        )


def check_file(key: str, path: str | os.PathLike[str], what: str) -> None:
    """Refuse a configured input file that does not exist or is not a file (the world's files,
    written by the workflow, are not checked)."""
    if os.path.normpath(path) in {os.path.normpath(p) for p in WORLD_FILES.values()}:
        return
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{key}: {str(path)!r} is a folder; expected {what}")
    if not target.is_file():
        where = "" if target.is_absolute() else f" (relative to {os.getcwd()})"
        raise ConfigError(f"{key}: file {str(path)!r} not found{where}; expected {what}")


def check_model_folder(key: str, path: str | os.PathLike[str]) -> None:
    """Refuse a local model path that is not a folder holding a config.json."""
    target = Path(path)
    if not target.exists():
        where = "" if target.is_absolute() else f" (relative to {os.getcwd()})"
        raise ConfigError(
            f"{key}: folder {str(path)!r} not found{where}; expected a model folder written by "
            "save_pretrained (config.json and the weights)"
        )
    if not target.is_dir():
        raise ConfigError(
            f"{key}: {str(path)!r} is a file; expected a model folder written by save_pretrained "
            "(config.json and the weights)"
        )
    if not (target / "config.json").is_file():
        raise ConfigError(
            f"{key}: folder {str(path)!r} has no config.json; expected a model folder written "
            "by save_pretrained (config.json and the weights)"
        )


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def check_extra(key: str, module: str, extra: str) -> None:
    """Refuse a section that needs an optional extra whose package is not installed."""
    if not installed(module):
        raise ConfigError(
            f"{key}: needs the {module} package, which is not installed; install the "
            f'"{extra}" extra (pip install -e ".[{extra}]") or remove {key}'
        )
