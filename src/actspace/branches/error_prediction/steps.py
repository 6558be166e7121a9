"""What the three steps of branch 2B share around their computation.

Each step reads activation stores (``--stores``) and its resolved section of the configuration
(``--params``, see :mod:`actspace.core.cli`). Its run function takes the section's keys as
keyword-only arguments, so the signature says which keys a step reads; the section's ``models``
and ``tasks`` choose the stores, which reach the step as ``--stores``. Every step writes
``results.json``, ``config.json``, ``summary.md`` and ``figure_data.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actspace.core.cli import call_params
from actspace.core.groups import store_groups
from actspace.core.io import atomic_write_json, write_experiment
from actspace.core.splits import Split, correctness_split
from actspace.core.store import NamedStore, StoreLike


def run_settings(run: Callable[..., Any], args: argparse.Namespace) -> dict[str, Any]:
    """The keyword-only arguments of ``run``, from ``--params`` and the common flags.

    Every one is required: a missing key is refused naming it (the schema is the only place that
    gives defaults, and the workflow passes the resolved section).
    """
    return call_params(run, args)[1]


def store_split(
    store: StoreLike, *, n_samples: int | None, test_fraction: float, seed: int
) -> Split:
    """The training/held-out split of a store's items by correctness, with the items of one group
    (an entity, a source) on one side: the split every step of branch 2B starts from."""
    return correctness_split(
        store.correct(),
        n_samples=n_samples,
        test_fraction=test_fraction,
        seed=seed,
        groups=store_groups(store),
    )


def layer_choice(layer: int | str | None) -> int | None:
    """A configured headline layer: an index (0 = embeddings), or ``auto`` (None: chosen on the
    training items)."""
    if layer is None or layer == "auto":
        return None
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
        raise ValueError(f"layer must be a layer index (0 = embeddings) or 'auto', got {layer!r}")
    return int(layer)


def write_store_experiment(
    output_dir: Path,
    results: Mapping[str, Any],
    stores: Sequence[NamedStore],
    *,
    seed: int,
    figures: Mapping[str, Any],
    summary: str,
) -> None:
    """results.json, config.json (stores, models, tasks, settings, seed), summary.md and
    figure_data.json of a store-reading 2B experiment."""
    config = {
        "experiment": results["experiment"],
        "stores": [str(s.store.path) for s in stores],
        "models": sorted({s.model for s in stores}),
        "tasks": sorted({s.task for s in stores}),
        **results["settings"],
        "seed": seed,
    }
    atomic_write_json(Path(output_dir) / "figure_data.json", figures)
    write_experiment(output_dir, results, config, summary)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a summary table, ``n/a`` for None or NaN."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def fmt_ci(ci: Sequence[Any] | None) -> str:
    """An interval as ``[low, high]``."""
    if ci is None:
        return "[n/a, n/a]"
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"
