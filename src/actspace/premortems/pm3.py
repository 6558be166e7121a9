"""Pre-mortem 3: activation patching on clean/corrupted prompt pairs.

:func:`run_pm3` draws ``n_pairs`` pairs at random (seeded) and patches every layer of each pair at
both positions, the differing token and the final token (two runs of
:func:`actspace.methods.patching.run_patching_layers`). :func:`pm3_from_patching` is the
statistics alone (no model; tested by hand): it splits the usable pairs into a selection part and
a held-out part with every group (pairs about one entity) on one side, and decides twice at the
configured position.

- The plan's rule: the layer with the highest change rate on the selection part among ``1..L-1``,
  its change rate measured on the held-out part.
- The controlled rule: the same choice among the interior layers only (``layer_band``, depth
  fractions of the blocks). At the differing token layer 1 is nearly the clean input and at the
  final token layer ``L-1`` is nearly the clean read-out: both flip nearly every pair whatever the
  model computes, so a choice among all layers mostly finds them. They are reported as
  known-answer checks (they must flip nearly everything) and as the control, never as the verdict.

Both positions' by-layer curves are kept, so a reader sees where the information moves.
:func:`actspace.premortems.pm3_summary.summary_markdown` renders the record for a person.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from actspace.core.groups import n_groups
from actspace.core.progress import Progress
from actspace.core.results import now
from actspace.lm.models import residual_blocks
from actspace.methods.patching import (
    POSITIONS,
    LayerPatching,
    Position,
    PromptPair,
    band_range,
    interior_layers,
    logit_diff_recovery,
    patched_layers,
    run_patching_layers,
    sample_pairs,
    selectable_layers,
)
from actspace.premortems.common import (
    control_record,
    controlled_test,
    headline,
    no_value_headline,
)
from actspace.premortems.pm3_stats import (
    CELLS,
    POSITION_WORDS,
    baseline,
    cell_stats,
    choose_layer,
    choose_on_selection,
    grouped_parts,
    known_answer_checks,
    layer_curve,
    per_pair_rows,
    runs_by_position,
)
from actspace.premortems.pm3_summary import summary_markdown

__all__ = ["choose_layer", "pm3_from_patching", "run_pm3", "summary_markdown"]

DESCRIPTION = (
    "held-out share of corrupted prompts whose answer flips to the clean answer when one layer, "
    "chosen on the selection pairs, is patched from the clean run"
)
FLIP_RULE = (
    "an answer flips when, in the patched corrupted run, logit(clean answer token) > "
    "logit(corrupted answer token) at the final position (a two-way comparison)"
)
RECOVERY_RULE = (
    "per pair (patched - corrupted) / (clean - corrupted) of the logit difference "
    "logit(clean answer) - logit(corrupted answer) at the final position, then averaged"
)
CI_METHOD = (
    "percentile bootstrap that resamples groups of pairs (pairs about one entity), widened to "
    "contain the Clopper-Pearson exact interval"
)
SPLIT_METHOD = (
    "one seeded grouped split of the usable pairs: pairs that share a group (metadata.group, "
    "else the clean prompt's entity, else the clean answer) lie on one side"
)
CONTROLLED_STATISTIC = "held-out change rate at the interior layer chosen on the selection half"


# --- the pre-mortem ------------------------------------------------------------------------------


def _parts(
    run: LayerPatching, groups: np.ndarray, select_idx: np.ndarray, heldout_idx: np.ndarray
) -> dict[str, Any]:
    """The ``selection`` and ``heldout`` records: sizes, groups and pair ids."""
    return {
        part: {
            "n": len(idx),
            "n_groups": n_groups(groups[idx]),
            "ids": [run.ids[i] for i in idx],
        }
        for part, idx in (("selection", select_idx), ("heldout", heldout_idx))
    }


def _measured_record(
    run: LayerPatching,
    recovery: np.ndarray,
    checks: Sequence[Mapping[str, Any]],
    select_idx: np.ndarray,
    heldout_idx: np.ndarray,
    groups: np.ndarray,
    *,
    selectable: Sequence[int],
    interior: Sequence[int],
    position: str,
    threshold: float,
    started: float,
    stats: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The headline of a measured PM3 at ``position``, and its plan and interior cells.

    The plan's layer is chosen on the selection pairs among ``selectable`` (1..L-1), the
    controlled one among ``interior``; both are measured on the held-out pairs. The control is
    the known-answer cell at ``position``.
    """
    plan_layer = choose_on_selection(run, recovery, select_idx, selectable)
    interior_layer = choose_on_selection(run, recovery, select_idx, interior)
    plan_cell = cell_stats(run, plan_layer, heldout_idx, groups, recovery, **stats)
    interior_cell = cell_stats(run, interior_layer, heldout_idx, groups, recovery, **stats)
    own = next(c for c in checks if c["position"] == position)
    control = control_record(
        f"known-answer cell {CELLS[position]}",
        f"held-out change rate of the cell {CELLS[position]} (layer {own['layer']} at the "
        f"{POSITION_WORDS[position]}), expected to flip nearly every pair whatever the model "
        "computes",
        own.get("change_rate"),
        own.get("ci", [None, None]),
    )
    controlled = controlled_test(
        CONTROLLED_STATISTIC, interior_cell["change_rate"], interior_cell["ci"], threshold
    )
    record = headline(
        "pm3",
        value=plan_cell["change_rate"],
        ci=plan_cell["ci"],
        ci_level=stats["level"],
        threshold=threshold,
        n=len(heldout_idx),
        started=started,
        date=now(),
        description=DESCRIPTION,
        control=control,
        controlled=controlled,
    )
    return record, plan_cell, interior_cell


