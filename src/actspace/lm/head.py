"""The LM head only where log-probabilities are read, in chunks, never over every position.

A forward call of a causal LM ends in the head: hidden states [rows, length, d] times the output
embedding [vocab, d], so logits [rows, length, vocab] exist at once (7.3 GB for Gemma-3-270M's 262k
vocabulary on one extraction batch). Scoring reads one log-probability per choice token, so
:func:`head_input` lets the model run as usual but hands its head only the last position (the
model's own logits there serve as a check) and keeps the full final hidden states; then
:func:`token_logprobs` applies the head at the scored positions only, a chunk at a time, with the
model's own final logit processing (:func:`finish_logits`).

The processing after the head was read from transformers' modeling code for every family in
:data:`actspace.lm.models.FAMILIES`: all apply the head alone, except Gemma 2 and Gemma 3 (text),
which soft-cap (``tanh(logits / cap) * cap``), and Granite, which divides by ``logits_scaling``.
Whether a class does either is read from its ``forward`` source, since e.g. Gemma 3's
multimodal class does not soft-cap where its text class does. Other families, or a model without
an output embedding, get the full logits (:func:`head_only_reason` says why).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from actspace.lm.models import FAMILIES

log = logging.getLogger(__name__)

#: Positions per head chunk are the hidden size divided by this: a chunk's float32 logits then
#: take an eighth of the head weight's float32 bytes, whatever the vocabulary.
CHUNK_DIVISOR = 8


@functools.cache
def _forward_source(model_class: type) -> str:
    try:
        return inspect.getsource(model_class.forward)
    except (OSError, TypeError):
        return ""


def _text_config(model: Any) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


@dataclass(frozen=True)
class LogitProcessing:
    """What a model does to its head's output: soft-capping, then division by a scale."""

    softcap: float | None = None
    scaling: float | None = None


def logit_processing(model: Any) -> LogitProcessing:
    """The final logit processing that ``type(model).forward`` applies after the head."""
    source = _forward_source(type(model))
    config = _text_config(model)
    softcap = getattr(config, "final_logit_softcapping", None)
    scaling = getattr(config, "logits_scaling", None)
    return LogitProcessing(
        softcap=softcap if softcap and "final_logit_softcapping" in source else None,
        scaling=scaling if scaling and "logits_scaling" in source else None,
    )


def head_only_reason(model: Any) -> str | None:
    """Why the head cannot run on scored positions only (``None``: it can)."""
    model_type = getattr(_text_config(model), "model_type", None)
    if getattr(model.config, "model_type", None) not in FAMILIES and model_type not in FAMILIES:
        return (
            f"model type {model.config.model_type!r}: its logit processing after the LM head "
            "was not checked, so full logits are computed"
        )
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Module):
        return "the model has no output embedding module, so full logits are computed"
    if not _forward_source(type(model)):
        return "the model's forward source is unavailable, so full logits are computed"
    return None


def finish_logits(logits: torch.Tensor, processing: LogitProcessing) -> torch.Tensor:
    """Apply the model's own processing to head outputs (same operations, same order)."""
    if processing.softcap is not None:
        logits = logits / processing.softcap
        logits = torch.tanh(logits)
        logits = logits * processing.softcap
    if processing.scaling is not None:
        logits = logits / processing.scaling
    return logits


@contextlib.contextmanager
def head_input(model: Any) -> Iterator[list[torch.Tensor]]:
    """Capture the head's input (the final hidden states) and let the head see only the last
    position of the first row, so the model's logits come back as [1, 1, vocab]: a check, cheap
    whatever the vocabulary."""
    captured: list[torch.Tensor] = []

    def pre_hook(module: torch.nn.Module, args: tuple) -> tuple | None:
        if not args or not isinstance(args[0], torch.Tensor):
            raise TypeError("the LM head was not called with the hidden states as first argument")
        captured.append(args[0])
        return (args[0][:1, -1:], *args[1:])

    handle = model.get_output_embeddings().register_forward_pre_hook(pre_hook)
    try:
        yield captured
    finally:
        handle.remove()


def apply_head(model: Any, hidden: torch.Tensor, processing: LogitProcessing) -> torch.Tensor:
    """Float32 logits of ``hidden`` [..., d] as the model would compute them."""
    return finish_logits(model.get_output_embeddings()(hidden), processing).float()


def logits_agree(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Whether our head's logits match the model's own (to the rounding of its dtype)."""
    tol = 1e-4 if theirs.dtype == torch.float32 else 2e-2
    return torch.allclose(ours.float(), theirs.float(), rtol=tol, atol=tol)


def chunk_positions(model: Any) -> int:
    """Positions per head chunk (see :data:`CHUNK_DIVISOR`)."""
    d = model.get_output_embeddings().weight.shape[-1]
    return max(1, d // CHUNK_DIVISOR)


def token_logprobs(
    logits_of: Any, targets: torch.Tensor, n_positions: int, chunk: int
) -> torch.Tensor:
    """Log-probabilities of ``targets`` [N] under ``logits_of(start, stop)`` ([n, vocab] float32
    logits of positions start..stop-1), ``chunk`` positions at a time: [N] float32."""
    out = torch.empty(n_positions, dtype=torch.float32, device=targets.device)
    for start in range(0, n_positions, chunk):
        stop = min(start + chunk, n_positions)
        logits = logits_of(start, stop)
        picked = logits.gather(1, targets[start:stop, None]).squeeze(1)
        out[start:stop] = picked - torch.logsumexp(logits, dim=-1)
        del logits
    return out
