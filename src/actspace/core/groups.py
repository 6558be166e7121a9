"""Which items share a group, so that no split puts two of them on both sides.

Items that share a group are not independent: two facts about one entity, ``a+b`` and ``b+a``,
two HellaSwag endings written from one source video. A probe trained on one and tested on the
other is tested on what it has already seen, and an interval that counts them as two units is too
narrow. Each item's group comes from its ``metadata`` (as the task files and the activation
store's ``scores.jsonl`` keep it); an item with nothing to share is its own group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def item_group(row: Mapping[str, Any]) -> str:
    """The group of one task item (a row of ``{task}.jsonl`` or of a store's ``scores.jsonl``).

    In order: an explicit ``metadata.group``; the entity of a built-in fact; the unordered
    operands of a built-in sum (``a+b`` and ``b+a`` together); HellaSwag's ``source_id``;
    otherwise the item's own id (MMLU and TruthfulQA items are their own groups).
    """
    meta = row.get("metadata") or {}
    if meta.get("group") is not None:
        return f"group:{meta['group']}"
    if meta.get("entity") is not None:
        return f"entity:{meta['entity']}"
    if meta.get("operands") is not None:
        return "operands:" + ",".join(str(x) for x in sorted(meta["operands"]))
    if meta.get("source_id") is not None:
        return f"source:{meta['source_id']}"
    return f"item:{row.get('id')}"


def pair_group(pair: Mapping[str, Any]) -> str:
    """The group of a clean/corrupted prompt pair: its ``metadata.group``, else the entity of
    its clean prompt (``metadata.clean_entity``), else its clean answer (pairs about one fact)."""
    meta = pair.get("metadata") or {}
    if meta.get("group") is not None:
        return f"group:{meta['group']}"
    if meta.get("clean_entity") is not None:
        return f"entity:{meta['clean_entity']}"
    return f"answer:{pair.get('clean_answer')}"


def store_groups(store: Any) -> np.ndarray:
    """One group label per item of an activation store, from its ``scores()`` rows; every item
    its own group when the store keeps no scores (a synthetic store in a test)."""
    scores = getattr(store, "scores", None)
    if scores is None:
        n = getattr(store, "n_items", None)
        n = int(n) if n is not None else int(store.layer(0).shape[0])
        return np.array([f"item:{i}" for i in range(n)])
    return np.array([item_group(row) for row in scores()])


def n_groups(groups: Sequence[Any] | np.ndarray) -> int:
    """How many distinct groups."""
    return int(np.unique(np.asarray(groups)).size)