def _details(
    runs: Mapping[str, LayerPatching],
    *,
    position: str,
    plan_cell: Mapping[str, Any] | None,
    interior_cell: Mapping[str, Any] | None,
    checks: Sequence[Mapping[str, Any]],
    selectable: Sequence[int],
    interior: Sequence[int],
    layer_band: Sequence[float],
    n_blocks: int,
    curves: Mapping[str, Any],
    parts: Mapping[str, Any],
    groups: np.ndarray,
    usable_idx: np.ndarray,
    select_idx: np.ndarray,
) -> dict[str, Any]:
    """What a PM3 record keeps after its headline: the cells, checks, curves and pairs."""
    run = runs[position]
    layers = list(run.layers)
    usable = np.zeros(len(run.ids), dtype=bool)
    usable[usable_idx] = True
    first, last = band_range(layer_band, n_blocks)
    return {
        "position": position,
        "positions": list(runs),
        "chosen_layer": plan_cell["layer"] if plan_cell else None,
        "interior_layer": interior_cell["layer"] if interior_cell else None,
        "plan": plan_cell,
        "interior": interior_cell,
        "recovery": None
        if interior_cell is None
        else {
            "layer": interior_cell["layer"],
            "value": interior_cell["recovery_mean"],
            "ci": interior_cell["recovery_ci"],
            "rule": RECOVERY_RULE,
        },
        "known_answer_checks": checks,
        "layers": layers,
        "selectable_layers": selectable,
        "layer_band": [float(x) for x in layer_band],
        "band_layers": [first, last],
        "interior_layers": interior,
        "n_blocks": int(n_blocks),
        "curves": curves,
        **parts,
        "baseline": baseline(
            run, len(usable_idx), n_groups(groups[usable_idx]) if len(usable_idx) else 0
        ),
        "skipped": dict(run.skipped),
        "n_multi_token_answers": int(run.n_multi_token_answers),
        "flip_rule": FLIP_RULE,
        "recovery_rule": RECOVERY_RULE,
        "ci_method": CI_METHOD,
        "split_method": SPLIT_METHOD,
        "per_pair": per_pair_rows(runs, groups, usable, {int(i) for i in select_idx}),
    }


