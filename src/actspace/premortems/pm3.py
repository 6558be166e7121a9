"""Pre-mortem 3: activation patching on clean/corrupted prompt pairs.

:func:`run_pm3` patches every layer of each pair (with the patching core,
:func:`actspace.methods.patching.run_patching_layers`), chooses one layer on a random half of the
pairs and measures on the other half how often patching it flips the corrupted answer to the clean
one. :func:`pm3_from_patching` is the statistics alone (no model; tested by hand) and
:func:`summary_markdown` renders the record for a person.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from actspace import plan
from actspace.core.progress import Progress
from actspace.core.resampling import bootstrap_ci, verdict
from actspace.core.results import now
from actspace.lm.models import residual_blocks
from actspace.methods.patching import (
    LayerPatching,
    Position,
    PromptPair,
    exact_proportion_ci,
    logit_diff_recovery,
    run_patching_layers,
    selectable_layers,
)
from actspace.premortems.common import record_name
from actspace.premortems.report import fmt, fmt_ci

FLIP_RULE = (
    "an answer flips when, in the patched corrupted run, logit(clean answer token) > "
    "logit(corrupted answer token) at the final position (a two-way comparison)"
)
RECOVERY_RULE = (
    "per pair (patched - corrupted) / (clean - corrupted) of the logit difference "
    "logit(clean answer) - logit(corrupted answer) at the final position, then averaged"
)
CI_METHOD = (
    "percentile bootstrap over held-out pairs, widened to contain the Clopper-Pearson "
    "exact interval"
)


def _ci(values: np.ndarray, n_bootstrap: int, seed: int) -> list[float]:
    """Percentile bootstrap 95% interval of the mean; NaN bounds below two observations."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return [math.nan, math.nan]
    low, high = bootstrap_ci(np.mean, values, n_resamples=n_bootstrap, seed=seed)
    return [low, high]


def _mean(values: np.ndarray) -> float:
    """The mean of the finite values (NaN when there are none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


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


def _per_layer(
    run: LayerPatching,
    idx: np.ndarray,
    recovery: np.ndarray,
    selectable: Sequence[int],
    n_bootstrap: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Change rate and recovery of every patched layer over the usable pairs ``idx``."""
    rows = []
    for j, layer in enumerate(run.layers):
        flips = run.flipped[idx, j].astype(float)
        rec = recovery[idx, j]
        rows.append(
            {
                "layer": layer,
                "change_rate": _mean(flips),
                "change_rate_ci": _ci(flips, n_bootstrap, seed),
                "recovery_mean": _mean(rec),
                "recovery_ci": _ci(rec, n_bootstrap, seed),
                "change_rate_argmax": _mean(run.flipped_argmax[idx, j]),
                "patched_logit_diff_mean": _mean(run.patched_diff[idx, j]),
                "selectable": layer in selectable,
            }
        )
    return rows


