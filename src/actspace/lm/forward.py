"""One batch, the context once: the choice log-likelihoods and the residual stream of each item.

How a batch is scored (:func:`score_batch`):

1. *Context pass.* The batch's contexts are left-padded to a common length and run once with the
   key/value cache on. Hooks on every block capture the residual stream, which is pooled over the
   real context tokens ("last": the last context token; "mean": the mean over context tokens). The
   logits at the last position give the log-probability of every choice's first token.
2. *Continuation passes.* The choices of the batch are grouped by length
   (:func:`actspace.lm.batching.length_groups`, so that a pass pads little); each group runs in one
   forward from its items' cache rows (:func:`cache_rows`), right-padded, with explicit position
   ids that continue each item's own context. The same hooks capture the residual stream at each
   choice's last token; the LM head runs only at the positions that predict a choice token
   (:mod:`actspace.lm.head`), so no [rows, length, vocab] logits are ever held.

So the context is computed once per item, never per choice, and activations come from the same two
forward calls that score the item. Left padding keeps every item's last context token at the same
index and keeps index distances equal to position distances, which sliding-window attention needs.
:mod:`actspace.lm.extraction` runs this over a whole task and writes the activation store.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from actspace.lm.batching import PADDING_TOLERANCE, length_groups
from actspace.lm.head import (
    apply_head,
    chunk_positions,
    head_input,
    head_only_reason,
    logit_processing,
    logits_agree,
    token_logprobs,
)
from actspace.lm.hooks import capture_residual
from actspace.lm.models import residual_blocks
from actspace.lm.scoring import encode_item
from actspace.lm.tasks import Item

log = logging.getLogger(__name__)

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
    tolerance: float = PADDING_TOLERANCE,
    full_logits: bool = False,
) -> BatchResult:
    """Score every choice of every item of ``batch`` and capture its residual stream.

    The contexts run once (with cache), then the choices from the cache in groups of similar length
    whose padding stays within ``tolerance`` (one forward call per group). With ``capture=False``
    no hooks are installed (used to measure the cost of capture); ``full_logits=True`` computes
    the logits of every position, as before the head ran on scored positions only (a reference).
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
    cache = returned_cache(out)
    del out

    # -- continuation passes: the choices in groups of similar length, each from its cache rows --
    conts = [choice for item in batch for choice in item.choices]
    owners = [row for row, item in enumerate(batch) for _ in item.choices]
    starts = [len(batch[owner].context) for owner in owners]
    groups = length_groups([len(cont) for cont in conts], tolerance)
    # a choice's first token is predicted by its context's last logits: read them, free them
    owner_index = torch.tensor(owners, device=device)
    first_tokens = torch.tensor([cont[0] for cont in conts], device=device)
    first_lse = torch.logsumexp(first_logits, dim=-1)
    first = first_logits[owner_index, first_tokens] - first_lse[owner_index]
    totals = first.double().cpu()
    del first_logits, first_lse, first
    ends_cpu: torch.Tensor | None = None
    passes, slots = 1, n_batch * ctx_len
    for group in groups:
        part = _Continuation(
            [conts[r] for r in group], [owners[r] for r in group], [starts[r] for r in group]
        )
        scored = _score_group(
            model, cache, part, ctx_mask, pad_token_id, blocks, capture, full_logits
        )
        totals[group] += scored.logliks
        if capture:
            if ends_cpu is None:
                ends_cpu = torch.zeros((len(conts), *scored.ends.shape[1:]), dtype=out_dtype)
            ends_cpu[group] = scored.ends.to("cpu", out_dtype)
        passes += scored.passes
        slots += len(group) * part.length
    del cache
    if capture:
        choice_end = torch.zeros((n_batch, max_choices, *ends_cpu.shape[1:]), dtype=out_dtype)
        slot = 0
        for row, item in enumerate(batch):
            k = len(item.choices)
            choice_end[row, :k] = ends_cpu[slot : slot + k]
            slot += k
        result.choice_end = choice_end
    slot = 0
    for item in batch:
        k = len(item.choices)
        result.logliks.append(totals[slot : slot + k].tolist())
        slot += k
    result.forward_passes = passes
    result.processed_tokens = slots
    return result


# ---------------------------------------------------------------------------------------------
# one group of choices


@dataclass
class _Continuation:
    """One continuation pass: choice token ids, the batch row owning each, its context length."""

    conts: list[list[int]]
    owners: list[int]
    starts: list[int]

    @property
    def length(self) -> int:
        return max(len(cont) for cont in self.conts)


@dataclass
class _Scored:
    logliks: torch.Tensor  # [rows] float64, on the CPU
    ends: torch.Tensor | None  # [rows, layers+1, d] at each choice's last token
    passes: int


def cache_rows(cache: Any, indices: torch.Tensor) -> Any:
    """A cache holding the rows ``indices`` of ``cache``, which stays as it was.

    Dynamic cache layers select and extend by building new tensors, so copying the layer objects
    suffices; anything else is deep-copied.
    """
    if hasattr(cache, "layers"):
        rows = copy.copy(cache)
        rows.layers = [copy.copy(layer) for layer in cache.layers]
    else:
        rows = copy.deepcopy(cache)
    rows.batch_select_indices(indices)
    return rows