def pm3_from_patching(
    runs: LayerPatching | Mapping[str, LayerPatching],
    *,
    n_blocks: int,
    layer_band: Sequence[float],
    n_bootstrap: int,
    seed: int,
    threshold: float,
    selection_fraction: float,
    position: str | None = None,
    level: float = 0.95,
    started: float | None = None,
) -> dict[str, Any]:
    """PM3's record from per-pair patching results (no model needed; tested by hand).

    ``runs`` maps each patched position to its :class:`LayerPatching` (one run alone is taken at
    its own position); ``position`` is the one the verdicts read. Uses the pairs the model gets
    right on both prompts, split by :func:`grouped_parts` (``seed``); the plan's verdict and the
    controlled one are as the module says, the control is the known-answer cell at ``position``.
    ``started`` is the ``time.perf_counter()`` reading at the start of the run (default: now).
    """
    started = time.perf_counter() if started is None else started
    if not 0.0 < selection_fraction < 1.0:
        raise ValueError(f"selection_fraction must lie in (0, 1), got {selection_fraction}")
    runs, position = runs_by_position(runs, position)
    run = runs[position]
    layers = list(run.layers)
    selectable = selectable_layers(layers, n_blocks)
    if not selectable:
        raise ValueError(
            f"no selectable layer among {layers}: the choice is made over layers 1..{n_blocks - 1}"
        )
    interior = interior_layers(layers, n_blocks, layer_band, position)
    if not interior:
        first, last = band_range(layer_band, n_blocks)
        raise ValueError(
            f"layer_band {list(layer_band)} (layers {first}..{last} of {n_blocks} blocks) holds "
            f"no patched layer other than the known-answer cell at the {position} position; "
            f"patched: {layers}"
        )
    groups = np.asarray(run.groups if run.groups is not None else run.ids, dtype=object)
    usable = np.logical_and.reduce([r.usable for r in runs.values()])
    idx = np.flatnonzero(usable)
    recoveries = {
        name: logit_diff_recovery(r.patched_diff, r.clean_diff, r.corrupted_diff)
        for name, r in runs.items()
    }
    select_idx, heldout_idx, reason = grouped_parts(idx, groups, selection_fraction, seed)
    stats = {"n_bootstrap": n_bootstrap, "seed": seed, "level": level}
    curves = {
        name: layer_curve(
            r,
            idx,
            select_idx,
            heldout_idx,
            groups,
            recoveries[name],
            n_blocks=n_blocks,
            layer_band=layer_band,
            **stats,
        )
        for name, r in runs.items()
    }
    checks = known_answer_checks(runs, heldout_idx, groups, recoveries, n_blocks=n_blocks, **stats)
    parts = _parts(run, groups, select_idx, heldout_idx)
    plan_cell: dict[str, Any] | None = None
    interior_cell: dict[str, Any] | None = None
    if reason:
        record = no_value_headline(
            "pm3",
            reason=reason,
            threshold=threshold,
            ci_level=level,
            started=started,
            date=now(),
            description=DESCRIPTION,
        )
    else:
        record, plan_cell, interior_cell = _measured_record(
            run,
            recoveries[position],
            checks,
            select_idx,
            heldout_idx,
            groups,
            selectable=selectable,
            interior=interior,
            position=position,
            threshold=threshold,
            started=started,
            stats=stats,
        )
    record.update(
        _details(
            runs,
            position=position,
            plan_cell=plan_cell,
            interior_cell=interior_cell,
            checks=checks,
            selectable=selectable,
            interior=interior,
            layer_band=layer_band,
            n_blocks=n_blocks,
            curves=curves,
            parts=parts,
            groups=groups,
            usable_idx=idx,
            select_idx=select_idx,
        )
    )
    return record


class _BothPositions:
    """A progress that counts each pair once per position, so two runs fill one bar."""

    def __init__(self, progress: Progress, passes: int) -> None:
        self._progress, self._passes, self._set = progress, passes, False

    def set_total(self, total: int) -> None:
        if not self._set:
            self._progress.set_total(total * self._passes)
            self._set = True

    def update(self, n: int = 1, checkpoint: str | None = None) -> None:
        self._progress.update(n, checkpoint)


def run_pm3(
    model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[PromptPair],
    *,
    position: Position,
    layers: Sequence[int] | None,
    n_pairs: int,
    layer_band: Sequence[float],
    selection_fraction: float,
    n_bootstrap: int,
    threshold: float,
    seed: int,
    max_batch: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Pre-mortem PM3: patch every layer at both positions, decide at ``position``.

    The keywords are the keys of ``premortems.pm3`` (and the study's seed): ``n_pairs`` pairs are
    drawn at random (seeded by ``seed``) from ``pairs``; ``layers`` None patches every layer, and
    a given list is patched with the two known-answer layers (1 and L-1) added, so that the checks
    are always measured. ``max_batch`` bounds the rows of one patched forward (memory);
    ``progress`` counts pairs at each position. Returns the results dict (the pre-mortem record;
    ``per_pair`` holds the per-pair logit differences, which a caller may write to a file).
    """
    start = time.perf_counter()
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    sample = sample_pairs(pairs, n_pairs, seed)
    n_blocks = len(residual_blocks(model))
    patched = patched_layers(layers, n_blocks)
    counter = _BothPositions(progress, len(POSITIONS)) if progress is not None else None
    runs = {
        name: run_patching_layers(
            model,
            tokenizer,
            sample,
            layers=patched,
            position=name,  # type: ignore[arg-type]
            max_batch=max_batch,
            progress=counter,  # type: ignore[arg-type]
        )
        for name in POSITIONS
    }
    results = pm3_from_patching(
        runs,
        position=position,
        n_blocks=n_blocks,
        layer_band=layer_band,
        n_bootstrap=n_bootstrap,
        seed=seed,
        threshold=threshold,
        selection_fraction=selection_fraction,
        started=start,
    )
    results["n_pairs_loaded"] = len(sample)
    results["n_pairs_in_file"] = len(pairs)
    results["duration_s"] = round(time.perf_counter() - start, 3)
    return results
