"""Branch 2C, patching_layers: the effect of patching each layer at each position.

For every prompt pair, two sweeps over all ``(layer, position)`` cells, each run by
:func:`actspace.methods.patching.patched_logits` as batched forwards (one row per cell):

- **denoising**: the clean run's residual stream is written into the corrupted run at one cell.
  Recovery is ``(patched - corrupted) / (clean - corrupted)`` of the logit difference
  ``logit(clean answer) - logit(corrupted answer)`` at the final position; the answer *changes*
  when the patched difference is positive (the clean answer wins).
- **noising**: the corrupted run's residual stream is written into the clean run. Its effect is
  ``(clean - patched) / (clean - corrupted)``, the share of the clean logit difference destroyed;
  the answer changes when the patched difference is negative.

Both are 1 for a cell that carries everything that separates the prompts and 0 for one that
carries nothing. Prompts of different lengths are aligned by their offset from the final token
(0 = final token, -1 = the token before, ...), and also by role: ``diff`` (the token where the
prompts differ) and ``final``. Aggregates use the pairs the model gets right on both prompts.

The heatmaps and curves describe all those pairs. The headline is a held-out test: the usable
pairs are split as PM3 splits them (:func:`actspace.methods.patching.grouped_parts`: seeded, every
group of pairs about one entity on one side), the strongest denoising cell is chosen on the
selection part and its change rate and recovery are reported on the held-out part.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from actspace.core.criteria import held_out_record
from actspace.core.groups import n_groups, pair_group
from actspace.core.progress import Progress
from actspace.core.resampling import mean_ci
from actspace.lm.models import residual_blocks
from actspace.methods.patching import (
    PromptPair,
    encode_pairs,
    exact_proportion_ci,
    grouped_parts,
    patched_logits,
    selectable_layers,
)

Direction = Literal["denoising", "noising"]
DIRECTIONS: tuple[Direction, ...] = ("denoising", "noising")
ROLES: tuple[str, ...] = ("diff", "final")

EFFECT_RULES = {
    "denoising": "(patched - corrupted) / (clean - corrupted), clean activations into the "
    "corrupted run; the answer changes when logit(clean) > logit(corrupted) after patching",
    "noising": "(clean - patched) / (clean - corrupted), corrupted activations into the clean "
    "run; the answer changes when logit(clean) < logit(corrupted) after patching",
}


@dataclass
class PairSweep:
    """One pair's logit differences in every cell (``[layers, positions]``, float)."""

    id: str
    n_tokens: int
    diff_position: int
    clean_diff: float
    corrupted_diff: float
    denoised: np.ndarray  # corrupted run, patched with clean activations
    noised: np.ndarray  # clean run, patched with corrupted activations
    group: str | None = None  # core.groups.pair_group; None: the pair is its own group

    @property
    def usable(self) -> bool:
        """The model prefers the clean answer on the clean prompt and the other on the other."""
        return self.clean_diff > 0 > self.corrupted_diff

    def effect(self, direction: Direction) -> np.ndarray:
        """Normalised effect per cell: recovery (denoising) or destruction (noising)."""
        span = self.clean_diff - self.corrupted_diff
        if span == 0:
            return np.full_like(self.denoised, np.nan)
        if direction == "denoising":
            return (self.denoised - self.corrupted_diff) / span
        return (self.clean_diff - self.noised) / span

    def changed(self, direction: Direction) -> np.ndarray:
        """Whether the answer changes in each cell."""
        return self.denoised > 0 if direction == "denoising" else self.noised < 0


def _cells(n_tokens: int, layers: Sequence[int]) -> tuple[list[int], list[int]]:
    """Row layers and positions for every (layer, position) cell, layer-major."""
    row_layers = [layer for layer in layers for _ in range(n_tokens)]
    row_positions = [position for _ in layers for position in range(n_tokens)]
    return row_layers, row_positions


def _logit_diff(logits: torch.Tensor, good: int, bad: int) -> np.ndarray:
    return (logits[..., good] - logits[..., bad]).numpy().astype(float)


