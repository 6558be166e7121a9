"""Capture and patch the residual stream with plain PyTorch forward hooks.

Decoder layers differ across families and transformers versions: they return a tensor or a tuple
whose first element is the hidden state, and receive the hidden state positionally or as the
``hidden_states`` keyword. The helpers here handle both.

Patching hooks are registered with ``prepend=True`` so that they run before any other forward hook
on the block: capture hooks and transformers' own ``output_hidden_states`` recorder then see the
patched hidden state, whatever order the contexts were entered in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


def _input_hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    hidden = kwargs.get("hidden_states")
    if isinstance(hidden, torch.Tensor):
        return hidden
    raise TypeError("cannot find the hidden state among the block's inputs")


def _output_hidden(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find the hidden state in a block output of type {type(output)}")


def _replace_hidden(output: Any, hidden: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return hidden
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    return [hidden, *output[1:]]


@contextmanager
def capture_residual(
    blocks: Sequence[torch.nn.Module],
) -> Iterator[list[torch.Tensor | None]]:
    """Record the residual stream at every layer during the forward passes inside the block.

    Yields a list of ``len(blocks) + 1`` entries: ``[0]`` is the input hidden state of
    ``blocks[0]`` (the embeddings), ``[k]`` the output hidden state of ``blocks[k - 1]``; each
    ``[batch, seq, d]``, detached. A later forward pass overwrites the entries of an earlier one.
    """
    blocks = list(blocks)
    if not blocks:
        raise ValueError("capture_residual needs at least one block")
    captured: list[torch.Tensor | None] = [None] * (len(blocks) + 1)

    def pre_hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        captured[0] = _input_hidden(args, kwargs).detach()

    def make_hook(index: int) -> Callable:
        def hook(_module: torch.nn.Module, _args: tuple, _kwargs: dict, output: Any) -> None:
            captured[index] = _output_hidden(output).detach()

        return hook

    handles = [blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)]
    try:
        for k, block in enumerate(blocks):
            handles.append(block.register_forward_hook(make_hook(k + 1), with_kwargs=True))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def patch_residual(
    block: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace the block's output hidden state ``h`` by ``fn(h)`` during the forward passes."""

    def hook(_module: torch.nn.Module, _args: tuple, _kwargs: dict, output: Any) -> Any:
        hidden = _output_hidden(output)
        new = fn(hidden)
        if not isinstance(new, torch.Tensor) or new.shape != hidden.shape:
            got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
            raise ValueError(
                f"patch function must return a tensor of shape {tuple(hidden.shape)}, got {got}"
            )
        return _replace_hidden(output, new.to(dtype=hidden.dtype, device=hidden.device))

    handle = block.register_forward_hook(hook, with_kwargs=True, prepend=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def add_to_residual(
    block: torch.nn.Module, vector: torch.Tensor, positions: slice | None = None
) -> Iterator[None]:
    """Steering: add ``vector`` ([d]) to the block's output at ``positions`` (all when None)."""
    index = slice(None) if positions is None else positions

    def add(hidden: torch.Tensor) -> torch.Tensor:
        steered = hidden.clone()
        steered[:, index] += vector.to(dtype=hidden.dtype, device=hidden.device)
        return steered

    with patch_residual(block, add):
        yield
