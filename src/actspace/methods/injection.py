"""Scoring a model's answer choices with a vector written into its residual stream.

Every (context + choice) sequence of an item runs with the output of one block, at the context's
last token, replaced by ``(1 - c) h + c v`` (or left alone): every continuation token attends to
the patched residual, and the first choice token is predicted from it. The inputs are the
evaluation harness's (:func:`actspace.lm.scoring.encode_item`, truncated as the harness does), so
an unpatched run reproduces the activation store's scores. Layer indices are the store's: 0 is
the embedding output (the input of the first block), k the output of block k.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from actspace.lm.hooks import capture_residual, patch_residual
from actspace.lm.models import residual_blocks
from actspace.lm.scoring import encode_item, item_metrics, max_length, model_input, needs_bos
from actspace.lm.tasks import Item

#: The accuracy metrics and the column of a score row that says whether the item is right.
METRIC_COLUMNS = {"acc": "correct", "acc_norm": "correct_norm"}


@dataclass(frozen=True)
class EncodedItem:
    """One item's model inputs: per choice, the input ids, the continuation and the patch spot."""

    inputs: list[list[int]]
    continuations: list[list[int]]
    positions: list[int]  # index of the context's last token in each input


def encode_items(model: Any, tokenizer: Any, items: Sequence[Item]) -> list[EncodedItem]:
    """Harness encoding (:func:`actspace.lm.scoring.encode_item`), truncated as the harness does."""
    add_bos = needs_bos(model, tokenizer)
    limit = max_length(model, tokenizer)
    encoded = []
    for item in items:
        context, continuations = encode_item(tokenizer, item, add_bos=add_bos)
        inputs = [model_input(context, cont, limit) for cont in continuations]
        positions = [len(inp) - len(cont) for inp, cont in zip(inputs, continuations, strict=True)]
        if min(positions) < 0:
            raise ValueError(f"item {item.id}: a choice is longer than the model's context")
        encoded.append(EncodedItem(inputs, [list(c) for c in continuations], positions))
    return encoded


def _block_for_layer(model: Any, layer: int) -> torch.nn.Module:
    blocks = residual_blocks(model)
    if not 1 <= layer <= len(blocks):
        raise ValueError(
            f"injection layer {layer} out of range 1..{len(blocks)} (layer k is the output of "
            "block k; the embeddings, layer 0, cannot be patched)"
        )
    return blocks[layer - 1]


@torch.no_grad()
def score_items(
    model: Any,
    encoded: Sequence[EncodedItem],
    *,
    layer: int | None = None,
    vectors: np.ndarray | torch.Tensor | None = None,
    coefficient: float = 1.0,
    capture_layer: int | None = None,
    batch_size: int = 8,
    pad_token_id: int = 0,
) -> tuple[list[list[float]], np.ndarray | None]:
    """Choice log-likelihoods, optionally with ``vectors[i]`` injected for item ``i``.

    With ``vectors`` the output of block ``layer`` (store layer index) at each item's last context
    token becomes ``(1 - coefficient) h + coefficient vectors[i]``. With ``capture_layer`` the
    unpatched-or-patched residual at that layer and position is returned too ([items, d], taken
    from each item's first choice row).
    """
    if (vectors is None) != (layer is None):
        raise ValueError("give both layer and vectors, or neither")
    if vectors is not None and len(vectors) != len(encoded):
        raise ValueError(f"{len(vectors)} vectors for {len(encoded)} items")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next(model.parameters()).device
    blocks = residual_blocks(model)
    block = _block_for_layer(model, layer) if layer is not None else None
    if capture_layer is not None and not 0 <= capture_layer <= len(blocks):
        raise ValueError(f"capture layer {capture_layer} out of range 0..{len(blocks)}")
    vec = None if vectors is None else torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
    logliks: list[list[float]] = []
    captured: list[torch.Tensor] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        owners = [i for i, item in enumerate(batch) for _ in item.inputs]
        inputs = [inp for item in batch for inp in item.inputs]
        conts = [cont for item in batch for cont in item.continuations]
        positions = [pos for item in batch for pos in item.positions]
        width = max(len(inp) for inp in inputs)
        ids = torch.full((len(inputs), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(inputs), width), dtype=torch.long)
        for row, inp in enumerate(inputs):
            ids[row, : len(inp)] = torch.tensor(inp)
            mask[row, : len(inp)] = 1
        rows = torch.arange(len(inputs), device=device)
        pos = torch.tensor(positions, device=device)
        with _maybe_patch(block, vec, start, owners, rows, pos, coefficient, device):
            with _maybe_capture(blocks, capture_layer) as states:
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            if capture_layer is not None:
                firsts = [owners.index(i) for i in range(len(batch))]
                hidden = states[capture_layer if capture_layer == 0 else 1]
                captured.append(hidden[firsts, pos[firsts]].float().cpu())
        slot = 0
        for item in batch:
            scores = []
            for _ in item.inputs:
                cont, p = conts[slot], positions[slot]
                window = logits[slot, p : p + len(cont)].float()
                logprobs = torch.log_softmax(window, dim=-1)
                target = torch.tensor(cont, device=device)[:, None]
                scores.append(float(logprobs.gather(1, target).sum()))
                slot += 1
            logliks.append(scores)
        del logits
    out = torch.cat(captured).numpy() if captured else None
    return logliks, out


def _maybe_capture(blocks: list[torch.nn.Module], layer: int | None) -> Any:
    """Capture one layer: layer 0 is the input of the first block, layer k the output of block k."""
    if layer is None:
        return contextlib.nullcontext([])
    return capture_residual(blocks[:1] if layer == 0 else blocks[layer - 1 : layer])


def _maybe_patch(
    block: torch.nn.Module | None,
    vectors: torch.Tensor | None,
    start: int,
    owners: list[int],
    rows: torch.Tensor,
    positions: torch.Tensor,
    coefficient: float,
    device: torch.device,
) -> Any:
    if block is None or vectors is None:
        return contextlib.nullcontext([])
    batch_vectors = vectors[[start + owner for owner in owners]].to(device)

    def inject(hidden: torch.Tensor) -> torch.Tensor:
        patched = hidden.clone()
        own = patched[rows, positions].float()
        patched[rows, positions] = ((1.0 - coefficient) * own + coefficient * batch_vectors).to(
            hidden.dtype
        )
        return patched

    return patch_residual(block, inject)


def correctness(
    logliks: Sequence[Sequence[float]], items: Sequence[Item], metric: str
) -> np.ndarray:
    """Per item, whether the prediction under ``metric`` (acc or acc_norm) is right."""
    column = METRIC_COLUMNS[metric]
    return np.array(
        [bool(item_metrics(ll, item)[column]) for ll, item in zip(logliks, items, strict=True)]
    )


def predictions(
    logliks: Sequence[Sequence[float]], items: Sequence[Item], metric: str
) -> np.ndarray:
    """Per item, the predicted choice under ``metric``."""
    key = "pred" if metric == "acc" else "pred_norm"
    return np.array(
        [int(item_metrics(ll, item)[key]) for ll, item in zip(logliks, items, strict=True)]
    )
