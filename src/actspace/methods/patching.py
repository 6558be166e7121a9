"""Activation patching of the residual stream (pre-mortem PM3, and the core of branch 2C).

A *prompt pair* is a clean and a corrupted prompt of equal token length that differ in one token
and call for different answers. *Patching layer k* runs the corrupted prompt with the residual
stream after ``k`` blocks (the output of block ``k - 1``) replaced, at one position, by its value in
the clean run; ``k = 0`` is the input of block 0 (the embeddings). The answer *flips* when, in the
patched run, the clean answer's logit exceeds the corrupted answer's logit at the final position.

The core, :func:`patched_logits`, is batched: the source (clean) prompt runs once with every layer
captured, then ONE batched forward of the target (corrupted) prompt runs with one row per requested
``(layer, position)``; row ``i`` is patched at its own layer and position only. Swapping source and
target gives noising instead of denoising; a list of positions gives a position sweep.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats as _scipy_stats

from actspace.core.progress import Progress
from actspace.core.resampling import bootstrap_ci, verdict
from actspace.lm.hooks import capture_residual, patch_residual
from actspace.lm.models import residual_blocks

Position = Literal["diff", "final"]
POSITIONS: tuple[str, ...] = ("diff", "final")

#: The keys of one line of ``prompt_pairs.jsonl`` and the type each must have.
PAIR_FIELDS: dict[str, type] = {
    "id": str,
    "clean": str,
    "corrupted": str,
    "clean_answer": str,
    "corrupted_answer": str,
    "metadata": dict,
}

FLIP_RULE = (
    "an answer flips when, in the patched corrupted run, logit(clean answer token) > "
    "logit(corrupted answer token) at the final position (a two-way comparison)"
)
RECOVERY_RULE = (
    "per pair (patched - corrupted) / (clean - corrupted) of the logit difference "
    "logit(clean answer) - logit(corrupted answer) at the final position, then averaged"
)


@dataclass(frozen=True)
class PromptPair:
    """One line of ``prompt_pairs.jsonl``; answers carry no leading space."""

    id: str
    clean: str
    corrupted: str
    clean_answer: str
    corrupted_answer: str
    metadata: dict[str, Any] = field(default_factory=dict)


def load_prompt_pairs(path: str | os.PathLike[str]) -> list[PromptPair]:
    """Read and validate ``prompt_pairs.jsonl``; a ValueError names the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt pairs file not found: {path}")
    pairs: list[PromptPair] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where} is not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where} is not a JSON object")
            missing = [key for key in PAIR_FIELDS if key not in row]
            if missing:
                raise ValueError(f"{where} lacks {', '.join(missing)}")
            for key, kind in PAIR_FIELDS.items():
                if not isinstance(row[key], kind):
                    raise ValueError(
                        f"{where}: {key} must be a {kind.__name__}, got {type(row[key]).__name__}"
                    )
            for key in ("clean", "corrupted", "clean_answer", "corrupted_answer"):
                if not row[key].strip():
                    raise ValueError(f"{where}: {key} is empty")
            for key in ("clean_answer", "corrupted_answer"):
                if row[key] != row[key].lstrip():
                    raise ValueError(
                        f"{where}: {key} {row[key]!r} has leading whitespace; answers are stored "
                        "without it (the answer token is the first token of ' ' + answer)"
                    )
            if row["id"] in seen:
                raise ValueError(f"{where}: id {row['id']!r} repeats line {seen[row['id']]}")
            seen[row["id"]] = number
            pairs.append(PromptPair(**{key: row[key] for key in PAIR_FIELDS}))
    if not pairs:
        raise ValueError(f"{path} holds no prompt pairs")
    return pairs


@dataclass(frozen=True)
class EncodedPair:
    """A prompt pair as token ids, with the one position where the prompts differ."""

    pair: PromptPair
    clean_ids: tuple[int, ...]
    corrupted_ids: tuple[int, ...]
    diff_position: int
    clean_token: int
    corrupted_token: int
    multi_token_answer: bool


def answer_token(tokenizer: Any, answer: str) -> tuple[int, int]:
    """The first token id of ``" " + answer`` and how many tokens that string has."""
    ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"answer {answer!r} encodes to no tokens")
    return int(ids[0]), len(ids)


