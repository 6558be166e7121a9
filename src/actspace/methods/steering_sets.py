"""The texts behavior_edit steers with: contrast pairs, and the sets shipped for real models.

Contrast sets are JSONL rows ``{id, attribute, polarity, text, pair}``
(:func:`load_contrast_pairs`); neutral prompts are rows ``{id, prompt}``. Two built-in choices fill
``experiments.behavior_edit.attribute_sets`` and ``prompts`` when they are null
(``builtin_sets``):

- ``world``: the synthetic world's ``results/world/attributes.jsonl`` and
  ``neutral_prompts.jsonl``, whose attributes are the marker words the built-in organisms were
  trained on;
- ``english``: real-English sets shipped in the package (``actspace/data/steering/``, written for
  actspace, MIT like the project; :func:`english_sets` gives their paths, source and licence);
- ``auto``: ``world`` for a built-in organism, ``english`` for any other model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from actspace.core.io import read_jsonl
from actspace.world.attributes import ATTRIBUTES

POLARITIES = ("positive", "negative")
BUILTIN_SETS = ("auto", "world", "english")


# ---------------------------------------------------------------------------------- the pairs
@dataclass(frozen=True)
class ContrastPair:
    """One sentence with (``positive``) and without (``negative``) an attribute."""

    id: str
    attribute: str
    positive: str
    negative: str


def load_contrast_pairs(path: str | os.PathLike[str]) -> dict[str, list[ContrastPair]]:
    """Read ``attributes.jsonl`` into contrast pairs per attribute.

    Rows are ``{id, attribute, polarity, text}`` with an optional ``pair`` key joining the two
    versions of one sentence; without it the k-th positive and the k-th negative row of an
    attribute form a pair. A ValueError names the first bad row.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"attribute sets file not found: {path}")
    by_attribute: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for number, row in enumerate(read_jsonl(path), start=1):
        where = f"{path}: row {number}"
        for key in ("id", "attribute", "polarity", "text"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{where} lacks the string field {key!r}")
        if row["attribute"] not in ATTRIBUTES:
            raise ValueError(
                f"{where}: attribute {row['attribute']!r} is not one of {', '.join(ATTRIBUTES)}"
            )
        if row["polarity"] not in POLARITIES:
            raise ValueError(f"{where}: polarity {row['polarity']!r} is not positive or negative")
        sides = by_attribute.setdefault(row["attribute"], {"positive": [], "negative": []})
        sides[row["polarity"]].append((str(row.get("pair", "")), row["text"]))
    out: dict[str, list[ContrastPair]] = {}
    for attribute, sides in by_attribute.items():
        positive, negative = sides["positive"], sides["negative"]
        if all(key for key, _ in positive + negative):
            neg_by_key = dict(negative)
            pairs = [
                ContrastPair(key, attribute, text, neg_by_key[key])
                for key, text in positive
                if key in neg_by_key
            ]
        else:
            pairs = [
                ContrastPair(f"{attribute}-{k:04d}", attribute, pos, neg)
                for k, ((_, pos), (_, neg)) in enumerate(zip(positive, negative, strict=False))
            ]
        if len(pairs) < 2:
            raise ValueError(f"{path}: attribute {attribute!r} has fewer than 2 contrast pairs")
        out[attribute] = pairs
    if not out:
        raise ValueError(f"{path} holds no attribute rows")
    return out


# ---------------------------------------------------------------------------- the shipped sets
@dataclass(frozen=True)
class EnglishSets:
    """The real-English contrast sets and neutral prompts shipped in the package, with what
    ``sources.json`` says of each file (``description``, ``source``, ``licence``)."""

    attribute_sets: Path
    prompts: Path
    about: dict[str, dict[str, Any]]

    def licence(self, path: Path) -> str:
        """The licence of one of the two files."""
        return str(self.about[Path(path).name]["licence"])


def english_sets() -> EnglishSets:
    """Where the shipped English sets are, and their source and licence."""
    folder = Path(str(resources.files("actspace") / "data" / "steering"))
    about = json.loads((folder / "sources.json").read_text(encoding="utf-8"))
    sets = EnglishSets(folder / "attributes.jsonl", folder / "neutral_prompts.jsonl", about)
    for path in (sets.attribute_sets, sets.prompts):
        if not path.is_file() or not {"source", "licence"} <= set(about.get(path.name, {})):
            raise ValueError(f"the installed package lacks {path} or its source and licence")
    return sets


def resolve_builtin_sets(kind: str, model_source: str) -> str:
    """``auto`` -> ``world`` for a built-in organism, ``english`` for a hub or local model."""
    if kind not in BUILTIN_SETS:
        raise ValueError(f"unknown builtin_sets {kind!r}; allowed: {', '.join(BUILTIN_SETS)}")
    if kind != "auto":
        return kind
    return "world" if model_source == "organism" else "english"


def builtin_files(builtin_sets: str, model_source: str) -> dict[str, str] | None:
    """The shipped English ``attribute_sets`` and ``prompts`` files when ``builtin_sets`` (auto,
    world or english) picks them for a model of ``model_source``; None for the world's files."""
    if resolve_builtin_sets(builtin_sets, model_source) == "world":
        return None
    sets = english_sets()
    return {"attribute_sets": str(sets.attribute_sets), "prompts": str(sets.prompts)}
