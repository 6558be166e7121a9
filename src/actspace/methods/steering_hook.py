"""The steering intervention: which layers can be steered, and adding a vector to the residual
stream at every position but each sequence's first (the attention sink; see
:mod:`actspace.methods.steering`), in full passes, left- or right-padded batches and the cached
steps of generation alike."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from actspace.lm.hooks import patch_residual
from actspace.lm.models import residual_blocks


# ---------------------------------------------------------------------------------- the layers
def default_steering_layers(n_blocks: int, count: int = 3) -> list[int]:
    """Up to ``count`` layers spread over 1..L (quarter points of depth for ``count = 3``)."""
    picks = {min(n_blocks, max(1, round(n_blocks * q / (count + 1)))) for q in range(1, count + 1)}
    return sorted(picks)


def check_steering_layers(layers: Sequence[int], n_blocks: int) -> list[int]:
    """Steering layers must be block outputs, 1..L."""
    layers = [int(k) for k in layers]
    if not layers:
        raise ValueError("no steering layers given")
    bad = [k for k in layers if not 1 <= k <= n_blocks]
    if bad:
        raise ValueError(
            f"steering layer {bad[0]} is out of range: layers run 1..{n_blocks} "
            "(the output of block k-1; layer 0, the embeddings, cannot be steered)"
        )
    return layers


# ------------------------------------------------------------------------------ interventions
@dataclass(frozen=True)
class Steering:
    """Add ``coefficient * vector`` to the residual stream after ``layer`` blocks, at every
    position but each sequence's first (see :mod:`actspace.methods.steering`)."""

    layer: int
    vector: torch.Tensor
    coefficient: float = 1.0

    def apply(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        blocks = residual_blocks(model)
        check_steering_layers([self.layer], len(blocks))
        return steer_residual(model, blocks[self.layer - 1], self.coefficient * self.vector)


def token_positions(args: tuple, kwargs: Mapping[str, Any]) -> torch.Tensor:
    """Each input token's position in its sequence ([batch or 1, tokens]) for one forward call.

    From ``position_ids`` when given (left-padded batches pass them), else from the attention
    mask (right padding, and the cached steps of generation, whose mask covers the past too),
    else from ``cache_position`` or the cache's length.
    """
    ids = kwargs.get("input_ids", args[0] if args else None)
    if not isinstance(ids, torch.Tensor):
        ids = kwargs.get("inputs_embeds")
    if not isinstance(ids, torch.Tensor):
        raise ValueError("steering: the forward call has neither input_ids nor inputs_embeds")
    length = ids.shape[1]
    positions = kwargs.get("position_ids")
    if isinstance(positions, torch.Tensor) and tuple(positions.shape)[-1:] == (length,):
        return positions[0] if positions.dim() == 3 else positions.view(-1, length)  # 3: mrope
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[-1] >= length:
        return (mask.long().cumsum(dim=-1) - 1)[:, -length:]
    cache_position = kwargs.get("cache_position")
    if isinstance(cache_position, torch.Tensor) and cache_position.numel() == length:
        return cache_position.view(1, length)
    past = kwargs.get("cache", kwargs.get("past_key_values"))  # "cache" from transformers 5.24
    start = int(past.get_seq_length()) if hasattr(past, "get_seq_length") else 0
    return torch.arange(start, start + length, device=ids.device).view(1, length)


@contextlib.contextmanager
def steer_residual(
    model: torch.nn.Module, block: torch.nn.Module, vector: torch.Tensor
) -> Iterator[None]:
    """Add ``vector`` ([d]) to ``block``'s output at every position but each sequence's first,
    in every forward call of ``model`` inside the block (prefill and cached steps alike)."""
    current: dict[str, torch.Tensor] = {}

    def record(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        current["positions"] = token_positions(args, kwargs)

    def add(hidden: torch.Tensor) -> torch.Tensor:
        positions = current.get("positions")
        if positions is None or positions.shape[-1] != hidden.shape[1]:
            raise ValueError("steering: the block saw tokens that its model's forward call lacks")
        steered = (positions >= 1).to(hidden.device).expand(hidden.shape[0], -1)
        added = vector.to(dtype=hidden.dtype, device=hidden.device)
        return torch.where(steered[..., None], hidden + added, hidden)

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with patch_residual(block, add):
            yield
    finally:
        handle.remove()


def random_direction(vector: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded random direction as long as ``vector`` (the control of a steering vector)."""
    generator = torch.Generator().manual_seed(int(seed))
    direction = torch.randn(vector.shape, generator=generator, dtype=torch.float64)
    direction = direction / direction.norm() * float(vector.norm())
    return direction.to(dtype=vector.dtype, device=vector.device)