def sweep_pairs(
    model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[PromptPair],
    *,
    layers: Sequence[int] | None,
    max_batch: int | None,
    progress: Progress | None = None,
) -> tuple[list[PairSweep], list[int], dict[str, int]]:
    """Denoise and noise every pair at every ``(layer, position)``; ``layers`` None: 0..L.

    Per pair and direction: the source prompt runs once with every layer captured and the target
    prompt runs as batches of up to ``max_batch`` patched rows (one row per cell, plus one
    unpatched row for the target's own logit difference). ``progress`` (a
    :class:`~actspace.core.progress.Progress`) counts pairs.
    """
    n_blocks = len(residual_blocks(model))
    layer_list = list(range(n_blocks + 1)) if layers is None else sorted({int(k) for k in layers})
    bad = [k for k in layer_list if not 0 <= k <= n_blocks]
    if bad or not layer_list:
        raise ValueError(f"layers must lie in 0..{n_blocks} (0 = embeddings), got {layer_list}")
    encoded, skipped = encode_pairs(tokenizer, pairs)
    sweeps: list[PairSweep] = []
    if progress is not None:
        progress.set_total(len(encoded))
    for pair in encoded:
        n_tokens = len(pair.clean_ids)
        row_layers, row_positions = _cells(n_tokens, layer_list)
        shape = (len(layer_list), n_tokens)
        good, wrong = pair.clean_token, pair.corrupted_token
        denoise = patched_logits(
            model,
            pair.clean_ids,
            pair.corrupted_ids,
            [None, *row_layers],
            [None, *row_positions],
            max_batch=max_batch,
        )
        noise = patched_logits(
            model,
            pair.corrupted_ids,
            pair.clean_ids,
            [None, *row_layers],
            [None, *row_positions],
            max_batch=max_batch,
        )
        denoised = _logit_diff(denoise.patched, good, wrong)
        noised = _logit_diff(noise.patched, good, wrong)
        sweeps.append(
            PairSweep(
                id=pair.pair.id,
                n_tokens=n_tokens,
                diff_position=pair.diff_position,
                clean_diff=float(noised[0]),
                corrupted_diff=float(denoised[0]),
                denoised=denoised[1:].reshape(shape),
                noised=noised[1:].reshape(shape),
                group=pair_group(asdict(pair.pair)),
            )
        )
        if progress is not None:
            progress.update()
    return sweeps, layer_list, skipped