def encode_pairs(
    tokenizer: Any, pairs: Sequence[PromptPair]
) -> tuple[list[EncodedPair], dict[str, int]]:
    """Tokenise pairs; return the usable ones and a count of skipped pairs by reason.

    Prompts are encoded with the tokenizer's own special tokens (a BOS where the model family
    prepends one). A pair is skipped when its prompts differ in length, are identical, differ in
    more than one token, or when both answers start with the same token. Multi-token answers
    (possible for hub models) are scored by their first token and counted.
    """
    encoded: list[EncodedPair] = []
    skipped = {
        "length_mismatch": 0,
        "identical_prompts": 0,
        "multiple_differences": 0,
        "same_answer_token": 0,
    }
    for pair in pairs:
        clean = [int(i) for i in tokenizer(pair.clean)["input_ids"]]
        corrupted = [int(i) for i in tokenizer(pair.corrupted)["input_ids"]]
        if len(clean) != len(corrupted):
            skipped["length_mismatch"] += 1
            continue
        differ = [i for i, (a, b) in enumerate(zip(clean, corrupted, strict=True)) if a != b]
        if not differ:
            skipped["identical_prompts"] += 1
            continue
        if len(differ) > 1:
            skipped["multiple_differences"] += 1
            continue
        clean_token, n_clean = answer_token(tokenizer, pair.clean_answer)
        corrupted_token, n_corrupted = answer_token(tokenizer, pair.corrupted_answer)
        if clean_token == corrupted_token:
            skipped["same_answer_token"] += 1
            continue
        encoded.append(
            EncodedPair(
                pair=pair,
                clean_ids=tuple(clean),
                corrupted_ids=tuple(corrupted),
                diff_position=differ[0],
                clean_token=clean_token,
                corrupted_token=corrupted_token,
                multi_token_answer=max(n_clean, n_corrupted) > 1,
            )
        )
    if not encoded:
        reasons = ", ".join(f"{name} {count}" for name, count in skipped.items() if count)
        raise ValueError(
            f"none of the {len(pairs)} prompt pairs is usable ({reasons}); a pair needs clean "
            "and corrupted prompts of equal token length that differ in exactly one token"
        )
    return encoded, skipped


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    """Run in eval mode (no dropout) and restore the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _forward_logits(model: torch.nn.Module, ids: torch.Tensor, all_positions: bool) -> torch.Tensor:
    """Float32 logits ``[batch, seq, vocab]``, or ``[batch, vocab]`` at the last position."""
    kwargs: dict[str, Any] = {"input_ids": ids, "use_cache": False}
    if not all_positions and "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = 1
    logits = model(**kwargs).logits.float()
    return logits if all_positions else logits[:, -1]


def _row_positions(
    positions: int | None | Sequence[int | None], rows: int, seq_len: int
) -> list[int | None]:
    """Per-row positions (non-negative) from one position for all rows or one per row."""
    if positions is None or isinstance(positions, int | np.integer):
        per_row: list[int | None] = [positions] * rows  # type: ignore[list-item]
    else:
        per_row = list(positions)
        if len(per_row) != rows:
            raise ValueError(f"got {len(per_row)} positions for {rows} patched rows")
    out: list[int | None] = []
    for position in per_row:
        if position is None:
            out.append(None)
            continue
        index = int(position)
        if not -seq_len <= index < seq_len:
            raise ValueError(f"position {index} lies outside a prompt of {seq_len} tokens")
        out.append(index % seq_len)
    return out


def _replace_rows(
    entries: Sequence[tuple[int, int | None]], source: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A patch that writes ``source`` ``[seq, d]`` into the given (row, position) entries only."""

    def patch(hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.clone()
        for row, position in entries:
            if position is None:
                hidden[row] = source.to(hidden.dtype)
            else:
                hidden[row, position] = source[position].to(hidden.dtype)
        return hidden

    return patch


@dataclass
class PatchedLogits:
    """Logits of the source run and of each patched target row (float32, on the CPU)."""

    source: torch.Tensor  # [vocab] or [seq, vocab]
    patched: torch.Tensor  # [rows, vocab] or [rows, seq, vocab]


def patched_logits(
    model: torch.nn.Module,
    source_ids: Sequence[int] | torch.Tensor,
    target_ids: Sequence[int] | torch.Tensor,
    layers: Sequence[int | None],
    positions: int | None | Sequence[int | None] = None,
    *,
    all_positions: bool = False,
    max_batch: int | None = None,
) -> PatchedLogits:
    """Patch the source run's residual stream into the target run, one row per layer.

    ``layers[i]`` is the layer patched in row ``i``: ``k`` in ``1..L`` replaces the output of
    block ``k - 1``; ``0`` replaces the input of block 0, done by giving the row the source's
    token at the position (the embedding is a per-token lookup followed by position-wise
    operations, so this is exact); ``None`` leaves the row unpatched (the plain target run).
    ``positions`` is one position for every row or one per row; ``None`` patches all positions.

    The source runs once with every layer captured; the target runs as one batch of
    ``len(layers)`` rows (in chunks of ``max_batch`` rows when given). Denoising is source =
    clean, target = corrupted; noising is the reverse. Returns logits at the final position, or
    at every position with ``all_positions=True``.
    """
    device = _model_device(model)
    source = torch.as_tensor(source_ids, dtype=torch.long, device=device).reshape(-1)
    target = torch.as_tensor(target_ids, dtype=torch.long, device=device).reshape(-1)
    if source.numel() != target.numel():
        raise ValueError(
            f"source and target must have the same length, got {source.numel()} and "
            f"{target.numel()} tokens"
        )
    if source.numel() == 0:
        raise ValueError("cannot patch an empty prompt")
    blocks = residual_blocks(model)
    n_layers = len(blocks)
    rows = list(layers)
    if not rows:
        raise ValueError("patched_logits needs at least one layer")
    for layer in rows:
        if layer is not None and not 0 <= int(layer) <= n_layers:
            raise ValueError(f"layer {layer} is outside 0..{n_layers} (0 = embeddings)")
    row_positions = _row_positions(positions, len(rows), source.numel())
    chunk = len(rows) if max_batch is None else int(max_batch)
    if chunk < 1:
        raise ValueError(f"max_batch must be positive, got {max_batch}")

    with _eval_mode(model), torch.inference_mode():
        with capture_residual(blocks) as captured:
            source_logits = _forward_logits(model, source[None], all_positions)[0]
        outputs = []
        for start in range(0, len(rows), chunk):
            chunk_rows = list(
                zip(rows[start : start + chunk], row_positions[start : start + chunk], strict=True)
            )
            ids = target[None].repeat(len(chunk_rows), 1)
            by_layer: dict[int, list[tuple[int, int | None]]] = {}
            for row, (layer, position) in enumerate(chunk_rows):
                if layer is None:
                    continue
                if int(layer) == 0:
                    where = slice(None) if position is None else position
                    ids[row, where] = source[where]
                else:
                    by_layer.setdefault(int(layer), []).append((row, position))
            with contextlib.ExitStack() as stack:
                for layer, entries in by_layer.items():
                    hidden = captured[layer]
                    if hidden is None:
                        raise RuntimeError(f"the source run did not record layer {layer}")
                    stack.enter_context(
                        patch_residual(blocks[layer - 1], _replace_rows(entries, hidden[0]))
                    )
                outputs.append(_forward_logits(model, ids, all_positions))
    return PatchedLogits(source=source_logits.cpu(), patched=torch.cat(outputs).cpu())


@dataclass
class LayerPatching:
    """Per-pair, per-layer results of :func:`run_patching_layers` (pairs in input order)."""

    ids: list[str]
    layers: list[int]
    position: str
    positions: np.ndarray  # [pairs] the patched token index
    clean_diff: np.ndarray  # [pairs]
    corrupted_diff: np.ndarray  # [pairs]
    patched_diff: np.ndarray  # [pairs, layers]
    flipped: np.ndarray  # [pairs, layers] bool: patched_diff > 0
    flipped_argmax: np.ndarray  # [pairs, layers] bool: clean answer is the argmax over candidates
    candidate_tokens: list[int]  # every answer token of the pairs
    clean_argmax_correct: np.ndarray  # [pairs] bool: clean run's argmax over candidates is right
    corrupted_argmax_correct: np.ndarray  # [pairs] bool: likewise for the corrupted run
    skipped: dict[str, int]
    n_multi_token_answers: int

    @property
    def usable(self) -> np.ndarray:
        """Pairs the model gets right on both runs: clean diff > 0 and corrupted diff < 0."""
        return (self.clean_diff > 0) & (self.corrupted_diff < 0)


def default_layers(model: torch.nn.Module) -> list[int]:
    """Every layer, 0 (embeddings) to L."""
    return list(range(len(residual_blocks(model)) + 1))


def run_patching_layers(
    model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[PromptPair],
    *,
    layers: Sequence[int] | None = None,
    position: Position = "diff",
    max_batch: int | None = None,
    progress: Progress | None = None,
) -> LayerPatching:
    """Denoise each pair at every layer in ``layers`` (default all, 0..L) at one position.

    ``position="diff"`` patches the token where the prompts differ, ``"final"`` the last token.
    Per pair: one clean forward (captured) and one batched corrupted forward whose first row is
    unpatched (the corrupted baseline) and whose other rows patch one layer each. ``progress``
    (a :class:`~actspace.core.progress.Progress`) counts pairs.
    """
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    layer_list = default_layers(model) if layers is None else sorted({int(k) for k in layers})
    n_blocks = len(residual_blocks(model))
    bad = [k for k in layer_list if not 0 <= k <= n_blocks]
    if bad or not layer_list:
        raise ValueError(f"layers must lie in 0..{n_blocks} (0 = embeddings), got {layer_list}")
    encoded, skipped = encode_pairs(tokenizer, pairs)
    candidates = sorted({e.clean_token for e in encoded} | {e.corrupted_token for e in encoded})
    candidate_index = torch.tensor(candidates)
    n, m = len(encoded), len(layer_list)
    clean_diff = np.empty(n)
    corrupted_diff = np.empty(n)
    patched_diff = np.empty((n, m))
    flipped_argmax = np.empty((n, m), dtype=bool)
    clean_argmax = np.empty(n, dtype=bool)
    corrupted_argmax = np.empty(n, dtype=bool)
    patched_positions = np.empty(n, dtype=int)
    if progress is not None:
        progress.set_total(n)
    for i, pair in enumerate(encoded):
        where = pair.diff_position if position == "diff" else len(pair.clean_ids) - 1
        patched_positions[i] = where
        result = patched_logits(
            model,
            pair.clean_ids,
            pair.corrupted_ids,
            [None, *layer_list],
            where,
            max_batch=max_batch,
        )
        good, bad_token = pair.clean_token, pair.corrupted_token
        clean_diff[i] = float(result.source[good] - result.source[bad_token])
        diffs = (result.patched[:, good] - result.patched[:, bad_token]).numpy()
        corrupted_diff[i] = diffs[0]
        patched_diff[i] = diffs[1:]
        top = candidate_index[result.patched[:, candidate_index].argmax(dim=1)]
        flipped_argmax[i] = (top[1:] == good).numpy()
        corrupted_argmax[i] = bool(top[0] == bad_token)
        clean_argmax[i] = bool(candidate_index[result.source[candidate_index].argmax()] == good)
        if progress is not None:
            progress.update()
    return LayerPatching(
        ids=[e.pair.id for e in encoded],
        layers=layer_list,
        position=position,
        positions=patched_positions,
        clean_diff=clean_diff,
        corrupted_diff=corrupted_diff,
        patched_diff=patched_diff,
        flipped=patched_diff > 0,
        flipped_argmax=flipped_argmax,
        candidate_tokens=candidates,
        clean_argmax_correct=clean_argmax,
        corrupted_argmax_correct=corrupted_argmax,
        skipped=skipped,
        n_multi_token_answers=sum(e.multi_token_answer for e in encoded),
    )


def logit_diff_recovery(
    patched_diff: np.ndarray, clean_diff: np.ndarray, corrupted_diff: np.ndarray
) -> np.ndarray:
    """Normalised recovery ``(patched - corrupted) / (clean - corrupted)`` per pair (and layer).

    ``patched_diff`` is ``[pairs]`` or ``[pairs, layers]``; 1 means the clean logit difference is
    fully restored, 0 means no change. Pairs with ``clean == corrupted`` give NaN.
    """
    patched = np.asarray(patched_diff, dtype=float)
    clean = np.asarray(clean_diff, dtype=float)
    corrupted = np.asarray(corrupted_diff, dtype=float)
    if patched.ndim == 2:
        clean, corrupted = clean[:, None], corrupted[:, None]
    span = clean - corrupted
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span != 0, (patched - corrupted) / span, np.nan)


