"""One batch, two forward calls: the choice log-likelihoods and the residual stream of each item.

How a batch is scored (:func:`score_batch`):

1. *Context pass.* The batch's contexts are left-padded to a common length and run once with the
   key/value cache on. Hooks on every block capture the residual stream, which is pooled over the
   real context tokens ("last": the last context token; "mean": the mean over context tokens). The
   logits at the last position give the log-probability of every choice's first token.
2. *Continuation pass.* The cache rows are repeated once per choice (``batch_select_indices``) and
   all choices of all items of the batch run in one forward, right-padded, with explicit position
   ids that continue each item's own context. The same hooks capture the residual stream at each
   choice's last token; the logits give the log-probabilities of the remaining choice tokens.

So the context is computed once per item, never per choice, and activations come from the same two
forward calls that score the item. Left padding keeps every item's last context token at the same
index and keeps index distances equal to position distances, which sliding-window attention needs.
:mod:`actspace.lm.extraction` runs this over a whole task and writes the activation store.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from actspace.lm.hooks import capture_residual
from actspace.lm.models import residual_blocks
from actspace.lm.scoring import encode_item
from actspace.lm.tasks import Item

#: Poolings of the context's residual stream that the store can hold.
POOLINGS = ("last", "mean")


@dataclass(frozen=True)
class EncodedItem:
    """Token ids of one item: the shared context and one continuation per choice.

    ``mean_start`` is the first context position that the mean pooling includes (1 when a BOS token
    was prepended, so that the attention-sink token does not dominate the mean).
    """

    index: int
    context: list[int]
    choices: list[list[int]]
    mean_start: int = 0

    @property
    def n_tokens(self) -> int:
        """Real tokens processed by the shared-prefix pass: context once plus every choice."""
        return len(self.context) + sum(len(choice) for choice in self.choices)


@dataclass
class BatchResult:
    """What one batch yields; tensors are on the CPU in the requested dtype."""

    logliks: list[list[float]]
    pooled: dict[str, torch.Tensor] = field(default_factory=dict)  # [B, layers+1, d]
    choice_end: torch.Tensor | None = None  # [B, max_choices, layers+1, d]
    forward_passes: int = 0
    processed_tokens: int = 0  # token slots run through the model, padding included


# ---------------------------------------------------------------------------------------------
# encoding


def encode_items(
    tokenizer: Any,
    items: Sequence[Item],
    *,
    add_bos: bool = False,
    max_length: int | None = None,
) -> tuple[list[EncodedItem], int]:
    """Encode items with :func:`actspace.lm.scoring.encode_item`: ``(encoded, n_truncated)``.

    When context plus the longest choice exceeds ``max_length``, the context is cut from the left
    so that every choice fits after the one shared context. (lm-evaluation-harness also cuts from
    the left, but per choice; the two agree whenever nothing is cut.)
    """
    encoded: list[EncodedItem] = []
    n_truncated = 0
    for index, item in enumerate(items):
        context, choices = encode_item(tokenizer, item, add_bos=add_bos)
        context, choices = list(context), [list(choice) for choice in choices]
        if not choices:
            raise ValueError(f"item {item.id!r} has no choices")
        for number, choice in enumerate(choices):
            if not choice:
                raise ValueError(f"item {item.id!r}: choice {number} encodes to no tokens")
        longest = max(len(choice) for choice in choices)
        truncated = max_length is not None and len(context) + longest > max_length
        if truncated:
            keep = max_length - longest
            if keep < 1:
                raise ValueError(
                    f"item {item.id!r}: a choice of {longest} tokens does not fit "
                    f"max_length={max_length}"
                )
            context = context[-keep:]
            n_truncated += 1
        has_bos = add_bos and not truncated  # a cut context has lost its BOS token
        mean_start = 1 if has_bos and len(context) > 1 else 0
        encoded.append(EncodedItem(index, context, choices, mean_start))
    return encoded, n_truncated


# ---------------------------------------------------------------------------------------------
# one batch


@functools.cache
def _forward_parameters(model_class: type) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(model_class.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def _accepts_logits_to_keep(model: Any) -> bool:
    """Whether the model can skip the LM head at positions whose logits are not needed."""
    return "logits_to_keep" in _forward_parameters(type(model))


def cache_argument(model: Any) -> str:
    """The name under which ``model.forward`` takes a key/value cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns until its
    removal in 5.40); older releases only know ``past_key_values``. The signature tells which.
    """
    return "cache" if "cache" in _forward_parameters(type(model)) else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The cache a forward call returned (``cache`` in 5.24+, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _capturing(
    blocks: Sequence[torch.nn.Module], capture: bool
) -> contextlib.AbstractContextManager[list[torch.Tensor | None]]:
    """Residual-stream capture hooks, or nothing at all when ``capture`` is off."""
    return capture_residual(blocks) if capture else contextlib.nullcontext([])


def _pool(
    states: Sequence[torch.Tensor],
    context_mask: torch.Tensor,
    poolings: Sequence[str],
    out_dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """Pool captured context states ([B, Lc, d] per layer, left-padded) to [B, layers+1, d]."""
    pooled: dict[str, torch.Tensor] = {}
    if "last" in poolings:
        pooled["last"] = torch.stack([h[:, -1] for h in states], dim=1).to("cpu", out_dtype)
    if "mean" in poolings:
        weights = context_mask.to(torch.float32)
        weights = (weights / weights.sum(dim=1, keepdim=True)).unsqueeze(1)  # [B, 1, Lc]
        means = [torch.bmm(weights, h.to(torch.float32)).squeeze(1) for h in states]
        pooled["mean"] = torch.stack(means, dim=1).to("cpu", out_dtype)
    return {name: pooled[name] for name in poolings}


@torch.no_grad()
def score_batch(
    model: Any,
    batch: Sequence[EncodedItem],
    *,
    poolings: Sequence[str] = POOLINGS,
    capture: bool = True,
    pad_token_id: int = 0,
    out_dtype: torch.dtype = torch.float32,
    max_choices: int | None = None,
    blocks: Sequence[torch.nn.Module] | None = None,
) -> BatchResult:
    """Score every choice of every item of ``batch`` and capture its residual stream.

    Two forward calls whatever the batch: the contexts once (with cache), then all choices from the
    cache. With ``capture=False`` no hooks are installed (used to measure the cost of capture).
    """
    if not batch:
        raise ValueError("score_batch needs at least one item")
    device = next(model.parameters()).device
    blocks = residual_blocks(model) if blocks is None else blocks
    n_batch = len(batch)
    max_choices = max(len(item.choices) for item in batch) if max_choices is None else max_choices

    # -- context pass (left-padded) ------------------------------------------------------------
    ctx_len = max(len(item.context) for item in batch)
    ctx_ids = torch.full((n_batch, ctx_len), pad_token_id, dtype=torch.long)
    ctx_mask = torch.zeros((n_batch, ctx_len), dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item.context)
        ctx_ids[row, ctx_len - n :] = torch.tensor(item.context)
        ctx_mask[row, ctx_len - n :] = 1
    pool_mask = ctx_mask.clone()
    for row, item in enumerate(batch):
        pool_mask[
            row, ctx_len - len(item.context) : ctx_len - len(item.context) + item.mean_start
        ] = 0
    pool_mask = pool_mask.to(device)
    ctx_pos = (ctx_mask.cumsum(dim=1) - 1).clamp(min=0)
    ctx_ids, ctx_mask, ctx_pos = ctx_ids.to(device), ctx_mask.to(device), ctx_pos.to(device)
    keep_logits = _accepts_logits_to_keep(model)
    extra = {"logits_to_keep": 1} if keep_logits else {}

    result = BatchResult(logliks=[])
    with _capturing(blocks, capture) as states:
        out = model(
            input_ids=ctx_ids,
            attention_mask=ctx_mask,
            position_ids=ctx_pos,
            use_cache=True,
            **extra,
        )
    if capture:
        result.pooled = _pool(states, pool_mask, poolings, out_dtype)
    del states
    first_logits = out.logits[:, -1].float()
    first_logprobs = first_logits - torch.logsumexp(first_logits, dim=-1, keepdim=True)
    cache = returned_cache(out)
    del out, first_logits

    # -- continuation pass: every choice of every item, from the cache --------------------------
    owners = [row for row, item in enumerate(batch) for _ in item.choices]
    conts = [choice for item in batch for choice in item.choices]
    n_rows = len(conts)
    cont_len = max(len(cont) for cont in conts)
    cont_ids = torch.full((n_rows, cont_len), pad_token_id, dtype=torch.long)
    cont_mask = torch.zeros((n_rows, cont_len), dtype=torch.long)
    for row, cont in enumerate(conts):
        cont_ids[row, : len(cont)] = torch.tensor(cont)
        cont_mask[row, : len(cont)] = 1
    owner_index = torch.tensor(owners, device=device)
    lengths = torch.tensor([len(cont) for cont in conts], device=device)
    start = torch.tensor([len(batch[owner].context) for owner in owners], device=device)
    cont_pos = start[:, None] + torch.arange(cont_len, device=device)[None, :]
    full_mask = torch.cat([ctx_mask[owner_index], cont_mask.to(device)], dim=1)
    cont_ids = cont_ids.to(device)
    cache.batch_select_indices(owner_index)

    # the logits of a choice's last token predict nothing: compute the lm head only before it
    extra = {}
    if keep_logits:
        extra["logits_to_keep"] = torch.arange(cont_len - 1, device=device) if cont_len > 1 else 1
    with _capturing(blocks, capture) as states:
        out = model(
            input_ids=cont_ids,
            attention_mask=full_mask,
            position_ids=cont_pos,
            use_cache=True,
            **{cache_argument(model): cache},
            **extra,
        )
    del cache
    if capture:
        last = (lengths - 1).view(-1, 1, 1)
        ends = [h.gather(1, last.expand(-1, 1, h.shape[-1])).squeeze(1) for h in states]
        ends_cpu = torch.stack(ends, dim=1).to("cpu", out_dtype)  # [rows, layers+1, d]
        del ends
        choice_end = torch.zeros((n_batch, max_choices, *ends_cpu.shape[1:]), dtype=out_dtype)
        slot = 0
        for row, item in enumerate(batch):
            k = len(item.choices)
            choice_end[row, :k] = ends_cpu[slot : slot + k]
            slot += k
        result.choice_end = choice_end
    del states

    # -- log-likelihoods ------------------------------------------------------------------------
    # token t of a choice is predicted by the logits at t-1 (t >= 1) or by the context's last logits
    logits = out.logits[:, : max(cont_len - 1, 0)].float()
    first = first_logprobs[owner_index].gather(1, cont_ids[:, :1]).squeeze(1)
    if cont_len > 1:
        targets = cont_ids[:, 1:].unsqueeze(-1)
        token_lp = logits.gather(2, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        token_lp = torch.where(cont_mask[:, 1:].to(device).bool(), token_lp, 0.0)
        rest = token_lp.double().sum(dim=1)
    else:
        rest = torch.zeros(n_rows, dtype=torch.float64, device=device)
    totals = (first.double() + rest).cpu().tolist()
    del out, logits
    slot = 0
    for item in batch:
        k = len(item.choices)
        result.logliks.append(totals[slot : slot + k])
        slot += k
    result.forward_passes = 2
    result.processed_tokens = n_batch * ctx_len + n_rows * cont_len
    return result
