"""Activation patching of the residual stream: the core of pre-mortem PM3 and of branch 2C.

A *prompt pair* is a clean and a corrupted prompt of equal token length that differ in one token
and call for different answers. *Patching layer k* runs the corrupted prompt with the residual
stream after ``k`` blocks (the output of block ``k - 1``) replaced, at one position, by its value in
the clean run; ``k = 0`` is the input of block 0 (the embeddings). The answer *flips* when, in the
patched run, the clean answer's logit exceeds the corrupted answer's logit at the final position.

The core, :func:`patched_logits`, is batched: the source (clean) prompt runs once with every layer
captured, then ONE batched forward of the target (corrupted) prompt runs with one row per requested
``(layer, position)``; row ``i`` is patched at its own layer and position only. Swapping source and
target gives noising instead of denoising; a list of positions gives a position sweep.
:func:`run_patching_layers` denoises each prompt pair at every layer; the pre-mortem built on it
is :mod:`actspace.premortems.pm3`, the layer-by-layer experiment
:mod:`actspace.branches.patching.patching_layers`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats as _scipy_stats

from actspace.core.groups import n_groups, pair_group
from actspace.core.progress import Progress
from actspace.core.splits import grouped_split
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


@dataclass(frozen=True)
class PromptPair:
    """One line of ``prompt_pairs.jsonl``; answers carry no leading space."""

    id: str
    clean: str
    corrupted: str
    clean_answer: str
    corrupted_answer: str
    metadata: dict[str, Any] = field(default_factory=dict)


def sample_pairs(pairs: Sequence[PromptPair], n_pairs: int, seed: int) -> list[PromptPair]:
    """A seeded random sample of ``n_pairs`` pairs, kept in file order (all when fewer).

    A pairs file is often sorted (by relation, by entity): its first lines cover few entities,
    so the first ``n_pairs`` would be a biased, clustered sample. PM3 and branch 2C draw with the
    same function, so the same seed and ``n_pairs`` give both the same pairs.
    """
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be positive, got {n_pairs}")
    pairs = list(pairs)
    if n_pairs >= len(pairs):
        return pairs
    chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), size=n_pairs, replace=False))
    return [pairs[int(i)] for i in chosen]


def load_prompt_pairs(
    path: str | os.PathLike[str], *, n_pairs: int | None = None, seed: int = 0
) -> list[PromptPair]:
    """Read and validate ``prompt_pairs.jsonl``; a ValueError names the first bad line.

    With ``n_pairs``, a seeded random sample of that many pairs (:func:`sample_pairs`), not the
    file's first lines.
    """
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
    return pairs if n_pairs is None else sample_pairs(pairs, n_pairs, seed)


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
    groups: list[str] | None = None  # [pairs] core.groups.pair_group; None: each pair its own

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
        groups=[pair_group(asdict(e.pair)) for e in encoded],
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


def exact_proportion_ci(successes: int, n: int, level: float = 0.95) -> list[float]:
    """Clopper-Pearson interval of a proportion (NaN for n = 0)."""
    if n == 0:
        return [math.nan, math.nan]
    interval = _scipy_stats.binomtest(int(successes), int(n)).proportion_ci(
        confidence_level=level, method="exact"
    )
    return [float(interval.low), float(interval.high)]


def selectable_layers(layers: Sequence[int], n_blocks: int) -> list[int]:
    """Layers a layer choice may pick (PM3's and branch 2C's): 1..L-1.

    Layer 0 at the differing position restores the clean input itself and layer L at the final
    position is the read-out itself; both flip every pair by construction, so they are reported as
    known-answer checks but never chosen.
    """
    return [k for k in layers if 0 < k < n_blocks]


def known_answer_layer(position: str, n_blocks: int) -> int:
    """The layer next to a known answer at ``position``: 1 at the differing token (nearly the
    clean input: only block 0 has read the corrupted token elsewhere), ``L - 1`` at the final
    token (nearly the clean read-out: only the last block is left to run)."""
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    return 1 if position == "diff" else n_blocks - 1


def patched_layers(layers: Sequence[int] | None, n_blocks: int) -> list[int] | None:
    """The layers a pre-mortem patches: every layer (None), or ``layers`` with both known-answer
    layers (:func:`known_answer_layer`) added, so that their checks are always measured."""
    if layers is None:
        return None
    known = {known_answer_layer(position, n_blocks) for position in POSITIONS}
    return sorted({int(k) for k in layers} | {k for k in known if 0 < k < n_blocks})


def band_range(band: Sequence[float], n_blocks: int) -> tuple[int, int]:
    """The layers ``ceil(low * L)..floor(high * L)`` that the depth fractions ``band`` span."""
    low, high = (float(x) for x in band)
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"layer_band must be [low, high] with 0 <= low < high <= 1, got {band}")
    # a hair of slack so that 0.25 * 4 is layer 1, not 2, whatever the float rounding
    return math.ceil(low * n_blocks - 1e-9), math.floor(high * n_blocks + 1e-9)


def interior_layers(
    layers: Sequence[int], n_blocks: int, band: Sequence[float], position: str
) -> list[int]:
    """Layers a controlled choice may pick: inside ``band`` (depth fractions of the blocks),
    among ``1..L-1``, and never the known-answer cell at ``position``
    (:func:`known_answer_layer`), which flips nearly every pair whatever the model computes."""
    first, last = band_range(band, n_blocks)
    excluded = known_answer_layer(position, n_blocks)
    return [k for k in layers if first <= k <= last and 0 < k < n_blocks and k != excluded]


def grouped_parts(
    idx: np.ndarray, groups: np.ndarray, selection_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """The usable pairs ``idx`` split into (selection, held-out) with every group on one side,
    or two empty parts and the reason why no split is possible.

    The smaller side is the first fold of a grouped split, so that a selection fraction on either
    side of one half is met as closely as the groups allow. PM3 chooses its layer on the
    selection part and patching_layers its strongest cell, both measured on the held-out part;
    on the same pairs, groups and seed they split alike.
    """
    empty = np.array([], dtype=int)
    if len(idx) < 2:
        return (
            empty,
            empty,
            (
                f"only {len(idx)} pair(s) where the model is right on both prompts; at least 2 are "
                "needed to choose a layer on one part and measure it on the other"
            ),
        )
    small = min(selection_fraction, 1.0 - selection_fraction)
    try:
        rest, part = grouped_split(len(idx), test_fraction=small, seed=seed, groups=groups[idx])
    except ValueError as error:
        return (
            empty,
            empty,
            (
                f"the {len(idx)} pairs where the model is right on both prompts fall in "
                f"{n_groups(groups[idx])} group(s), too few for a grouped selection/held-out split "
                f"({error})"
            ),
        )
    select, heldout = (part, rest) if selection_fraction <= 0.5 else (rest, part)
    return np.sort(idx[select]), np.sort(idx[heldout]), ""