def _ci(values: np.ndarray, n_bootstrap: int, seed: int) -> list[float]:
    """Percentile bootstrap 95% interval of the mean; NaN bounds below two observations."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        return [math.nan, math.nan]
    low, high = bootstrap_ci(np.mean, values, n_resamples=n_bootstrap, seed=seed)
    return [low, high]


def exact_proportion_ci(successes: int, n: int, level: float = 0.95) -> list[float]:
    """Clopper-Pearson interval of a proportion (NaN for n = 0)."""
    if n == 0:
        return [math.nan, math.nan]
    interval = _scipy_stats.binomtest(int(successes), int(n)).proportion_ci(
        confidence_level=level, method="exact"
    )
    return [float(interval.low), float(interval.high)]


def _mean(values: np.ndarray) -> float:
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


def selectable_layers(layers: Sequence[int], n_blocks: int) -> list[int]:
    """Layers the pre-mortem may choose: 1..L-1.

    Layer 0 at the differing position restores the clean input itself and layer L at the final
    position is the read-out itself; both flip every pair by construction, so they are reported as
    known-answer checks but never chosen.
    """
    return [k for k in layers if 0 < k < n_blocks]


def pm3_from_patching(
    run: LayerPatching,
    *,
    n_blocks: int,
    n_bootstrap: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
    selection_fraction: float = 0.5,
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
    usable = run.usable
    idx = np.flatnonzero(usable)
    recovery = logit_diff_recovery(run.patched_diff, run.clean_diff, run.corrupted_diff)

    per_layer = []
    for j, layer in enumerate(layers):
        flips = run.flipped[idx, j].astype(float)
        rec = recovery[idx, j]
        per_layer.append(
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

    rng = np.random.default_rng(seed)
    order = rng.permutation(idx)
    n_use = len(order)
    n_select = min(max(round(n_use * selection_fraction), 1), n_use - 1) if n_use >= 2 else 0
    select_idx, heldout_idx = np.sort(order[:n_select]), np.sort(order[n_select:])

    selection: dict[str, Any] = {"n": int(n_select), "ids": [run.ids[i] for i in select_idx]}
    chosen: int | None = None
    heldout: dict[str, Any] = {"n": int(len(heldout_idx)), "ids": [run.ids[i] for i in heldout_idx]}
    value, ci = math.nan, [math.nan, math.nan]
    result_verdict = "INCONCLUSIVE"
    note = ""
    if n_select >= 1 and len(heldout_idx) >= 1:
        sel_rate = run.flipped[select_idx].mean(axis=0)
        sel_rec = np.array([_mean(recovery[select_idx, j]) for j in range(len(layers))])
        selection["change_rate"] = {str(k): float(r) for k, r in zip(layers, sel_rate, strict=True)}
        selection["recovery_mean"] = {
            str(k): float(r) for k, r in zip(layers, sel_rec, strict=True)
        }
        chosen = choose_layer(sel_rate, sel_rec, layers, selectable)
        j = layers.index(chosen)
        flips = run.flipped[heldout_idx, j]
        value = float(flips.mean())
        ci_boot = _ci(flips.astype(float), n_bootstrap, seed)
        ci_exact = exact_proportion_ci(int(flips.sum()), len(flips), level)
        ci = [
            float(np.nanmin([ci_boot[0], ci_exact[0]])),
            float(np.nanmax([ci_boot[1], ci_exact[1]])),
        ]
        result_verdict = verdict(ci[0], ci[1], threshold)
        heldout.update(
            {
                "change_rate": value,
                "ci_bootstrap": ci_boot,
                "ci_exact": ci_exact,
                "recovery_mean": _mean(recovery[heldout_idx, j]),
                "recovery_ci": _ci(recovery[heldout_idx, j], n_bootstrap, seed),
                "change_rate_argmax": _mean(run.flipped_argmax[heldout_idx, j]),
            }
        )
    else:
        note = (
            f"only {n_use} pair(s) where the model is right on both prompts; at least 2 are "
            "needed to choose a layer on one part and measure it on the other"
        )

    n_pairs = len(run.ids)
    in_selection = {int(i) for i in select_idx}
    return {
        "premortem": "pm3",
        "name": "patching",
        "metric": "change_rate",
        "value": value,
        "ci": ci,
        "ci_level": level,
        "threshold": float(threshold),
        "verdict": result_verdict,
        "n": int(len(heldout_idx)),
        "position": run.position,
        "chosen_layer": chosen,
        "layers": layers,
        "selectable_layers": selectable,
        "n_blocks": int(n_blocks),
        "per_layer": per_layer,
        "selection": selection,
        "heldout": heldout,
        "baseline": {
            "n_pairs": n_pairs,
            "n_usable": int(n_use),
            "clean_accuracy": _mean(run.clean_diff > 0),
            "corrupted_accuracy": _mean(run.corrupted_diff < 0),
            "n_candidates": len(run.candidate_tokens),
            "clean_accuracy_argmax": _mean(run.clean_argmax_correct),
            "corrupted_accuracy_argmax": _mean(run.corrupted_argmax_correct),
            "clean_logit_diff_mean": _mean(run.clean_diff),
            "corrupted_logit_diff_mean": _mean(run.corrupted_diff),
        },
        "skipped": dict(run.skipped),
        "n_multi_token_answers": int(run.n_multi_token_answers),
        "flip_rule": FLIP_RULE,
        "recovery_rule": RECOVERY_RULE,
        "ci_method": (
            "percentile bootstrap over held-out pairs, widened to contain the Clopper-Pearson "
            "exact interval"
        ),
        "note": note,
        "per_pair": [
            {
                "id": run.ids[i],
                "position": int(run.positions[i]),
                "clean_logit_diff": float(run.clean_diff[i]),
                "corrupted_logit_diff": float(run.corrupted_diff[i]),
                "patched_logit_diff": [float(x) for x in run.patched_diff[i]],
                "usable": bool(usable[i]),
                "split": "selection" if i in in_selection else "heldout" if usable[i] else None,
            }
            for i in range(n_pairs)
        ],
    }


def run_pm3(
    model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[PromptPair],
    *,
    position: Position = "diff",
    layers: Sequence[int] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
    selection_fraction: float = 0.5,
    max_batch: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Pre-mortem PM3: patch every layer, choose one on half the pairs, test it on the rest.

    Returns the results dict (the pre-mortem schema plus details; ``per_pair`` holds the per-pair
    logit differences, which a caller may write to a file of its own).
    """
    start = time.perf_counter()
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
    results["date"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return results


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_ci(ci: Sequence[Any]) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def summary_markdown(results: dict[str, Any]) -> str:
    """A short report of a PM3 results dict for a person."""
    base = results["baseline"]
    skipped = {k: v for k, v in results.get("skipped", {}).items() if v}
    lines = [
        "# PM3: activation patching",
        "",
        f"- Date: {results['date']}",
        f"- Duration: {_fmt(results['duration_s'], 1)} s",
    ]
    if "model" in results:
        lines.append(f"- Model: `{results['model']}`")
    lines += [
        f"- Metric: {results['metric']} (held-out share of corrupted prompts whose answer flips "
        f"to the clean answer when one layer is patched at the {results['position']} position)",
        f"- Result: {_fmt(results['value'])} on n = {results['n']} held-out pairs, "
        f"chosen layer {results['chosen_layer']}",
        f"- {int(results['ci_level'] * 100)}% CI: {_fmt_ci(results['ci'])} "
        f"({results['ci_method']})",
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
        f"loaded; skipped: {skipped or 'none'}. Clean accuracy {_fmt(base['clean_accuracy'])}, "
        f"corrupted accuracy {_fmt(base['corrupted_accuracy'])} (two-way, clean vs corrupted "
        f"answer); {base['n_usable']} pairs right on both are used, "
        f"{results['selection']['n']} to choose the layer and {results['n']} to test it.",
    ]
    lines.append(
        f"Over the {base['n_candidates']} answer tokens of all pairs (argmax), clean accuracy is "
        f"{_fmt(base['clean_accuracy_argmax'])} and corrupted accuracy "
        f"{_fmt(base['corrupted_accuracy_argmax'])}; per-layer argmax change rates are in "
        "results.json."
    )
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
            f"| {row['layer']}{mark} | {_fmt(row['change_rate'])} | "
            f"{_fmt_ci(row['change_rate_ci'])} | {_fmt(row['recovery_mean'])} | "
            f"{_fmt_ci(row['recovery_ci'])} | {_fmt(sel.get(str(row['layer'])))} |"
        )
    return "\n".join(lines) + "\n"