def _split(idx: np.ndarray, selection_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The usable pairs ``idx`` split at random into a selection part and a held-out part."""
    order = np.random.default_rng(seed).permutation(idx)
    n_use = len(order)
    n_select = min(max(round(n_use * selection_fraction), 1), n_use - 1) if n_use >= 2 else 0
    return np.sort(order[:n_select]), np.sort(order[n_select:])


def _select_and_test(
    run: LayerPatching,
    recovery: np.ndarray,
    select_idx: np.ndarray,
    heldout_idx: np.ndarray,
    selectable: Sequence[int],
    *,
    n_bootstrap: int,
    seed: int,
    level: float,
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Choose the layer on the selection pairs and measure it on the held-out pairs.

    Returns the chosen layer and what the ``selection`` and ``heldout`` records add.
    """
    layers = list(run.layers)
    sel_rate = run.flipped[select_idx].mean(axis=0)
    sel_rec = np.array([_mean(recovery[select_idx, j]) for j in range(len(layers))])
    selection = {
        "change_rate": {str(k): float(r) for k, r in zip(layers, sel_rate, strict=True)},
        "recovery_mean": {str(k): float(r) for k, r in zip(layers, sel_rec, strict=True)},
    }
    chosen = choose_layer(sel_rate, sel_rec, layers, selectable)
    j = layers.index(chosen)
    flips = run.flipped[heldout_idx, j]
    ci_boot = _ci(flips.astype(float), n_bootstrap, seed)
    ci_exact = exact_proportion_ci(int(flips.sum()), len(flips), level)
    heldout = {
        "change_rate": float(flips.mean()),
        "ci_bootstrap": ci_boot,
        "ci_exact": ci_exact,
        "recovery_mean": _mean(recovery[heldout_idx, j]),
        "recovery_ci": _ci(recovery[heldout_idx, j], n_bootstrap, seed),
        "change_rate_argmax": _mean(run.flipped_argmax[heldout_idx, j]),
    }
    return chosen, selection, heldout


def _baseline(run: LayerPatching, n_usable: int) -> dict[str, Any]:
    """How the model does on the unpatched prompts."""
    return {
        "n_pairs": len(run.ids),
        "n_usable": int(n_usable),
        "clean_accuracy": _mean(run.clean_diff > 0),
        "corrupted_accuracy": _mean(run.corrupted_diff < 0),
        "n_candidates": len(run.candidate_tokens),
        "clean_accuracy_argmax": _mean(run.clean_argmax_correct),
        "corrupted_accuracy_argmax": _mean(run.corrupted_argmax_correct),
        "clean_logit_diff_mean": _mean(run.clean_diff),
        "corrupted_logit_diff_mean": _mean(run.corrupted_diff),
    }


def _per_pair(run: LayerPatching, select_idx: np.ndarray) -> list[dict[str, Any]]:
    """Each pair's logit differences and the part it fell in (None: not usable)."""
    usable = run.usable
    in_selection = {int(i) for i in select_idx}
    return [
        {
            "id": run.ids[i],
            "position": int(run.positions[i]),
            "clean_logit_diff": float(run.clean_diff[i]),
            "corrupted_logit_diff": float(run.corrupted_diff[i]),
            "patched_logit_diff": [float(x) for x in run.patched_diff[i]],
            "usable": bool(usable[i]),
            "split": "selection" if i in in_selection else "heldout" if usable[i] else None,
        }
        for i in range(len(run.ids))
    ]


def pm3_from_patching(
    run: LayerPatching,
    *,
    n_blocks: int,
    n_bootstrap: int,
    seed: int,
    threshold: float,
    selection_fraction: float,
    level: float = 0.95,
) -> dict[str, Any]:
    """PM3 statistics from per-pair patching results (no model needed; tested by hand).

    Uses pairs the model gets right on both runs. Splits them at random (``seed``) into a selection
    part (``selection_fraction``) that picks the layer and a held-out part that measures the
    change rate at that layer. The interval is the percentile bootstrap over held-out pairs,
    widened to contain the Clopper-Pearson exact interval: with few pairs that all flip (or none)
    the bootstrap collapses to a point, and the verdict must not PASS on such a sample by accident.
    """
    if not 0.0 < selection_fraction < 1.0:
        raise ValueError(f"selection_fraction must lie in (0, 1), got {selection_fraction}")
    layers = list(run.layers)
    selectable = selectable_layers(layers, n_blocks)
    if not selectable:
        raise ValueError(
            f"no selectable layer among {layers}: the choice is made over layers 1..{n_blocks - 1}"
        )
    idx = np.flatnonzero(run.usable)
    recovery = logit_diff_recovery(run.patched_diff, run.clean_diff, run.corrupted_diff)
    per_layer = _per_layer(run, idx, recovery, selectable, n_bootstrap, seed)
    select_idx, heldout_idx = _split(idx, selection_fraction, seed)

    selection: dict[str, Any] = {"n": len(select_idx), "ids": [run.ids[i] for i in select_idx]}
    heldout: dict[str, Any] = {"n": len(heldout_idx), "ids": [run.ids[i] for i in heldout_idx]}
    chosen: int | None = None
    value, ci = math.nan, [math.nan, math.nan]
    result_verdict = "INCONCLUSIVE"
    note = ""
    if len(select_idx) >= 1 and len(heldout_idx) >= 1:
        chosen, selected, tested = _select_and_test(
            run,
            recovery,
            select_idx,
            heldout_idx,
            selectable,
            n_bootstrap=n_bootstrap,
            seed=seed,
            level=level,
        )
        selection.update(selected)
        heldout.update(tested)
        value = tested["change_rate"]
        boot, exact = tested["ci_bootstrap"], tested["ci_exact"]
        ci = [float(np.nanmin([boot[0], exact[0]])), float(np.nanmax([boot[1], exact[1]]))]
        result_verdict = verdict(ci[0], ci[1], threshold)
    else:
        note = (
            f"only {len(idx)} pair(s) where the model is right on both prompts; at least 2 are "
            "needed to choose a layer on one part and measure it on the other"
        )

    spec = plan.premortem("pm3")
    return {
        "premortem": spec.name,
        "name": record_name(spec.name),
        "metric": spec.metric,
        "value": value,
        "ci": ci,
        "ci_level": level,
        "threshold": float(threshold),
        "verdict": result_verdict,
        **({"reason": note} if note else {}),  # why there is no value (INCONCLUSIVE)
        "n": len(heldout_idx),
        "position": run.position,
        "chosen_layer": chosen,
        "layers": layers,
        "selectable_layers": selectable,
        "n_blocks": int(n_blocks),
        "per_layer": per_layer,
        "selection": selection,
        "heldout": heldout,
        "baseline": _baseline(run, len(idx)),
        "skipped": dict(run.skipped),
        "n_multi_token_answers": int(run.n_multi_token_answers),
        "flip_rule": FLIP_RULE,
        "recovery_rule": RECOVERY_RULE,
        "ci_method": CI_METHOD,
        "note": note,
        "per_pair": _per_pair(run, select_idx),
    }


def run_pm3(
    model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[PromptPair],
    *,
    position: Position,
    layers: Sequence[int] | None,
    n_pairs: int,
    selection_fraction: float,
    n_bootstrap: int,
    threshold: float,
    seed: int,
    max_batch: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Pre-mortem PM3: patch every layer, choose one on half the pairs, test it on the rest.

    The keywords are the keys of ``premortems.pm3`` (and the study's seed): the first ``n_pairs``
    pairs are used, ``layers`` None patches every layer. ``max_batch`` bounds the rows of one
    patched forward (memory); ``progress`` counts pairs. Returns the results dict (the pre-mortem
    schema plus details; ``per_pair`` holds the per-pair logit differences, which a caller may
    write to a file of its own).
    """
    start = time.perf_counter()
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be positive, got {n_pairs}")
    pairs = list(pairs)[:n_pairs]
    run = run_patching_layers(
        model,
        tokenizer,
        pairs,
        layers=layers,
        position=position,
        max_batch=max_batch,
        progress=progress,
    )
    results = pm3_from_patching(
        run,
        n_blocks=len(residual_blocks(model)),
        n_bootstrap=n_bootstrap,
        seed=seed,
        threshold=threshold,
        selection_fraction=selection_fraction,
    )
    results["n_pairs_loaded"] = len(pairs)
    results["duration_s"] = round(time.perf_counter() - start, 3)
    results["date"] = now()
    return results


def summary_markdown(results: Mapping[str, Any]) -> str:
    """A short report of a PM3 results dict for a person."""
    base = results["baseline"]
    skipped = {k: v for k, v in results.get("skipped", {}).items() if v}
    lines = [
        "# PM3: activation patching",
        "",
        f"- Date: {results['date']}",
        f"- Duration: {fmt(results['duration_s'], 1)} s",
    ]
    if "model" in results:
        lines.append(f"- Model: `{results['model']}`")
    lines += [
        f"- Metric: {results['metric']} (held-out share of corrupted prompts whose answer flips "
        f"to the clean answer when one layer is patched at the {results['position']} position)",
        f"- Result: {fmt(results['value'])} on n = {results['n']} held-out pairs, "
        f"chosen layer {results['chosen_layer']}",
        f"- {int(results['ci_level'] * 100)}% CI: {fmt_ci(results['ci'])} ({results['ci_method']})",
        f"- Threshold: {results['threshold']}",
        f"- Verdict: **{results['verdict']}**",
    ]
    if results.get("note"):
        lines.append(f"- Note: {results['note']}")
    lines += [
        "",
        "## Pairs",
        "",
        f"{base['n_pairs']} pairs encoded of {results.get('n_pairs_loaded', base['n_pairs'])} "
        f"loaded; skipped: {skipped or 'none'}. Clean accuracy {fmt(base['clean_accuracy'])}, "
        f"corrupted accuracy {fmt(base['corrupted_accuracy'])} (two-way, clean vs corrupted "
        f"answer); {base['n_usable']} pairs right on both are used, "
        f"{results['selection']['n']} to choose the layer and {results['n']} to test it.",
        f"Over the {base['n_candidates']} answer tokens of all pairs (argmax), clean accuracy is "
        f"{fmt(base['clean_accuracy_argmax'])} and corrupted accuracy "
        f"{fmt(base['corrupted_accuracy_argmax'])}; per-layer argmax change rates are in "
        "results.json.",
    ]
    if results.get("n_multi_token_answers"):
        lines.append(
            f"{results['n_multi_token_answers']} pairs have a multi-token answer; "
            "they are scored by the answer's first token."
        )
    lines += [
        "",
        f"Flip rule: {results['flip_rule']}. Recovery: {results['recovery_rule']}. "
        "Layer k is the residual stream after k blocks (0 = embeddings); layers "
        f"{results['selectable_layers']} are selectable (0 and {results['n_blocks']} flip "
        "by construction at the differing and final positions).",
        "",
        "## Per layer (all usable pairs)",
        "",
        "| layer | change rate | 95% CI | recovery | 95% CI | selection change rate |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    sel = results["selection"].get("change_rate", {})
    for row in results["per_layer"]:
        mark = " *" if row["layer"] == results["chosen_layer"] else ""
        lines.append(
            f"| {row['layer']}{mark} | {fmt(row['change_rate'])} | "
            f"{fmt_ci(row['change_rate_ci'])} | {fmt(row['recovery_mean'])} | "
            f"{fmt_ci(row['recovery_ci'])} | {fmt(sel.get(str(row['layer'])))} |"
        )
    return "\n".join(lines) + "\n"