def _mean_and_ci(values: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    mean = float(finite.mean()) if finite.size else math.nan
    ci = (
        list(mean_ci(finite, n_resamples=n_bootstrap, seed=seed))
        if finite.size >= 2
        else [math.nan, math.nan]
    )
    return {"mean": mean, "ci": ci, "n": int(finite.size)}


def _rate_and_ci(flags: np.ndarray) -> dict[str, Any]:
    flags = np.asarray(flags, dtype=bool)
    n = int(flags.size)
    return {
        "rate": float(flags.mean()) if n else math.nan,
        "ci": exact_proportion_ci(int(flags.sum()), n),
        "n": n,
    }


def _aligned(sweeps: Sequence[PairSweep], values: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Stack per-pair ``[layers, n_tokens]`` arrays into ``[pairs, layers, width]``, aligned at
    the final token (column ``width - 1``); missing positions are NaN."""
    n_layers = values[0].shape[0] if values else 0
    out = np.full((len(values), n_layers, width), np.nan)
    for i, (sweep, value) in enumerate(zip(sweeps, values, strict=True)):
        out[i, :, width - sweep.n_tokens :] = value
    return out


def _role_column(sweep: PairSweep, role: str) -> int:
    return sweep.diff_position if role == "diff" else sweep.n_tokens - 1


def strongest_cell(
    change_rate: np.ndarray, effect: np.ndarray, layers: Sequence[int], selectable: Sequence[int]
) -> tuple[int, int]:
    """Indices ``(layer_index, column)`` of the selectable-layer cell with the highest change
    rate; ties go to the higher mean effect, then to the lower layer and the later column."""
    best: tuple[float, float, int, int] | None = None
    cell = (-1, -1)
    for j, layer in enumerate(layers):
        if layer not in selectable:
            continue
        for c in range(change_rate.shape[1]):
            rate = change_rate[j, c]
            if not np.isfinite(rate):
                continue
            eff = effect[j, c] if np.isfinite(effect[j, c]) else -math.inf
            key = (float(rate), float(eff), -layer, c)
            if best is None or key > best:
                best, cell = key, (j, c)
    if best is None:
        raise ValueError(f"no selectable layer among {list(layers)}")
    return cell


def summarise_sweeps(
    sweeps: Sequence[PairSweep],
    layers: Sequence[int],
    *,
    n_blocks: int,
    n_bootstrap: int = 1000,
    seed: int = 0,
    selection_fraction: float = 0.5,
) -> dict[str, Any]:
    """Heatmaps and by-layer curves with CIs over the usable pairs, and the held-out headline.

    The strongest cell is chosen among layers 1..L-1: layer 0 at the differing token restores the
    clean input itself and layer L at the final token is the read-out itself, so both change every
    answer by construction (they are reported as checks, never chosen). Each direction's
    ``strongest`` describes all usable pairs; the headline's cell is chosen on the selection part
    of a grouped split (``selection_fraction``, ``seed``) and measured on the held-out part
    (:func:`held_out_cell`).
    """
    if not 0.0 < selection_fraction < 1.0:
        raise ValueError(f"selection_fraction must lie in (0, 1), got {selection_fraction}")
    layers = list(layers)
    used = [s for s in sweeps if s.usable]
    width = max((s.n_tokens for s in used), default=0)
    selectable = selectable_layers(layers, n_blocks)
    out: dict[str, Any] = {
        "layers": layers,
        "selectable_layers": selectable,
        "offsets": list(range(-(width - 1), 1)) if width else [],
        "n_pairs": len(sweeps),
        "n_usable": len(used),
        "selection_fraction": selection_fraction,
        "directions": {},
    }
    if not used:
        reason = (
            "no pair where the model prefers the clean answer on the clean prompt and "
            "the corrupted answer on the corrupted prompt; nothing to aggregate"
        )
        out.update(_no_headline(reason))
        return out
    for direction in DIRECTIONS:
        effect = _aligned(used, [s.effect(direction) for s in used], width)
        changed = _aligned(used, [s.changed(direction).astype(float) for s in used], width)
        with warnings.catch_warnings():  # all-NaN cells stay NaN, as intended
            warnings.simplefilter("ignore", category=RuntimeWarning)
            effect_map = np.nanmean(effect, axis=0)
            change_map = np.nanmean(changed, axis=0)
        count_map = np.isfinite(changed).sum(axis=0)
        curves: dict[str, Any] = {}
        for role in ROLES:
            rows = []
            for j, layer in enumerate(layers):
                eff = np.array([s.effect(direction)[j, _role_column(s, role)] for s in used])
                chg = np.array([s.changed(direction)[j, _role_column(s, role)] for s in used])
                rows.append(
                    {
                        "layer": layer,
                        "effect": _mean_and_ci(eff, n_bootstrap, seed),
                        "change": _rate_and_ci(chg),
                    }
                )
            curves[role] = rows
        j, c = strongest_cell(change_map, effect_map, layers, selectable)
        out["directions"][direction] = {
            "effect_rule": EFFECT_RULES[direction],
            "effect_heatmap": effect_map.tolist(),
            "change_rate_heatmap": change_map.tolist(),
            "pairs_per_cell": count_map.tolist(),
            "by_layer": curves,
            "strongest": {
                "layer": layers[j],
                "offset": out["offsets"][c],
                "change_rate": float(change_map[j, c]),
                "effect": float(effect_map[j, c]),
                "chosen_on": "all usable pairs (descriptive; the headline's cell is chosen on "
                "the selection part)",
            },
        }
    out.update(
        held_out_cell(
            sweeps,
            layers,
            selectable=selectable,
            width=width,
            selection_fraction=selection_fraction,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
    )
    return out


#: How the pairs are split, in words.
SPLIT_METHOD = (
    "one seeded grouped split of the usable pairs, as PM3's: pairs that share a group "
    "(metadata.group, else the clean prompt's entity, else the clean answer) fall on one side"
)
METRIC = "denoising_change_rate_at_strongest_cell"


def _no_headline(reason: str) -> dict[str, Any]:
    return {
        "metric": METRIC,
        "value": None,
        "ci": [None, None],
        "n": 0,
        "success": None,
        "strongest_layer": None,
        "comparison": None,
        "note": reason,
        **held_out_record(False, f"no cell was chosen: {reason}"),
    }


def _part(sweeps: Sequence[PairSweep], idx: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    return {
        "n": len(idx),
        "n_groups": n_groups(groups[idx]) if len(idx) else 0,
        "ids": [sweeps[i].id for i in idx],
    }


def _denoising_maps(
    sweeps: Sequence[PairSweep], idx: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[pairs, layers, width]`` answer changes and recoveries of the pairs ``idx``."""
    part = [sweeps[i] for i in idx]
    changed = _aligned(part, [s.changed("denoising").astype(float) for s in part], width)
    effect = _aligned(part, [s.effect("denoising") for s in part], width)
    return changed, effect


def held_out_cell(
    sweeps: Sequence[PairSweep],
    layers: Sequence[int],
    *,
    selectable: Sequence[int],
    width: int,
    selection_fraction: float,
    n_bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """The headline: the denoising cell with the highest change rate on the selection part of
    the usable pairs (:func:`strongest_cell`), and its change rate (Clopper-Pearson CI) and
    recovery on the held-out part, whose groups never meet the selection part's."""
    layers = list(layers)
    groups = np.asarray([s.group if s.group is not None else s.id for s in sweeps], dtype=object)
    usable = np.flatnonzero([s.usable for s in sweeps])
    select_idx, heldout_idx, reason = grouped_parts(usable, groups, selection_fraction, seed)
    if reason:
        return _no_headline(reason)
    split = {
        "method": SPLIT_METHOD,
        "selection": _part(sweeps, select_idx, groups),
        "heldout": _part(sweeps, heldout_idx, groups),
    }
    changed, effect = _denoising_maps(sweeps, select_idx, width)
    with warnings.catch_warnings():  # all-NaN cells stay NaN, as intended
        warnings.simplefilter("ignore", category=RuntimeWarning)
        change_map, effect_map = np.nanmean(changed, axis=0), np.nanmean(effect, axis=0)
    j, c = strongest_cell(change_map, effect_map, layers, selectable)
    layer, offset = layers[j], c - (width - 1)
    held_changed, held_effect = _denoising_maps(sweeps, heldout_idx, width)
    flips, recovery = held_changed[:, j, c], held_effect[:, j, c]
    rate = _rate_and_ci(flips[np.isfinite(flips)].astype(bool))
    cell = f"layer {layer} at offset {offset} from the final token"
    return {
        "split": split,
        "strongest_layer": layer,
        "strongest_offset": offset,
        "selection_change_rate": float(change_map[j, c]),
        "selection_effect": float(effect_map[j, c]),
        "heldout_effect": _mean_and_ci(recovery, n_bootstrap, seed),
        "metric": METRIC,
        "value": rate["rate"] if rate["n"] else None,
        "ci": rate["ci"] if rate["n"] else [None, None],
        "n": rate["n"],
        "success": None,
        "metric_description": (
            f"share of held-out usable pairs whose answer flips to the clean answer when {cell} "
            "is patched (clean into corrupted); Clopper-Pearson CI; the cell has the highest "
            f"change rate on the {split['selection']['n']} selection pairs, none of which (nor "
            "any pair of their groups) is among the held-out pairs"
        ),
        "comparison": {
            "description": (
                f"normalised logit-difference recovery at the strongest cell ({cell}, chosen on "
                "the selection pairs) against no recovery, per held-out pair"
            ),
            "kind": "one_sample",
            "unit": "pair",
            "values": [float(v) for v in recovery[np.isfinite(recovery)]],
            "null_value": 0.0,
            "binary": False,
        },
        **held_out_record(
            True,
            f"the cell (layer x offset) with the highest denoising change rate on the "
            f"{split['selection']['n']} selection pairs, among layers 1..L-1; tested on the "
            f"{split['heldout']['n']} held-out pairs (a grouped split by entity, as PM3's)",
        ),
    }


def run_layer_position_sweep(
    model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[PromptPair],
    *,
    layers: Sequence[int] | None,
    max_batch: int,
    n_bootstrap: int,
    seed: int,
    selection_fraction: float = 0.5,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The experiment: sweeps, aggregates, and per-pair rows (for ``per_pair.jsonl``).

    Takes the keys of ``experiments.patching_layers`` (``layers`` None: every layer, 0..L) and
    the study's seed; ``pairs`` are ``n_pairs`` prompt pairs drawn at random (seeded).
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be positive, got {max_batch}")
    start = time.perf_counter()
    sweeps, layer_list, skipped = sweep_pairs(
        model, tokenizer, pairs, layers=layers, max_batch=max_batch, progress=progress
    )
    n_blocks = len(residual_blocks(model))
    results = summarise_sweeps(
        sweeps,
        layer_list,
        n_blocks=n_blocks,
        n_bootstrap=n_bootstrap,
        seed=seed,
        selection_fraction=selection_fraction,
    )
    results = {
        "experiment": "patching_layers",
        "n_blocks": n_blocks,
        "n_pairs_loaded": len(pairs),
        "skipped": skipped,
        "patched_forward_rows": int(sum(2 * (len(layer_list) * s.n_tokens + 1) for s in sweeps)),
        **results,
        "duration_s": round(time.perf_counter() - start, 3),
    }
    split = results.get("split") or {}
    part_of = {
        i: part for part in ("selection", "heldout") for i in split.get(part, {}).get("ids", [])
    }
    per_pair = [
        {
            "id": s.id,
            "group": s.group,
            "split": part_of.get(s.id),
            "n_tokens": s.n_tokens,
            "diff_position": s.diff_position,
            "clean_logit_diff": s.clean_diff,
            "corrupted_logit_diff": s.corrupted_diff,
            "usable": s.usable,
            "denoised_logit_diff": s.denoised.tolist(),
            "noised_logit_diff": s.noised.tolist(),
        }
        for s in sweeps
    ]
    return results, per_pair


def figure_data(results: dict[str, Any]) -> dict[str, Any]:
    """What the figures step draws: the layer-by-position heatmaps and the by-layer curves."""
    return {
        "experiment": "patching_layers",
        "layers": results["layers"],
        "offsets": results["offsets"],
        "heatmaps": {
            d: {
                "effect": v["effect_heatmap"],
                "change_rate": v["change_rate_heatmap"],
            }
            for d, v in results["directions"].items()
        },
        "curves": {
            d: {
                role: {
                    "layer": [r["layer"] for r in rows],
                    "effect": [r["effect"]["mean"] for r in rows],
                    "effect_ci": [r["effect"]["ci"] for r in rows],
                    "change_rate": [r["change"]["rate"] for r in rows],
                    "change_rate_ci": [r["change"]["ci"] for r in rows],
                }
                for role, rows in v["by_layer"].items()
            }
            for d, v in results["directions"].items()
        },
    }


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_markdown(results: dict[str, Any]) -> str:
    """A person's report: the strongest cells and the by-layer curves at the two roles."""
    lines = [
        "# patching_layers: layer-by-position activation patching",
        "",
        f"- Model: `{results.get('model', 'n/a')}` ({results['n_blocks']} blocks; layer k is the "
        "residual stream after k blocks, 0 = embeddings)",
        f"- Pairs: {results['n_pairs']} encoded of {results['n_pairs_loaded']} loaded, "
        f"{results['n_usable']} right on both prompts and used; skipped: "
        f"{ {k: v for k, v in results['skipped'].items() if v} or 'none' }",
        f"- Patched rows: {results['patched_forward_rows']} in batched forwards; "
        f"{_fmt(results['duration_s'])} s",
    ]
    if not results["directions"]:
        lines += [f"- Note: {results['note']}", ""]
        return "\n".join(lines) + "\n"
    if results.get("split") is None:
        lines.append(f"- No held-out test: {results['selection']}")
    else:
        split = results["split"]
        lines += [
            f"- Split: {split['selection']['n']} selection pairs ({split['selection']['n_groups']} "
            f"groups) and {split['heldout']['n']} held-out pairs "
            f"({split['heldout']['n_groups']} groups); {split['method']}",
            f"- Strongest cell (denoising, chosen on the selection pairs among layers "
            f"{results['selectable_layers']}): **layer {results['strongest_layer']}, offset "
            f"{results['strongest_offset']}**, change rate {_fmt(results['selection_change_rate'])}"
            f" on the selection pairs; on the held-out pairs {_fmt(results['value'])} "
            f"[{_fmt(results['ci'][0])}, {_fmt(results['ci'][1])}] (n = {results['n']}), "
            f"recovery {_fmt(results['heldout_effect']['mean'])}",
        ]
    for direction, block in results["directions"].items():
        best = block["strongest"]
        lines += [
            "",
            f"## {direction.capitalize()}",
            "",
            f"Effect: {block['effect_rule']}.",
            "",
            f"Strongest cell over all usable pairs (descriptive): layer {best['layer']}, offset "
            f"{best['offset']} from the final token (change rate {_fmt(best['change_rate'])}, "
            f"effect {_fmt(best['effect'])}).",
            "",
            "| layer | effect at diff | 95% CI | change at diff | effect at final | 95% CI "
            "| change at final |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        diff_rows, final_rows = block["by_layer"]["diff"], block["by_layer"]["final"]
        for d, f in zip(diff_rows, final_rows, strict=True):
            lines.append(
                f"| {d['layer']} | {_fmt(d['effect']['mean'])} | "
                f"[{_fmt(d['effect']['ci'][0])}, {_fmt(d['effect']['ci'][1])}] | "
                f"{_fmt(d['change']['rate'])} | {_fmt(f['effect']['mean'])} | "
                f"[{_fmt(f['effect']['ci'][0])}, {_fmt(f['effect']['ci'][1])}] | "
                f"{_fmt(f['change']['rate'])} |"
            )
    return "\n".join(lines) + "\n"