def _score_group(
    model: Any,
    cache: Any,
    part: _Continuation,
    ctx_mask: torch.Tensor,
    pad_token_id: int,
    blocks: Sequence[torch.nn.Module],
    capture: bool,
    full_logits: bool = False,
) -> _Scored:
    """One forward call over ``part`` from its cache rows: the log-likelihoods of the choices'
    tokens after the first (which the context pass scores) and the choice-end states.

    The head runs only at the positions that predict a choice token (:mod:`actspace.lm.head`);
    when the model's own logits disagree with ours, the group runs again with full logits.
    """
    device = ctx_mask.device
    n_rows, length = len(part.conts), part.length
    ids = torch.full((n_rows, length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((n_rows, length), dtype=torch.long)
    for row, cont in enumerate(part.conts):
        ids[row, : len(cont)] = torch.tensor(cont)
        mask[row, : len(cont)] = 1
    ids = ids.to(device)
    owners = torch.tensor(part.owners, device=device)
    lengths = torch.tensor([len(cont) for cont in part.conts], device=device)
    positions = torch.tensor(part.starts, device=device)[:, None] + torch.arange(
        length, device=device
    )
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.cat([ctx_mask[owners], mask.to(device)], dim=1),
        "position_ids": positions,
        "use_cache": True,
    }
    # token t >= 1 of a choice is predicted at position t-1 of its row; token 0 by the context
    rows = torch.repeat_interleave(torch.arange(n_rows, device=device), lengths - 1)
    offsets = torch.cumsum(lengths - 1, 0) - (lengths - 1)
    steps = torch.arange(len(rows), device=device) - offsets[rows]
    targets = ids[rows, steps + 1]

    processing = logit_processing(model)
    head_only = not full_logits and _head_only(model)
    states, out, hidden = _forward_group(model, cache, owners, inputs, blocks, capture, head_only)
    passes = 1
    if head_only and not logits_agree(
        apply_head(model, hidden[:1, -1], processing), out.logits[:1, -1]
    ):
        _FULL_LOGITS.add(model)
        log.warning(
            "%s: logits from its LM head differ from the model's own; computing full logits",
            type(model).__name__,
        )
        head_only = False
        del states, out, hidden
        states, out, hidden = _forward_group(model, cache, owners, inputs, blocks, capture, False)
        passes = 2
    if head_only:
        picked = hidden[rows, steps]
        logprobs = token_logprobs(
            lambda a, b: apply_head(model, picked[a:b], processing),
            targets,
            len(rows),
            chunk_positions(model),
        )
    else:
        full = out.logits
        logprobs = token_logprobs(
            lambda a, b: full[rows[a:b], steps[a:b]].float(), targets, len(rows), len(rows) or 1
        )
    del out, hidden
    rest = torch.zeros(n_rows, dtype=torch.float64, device=device)
    rest.index_add_(0, rows, logprobs.double())
    ends = None
    if capture:
        last = (lengths - 1).view(-1, 1, 1)
        ends = torch.stack(
            [h.gather(1, last.expand(-1, 1, h.shape[-1])).squeeze(1) for h in states], dim=1
        )
    return _Scored(logliks=rest.cpu(), ends=ends, passes=passes)


#: Models whose logits from the head alone disagreed with their own: they get full logits.
_FULL_LOGITS: weakref.WeakSet = weakref.WeakSet()
_TOLD: weakref.WeakSet = weakref.WeakSet()


def _head_only(model: Any) -> bool:
    """Whether the head runs on scored positions only; says once per model why not."""
    if model in _FULL_LOGITS:
        return False
    reason = head_only_reason(model)
    if reason is not None and model not in _TOLD:
        _TOLD.add(model)
        log.info("%s: %s", type(model).__name__, reason)
    return reason is None


def _forward_group(
    model: Any,
    cache: Any,
    owners: torch.Tensor,
    inputs: dict[str, Any],
    blocks: Sequence[torch.nn.Module],
    capture: bool,
    head_only: bool,
) -> tuple[list[torch.Tensor], Any, torch.Tensor | None]:
    """Run one continuation group: (captured residual states, model output, final hidden states
    when ``head_only``, else ``None``; the output then holds the logits of every position)."""
    extra = {cache_argument(model): cache_rows(cache, owners)}
    length = inputs["input_ids"].shape[1]
    if not head_only and _accepts_logits_to_keep(model):
        # the logits of a choice's last token predict nothing: skip them
        extra["logits_to_keep"] = torch.arange(max(length - 1, 1), device=owners.device)
    with contextlib.ExitStack() as stack:
        states = stack.enter_context(_capturing(blocks, capture))
        final = stack.enter_context(head_input(model)) if head_only else None
        out = model(**inputs, **extra)
    return states, out, final[0] if head_only else None
