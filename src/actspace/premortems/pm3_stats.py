"""PM3's statistics, none of which needs a model: cells with their intervals, the grouped
selection/held-out split, the by-layer curves, the layer choice and the known-answer checks.
:mod:`actspace.premortems.pm3` assembles them into the record."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from actspace.core.resampling import cluster_bootstrap_ci
from actspace.methods.patching import (
    POSITIONS,
    LayerPatching,
    exact_proportion_ci,
    interior_layers,
    known_answer_layer,
    selectable_layers,
)
from actspace.methods.patching import (
    grouped_parts as grouped_parts,  # the split lives with patching_layers'; pm3 finds it here
)

#: A known-answer cell passes its check when it flips at least this share of held-out pairs.
KNOWN_ANSWER_RATE = 0.9
#: Where each position's known-answer cell lies.
CELLS = {"diff": "next to the input", "final": "next to the read-out"}
#: The positions in words.
POSITION_WORDS = {"diff": "differing token", "final": "final token"}


# --- small statistics ----------------------------------------------------------------------------


def mean_finite(values: np.ndarray) -> float:
    """The mean of the finite values (NaN when there are none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def cluster_ci(
    values: np.ndarray, groups: np.ndarray, n_bootstrap: int, seed: int, level: float
) -> list[float]:
    """Cluster-bootstrap interval of the mean of the finite values (NaN below two groups)."""
    values = np.asarray(values, dtype=float)
    keep = np.isfinite(values)
    if keep.sum() < 2:
        return [math.nan, math.nan]
    low, high = cluster_bootstrap_ci(
        np.mean,
        values[keep],
        groups=np.asarray(groups)[keep],
        n_resamples=n_bootstrap,
        level=level,
        seed=seed,
    )
    return [low, high]


def rate_ci(
    flips: np.ndarray, groups: np.ndarray, n_bootstrap: int, seed: int, level: float
) -> tuple[list[float], list[float], list[float]]:
    """A change rate's interval: the cluster bootstrap widened to contain the Clopper-Pearson
    exact interval (with few pairs that all flip, or none, the bootstrap collapses to a point,
    and a verdict must not PASS on such a sample by accident). Returns (interval, bootstrap,
    exact)."""
    flips = np.asarray(flips, dtype=float)
    boot = cluster_ci(flips, groups, n_bootstrap, seed, level)
    exact = exact_proportion_ci(int(flips.sum()), len(flips), level)
    if len(flips) == 0:
        return [math.nan, math.nan], boot, exact
    both = [float(np.nanmin([boot[0], exact[0]])), float(np.nanmax([boot[1], exact[1]]))]
    return both, boot, exact


def cell_stats(
    run: LayerPatching,
    layer: int,
    idx: np.ndarray,
    groups: np.ndarray,
    recovery: np.ndarray,
    *,
    n_bootstrap: int,
    seed: int,
    level: float,
) -> dict[str, Any]:
    """One (position, layer) cell on the pairs ``idx``: its change rate with :func:`rate_ci`,
    and its mean recovery with the cluster-bootstrap interval."""
    j = run.layers.index(layer)
    flips = run.flipped[idx, j].astype(float)
    ci, boot, exact = rate_ci(flips, groups[idx], n_bootstrap, seed, level)
    return {
        "position": run.position,
        "layer": int(layer),
        "n": len(idx),
        "change_rate": mean_finite(flips),
        "ci": ci,
        "ci_bootstrap": boot,
        "ci_exact": exact,
        "recovery_mean": mean_finite(recovery[idx, j]),
        "recovery_ci": cluster_ci(recovery[idx, j], groups[idx], n_bootstrap, seed, level),
        "change_rate_argmax": mean_finite(run.flipped_argmax[idx, j]),
    }


def choose_layer(
    change_rate: np.ndarray, recovery: np.ndarray, layers: Sequence[int], selectable: Sequence[int]
) -> int:
    """The selectable layer with the highest change rate; ties go to the higher mean recovery,
    then to the lower layer."""
    best: tuple[float, float, int] | None = None
    for j, layer in enumerate(layers):
        if layer not in selectable:
            continue
        rec = recovery[j] if np.isfinite(recovery[j]) else -math.inf
        key = (float(change_rate[j]), float(rec), -layer)
        if best is None or key > best:
            best = key
    if best is None:
        raise ValueError(f"no selectable layer among {list(layers)}")
    return -best[2]


# --- the split and the curves --------------------------------------------------------------------


def layer_curve(
    run: LayerPatching,
    idx: np.ndarray,
    select_idx: np.ndarray,
    heldout_idx: np.ndarray,
    groups: np.ndarray,
    recovery: np.ndarray,
    *,
    n_blocks: int,
    layer_band: Sequence[float],
    n_bootstrap: int,
    seed: int,
    level: float,
) -> list[dict[str, Any]]:
    """One position's by-layer curve: change rate and recovery over all usable pairs with their
    cluster-bootstrap intervals, and the change rate on the selection and held-out parts."""
    selectable = selectable_layers(run.layers, n_blocks)
    interior = interior_layers(run.layers, n_blocks, layer_band, run.position)
    rows = []
    for j, layer in enumerate(run.layers):
        flips = run.flipped[:, j].astype(float)
        rows.append(
            {
                "layer": layer,
                "change_rate": mean_finite(flips[idx]),
                "change_rate_ci": rate_ci(flips[idx], groups[idx], n_bootstrap, seed, level)[0],
                "recovery_mean": mean_finite(recovery[idx, j]),
                "recovery_ci": cluster_ci(recovery[idx, j], groups[idx], n_bootstrap, seed, level),
                "selection_change_rate": mean_finite(flips[select_idx]),
                "heldout_change_rate": mean_finite(flips[heldout_idx]),
                "change_rate_argmax": mean_finite(run.flipped_argmax[idx, j]),
                "patched_logit_diff_mean": mean_finite(run.patched_diff[idx, j]),
                "selectable": layer in selectable,
                "interior": layer in interior,
            }
        )
    return rows


def choose_on_selection(
    run: LayerPatching, recovery: np.ndarray, select_idx: np.ndarray, candidates: Sequence[int]
) -> int:
    """The layer among ``candidates`` with the highest change rate on the selection pairs."""
    rate = run.flipped[select_idx].mean(axis=0)
    rec = np.array([mean_finite(recovery[select_idx, j]) for j in range(len(run.layers))])
    return choose_layer(rate, rec, run.layers, candidates)


def known_answer_checks(
    runs: Mapping[str, LayerPatching],
    heldout_idx: np.ndarray,
    groups: np.ndarray,
    recoveries: Mapping[str, np.ndarray],
    *,
    n_blocks: int,
    n_bootstrap: int,
    seed: int,
    level: float,
) -> list[dict[str, Any]]:
    """The cells next to the input (layer 1, differing token) and next to the read-out (layer
    L-1, final token) on the held-out pairs; each passes when it flips nearly every pair."""
    checks = []
    for position in POSITIONS:
        layer = known_answer_layer(position, n_blocks)
        check: dict[str, Any] = {"cell": CELLS[position], "position": position, "layer": layer}
        run = runs.get(position)
        if run is None or layer not in run.layers or len(heldout_idx) == 0:
            check.update(measured=False, passed=None)
        else:
            cell = cell_stats(
                run,
                layer,
                heldout_idx,
                groups,
                recoveries[position],
                n_bootstrap=n_bootstrap,
                seed=seed,
                level=level,
            )
            check.update(cell, measured=True, passed=bool(cell["change_rate"] >= KNOWN_ANSWER_RATE))
        check["rule"] = f"held-out change rate >= {KNOWN_ANSWER_RATE}"
        checks.append(check)
    return checks


def runs_by_position(
    runs: LayerPatching | Mapping[str, LayerPatching], position: str | None
) -> tuple[dict[str, LayerPatching], str]:
    """The runs by position and the position the verdicts read; refuse runs that disagree."""
    if isinstance(runs, LayerPatching):
        runs = {runs.position: runs}
    runs = dict(runs)
    position = position or (next(iter(runs)) if len(runs) == 1 else None)
    if position not in runs:
        raise ValueError(
            f"position must be one of the runs' positions {list(runs)}, got {position}"
        )
    first = runs[position]
    for name, run in runs.items():
        if run.position != name:
            raise ValueError(f"the run given for position {name!r} patched {run.position!r}")
        if run.ids != first.ids or run.layers != first.layers:
            raise ValueError("the runs at both positions must patch the same pairs and layers")
    return runs, position


def per_pair_rows(
    runs: Mapping[str, LayerPatching], groups: np.ndarray, usable: np.ndarray, select: set[int]
) -> list[dict[str, Any]]:
    """Each pair's logit differences at both positions and the part it fell in (None: not
    usable)."""
    first = next(iter(runs.values()))
    return [
        {
            "id": first.ids[i],
            "group": str(groups[i]),
            "positions": {name: int(run.positions[i]) for name, run in runs.items()},
            "clean_logit_diff": float(first.clean_diff[i]),
            "corrupted_logit_diff": float(first.corrupted_diff[i]),
            "patched_logit_diff": {
                name: [float(x) for x in run.patched_diff[i]] for name, run in runs.items()
            },
            "usable": bool(usable[i]),
            "split": "selection" if i in select else "heldout" if usable[i] else None,
        }
        for i in range(len(first.ids))
    ]


def baseline(run: LayerPatching, n_usable: int, n_groups_usable: int) -> dict[str, Any]:
    """How the model does on the unpatched prompts."""
    return {
        "n_pairs": len(run.ids),
        "n_usable": int(n_usable),
        "n_groups_usable": int(n_groups_usable),
        "clean_accuracy": mean_finite(run.clean_diff > 0),
        "corrupted_accuracy": mean_finite(run.corrupted_diff < 0),
        "n_candidates": len(run.candidate_tokens),
        "clean_accuracy_argmax": mean_finite(run.clean_argmax_correct),
        "corrupted_accuracy_argmax": mean_finite(run.corrupted_argmax_correct),
        "clean_logit_diff_mean": mean_finite(run.clean_diff),
        "corrupted_logit_diff_mean": mean_finite(run.corrupted_diff),
    }
