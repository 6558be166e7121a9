"""One pass per item: choice log-likelihoods and the residual stream, into the activation store.

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

:func:`extract_store` runs this over a task in shards (resumable, deterministic), halves the batch
on out-of-memory errors, and writes the store described in :mod:`actspace.core.store`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import logging
import math
import os
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from actspace.core.io import (
    atomic_path,
    atomic_write_json,
    provenance,
    read_json,
    read_jsonl,
    write_jsonl,
)
from actspace.core.progress import Progress
from actspace.core.store import STORE_FILES, concat_safetensors, read_header
from actspace.lm.hooks import capture_residual
from actspace.lm.models import hidden_size, residual_blocks
from actspace.lm.scoring import encode_item, item_metrics, needs_bos
from actspace.lm.scoring import max_length as model_max_length
from actspace.lm.tasks import Item

log = logging.getLogger(__name__)

#: Poolings of the context's residual stream that the store can hold.
POOLINGS = ("last", "mean")

STORAGE_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

SHARDS_DIR = ".shards"
PROGRESS_FILE = "progress.json"


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
    """Encode items with :func:`actspace.lm.scoring.encode_item`; returns ``(encoded, n_truncated)``.

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
def _class_accepts_logits_to_keep(model_class: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model_class.forward).parameters
    except (TypeError, ValueError):
        return False


def _accepts_logits_to_keep(model: Any) -> bool:
    """Whether the model can skip the LM head at positions whose logits are not needed."""
    return _class_accepts_logits_to_keep(type(model))


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
    cache = out.past_key_values
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
            past_key_values=cache,
            use_cache=True,
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


# ---------------------------------------------------------------------------------------------
# out-of-memory back-off


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocator out-of-memory errors."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory so far: CUDA allocated on a GPU device, else the process's peak RSS."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class ExtractionOutOfMemory(RuntimeError):
    """Out of memory even with one item per batch: the step cannot go on as configured."""


class _Backoff:
    """Holds the current batch size; halves it on out-of-memory errors (never grows back)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.retries = 0

    def run(
        self,
        order: Sequence[EncodedItem],
        fn: Callable[[Sequence[EncodedItem]], BatchResult],
        on_batch: Callable[[Sequence[EncodedItem], BatchResult], None],
    ) -> None:
        position = 0
        while position < len(order):
            batch = order[position : position + self.batch_size]
            failed = False
            try:
                result = fn(batch)
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                if self.batch_size == 1:
                    raise ExtractionOutOfMemory(
                        f"out of memory with batch size 1 (item {batch[0].index}, "
                        f"{batch[0].n_tokens} tokens); use a smaller --dtype, --max-length or a "
                        f"larger device"
                    ) from error
                failed = True
            if failed:  # outside the except block, so the failed batch's tensors can be freed
                _free_memory()
                self.batch_size = max(1, self.batch_size // 2)
                self.retries += 1
                log.warning("out of memory; retrying with batch size %d", self.batch_size)
                continue
            on_batch(batch, result)
            position += len(batch)


# ---------------------------------------------------------------------------------------------
# the store


def resolve_storage_dtype(storage_dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` stores float16 for GPU runs and float32 for CPU runs."""
    if storage_dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(
            f"storage dtype {storage_dtype!r} unknown; allowed: auto, {', '.join(STORAGE_DTYPES)}"
        )
    return STORAGE_DTYPES[storage_dtype]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@torch.no_grad()
def model_fingerprint(model: Any, samples: int = 1024) -> str:
    """A cheap hash of the weights: every parameter's name and shape and a strided sample of it.

    Enough to tell a retrained or different model apart from the one that wrote old shards,
    without reading every weight of a large model.
    """
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // samples)
        sample = flat[::step][:samples].to("cpu", torch.float32).numpy().tobytes()
        digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
        digest.update(sample)
    return digest.hexdigest()


def _fingerprint(items: Sequence[Item], encoded: Sequence[EncodedItem], settings: dict) -> str:
    """Hash of everything a shard's content depends on, so stale shards are never reused."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for item, enc in zip(items, encoded, strict=True):
        record = [item.id, item.label, enc.context, enc.choices, enc.mean_start]
        digest.update(json.dumps(record).encode())
    return digest.hexdigest()


def _shard_paths(shards_dir: Path, shard: int) -> tuple[Path, Path, Path]:
    stem = shards_dir / f"shard_{shard:05d}"
    return (
        stem.with_suffix(".safetensors"),
        stem.with_name(stem.name + ".stats.json"),
        stem.with_suffix(".jsonl"),
    )


def _shard_complete(
    shards_dir: Path, shard: int, indices: range, names: dict[str, list[int]]
) -> bool:
    """A shard is done when its three files exist and agree (the JSONL is written last)."""
    tensors, stats, rows = _shard_paths(shards_dir, shard)
    if not (tensors.is_file() and stats.is_file() and rows.is_file()):
        return False
    try:
        header = read_header(tensors)
        for name, shape in names.items():
            if name not in header or header[name]["shape"] != [len(indices), *shape]:
                return False
        read_json(stats)
        found = [row.get("index") for row in read_jsonl(rows)]
    except (ValueError, OSError, json.JSONDecodeError):
        return False
    return found == list(indices)


def _score_row(item: Item, index: int, enc: EncodedItem, logliks: list[float]) -> dict[str, Any]:
    return {
        "index": index,
        "id": item.id,
        "label": item.label,
        "logliks": logliks,
        **item_metrics(logliks, item),
        "n_choices": len(item.choices),
        "choice_chars": [len(choice) for choice in item.choices],
        "choice_tokens": [len(choice) for choice in enc.choices],
        "metadata": item.metadata,
    }


def extract_store(
    model: Any,
    tokenizer: Any,
    items: Sequence[Item],
    out_dir: str | os.PathLike[str],
    *,
    poolings: Sequence[str] = POOLINGS,
    batch_size: int = 16,
    storage_dtype: str = "auto",
    shard_size: int = 256,
    add_bos: bool | None = None,
    model_name: str = "",
    task_name: str = "",
    progress: bool = True,
    max_length: int | None = None,
    on_shard_done: Callable[[int], None] | None = None,
    progress_file: Progress | None = None,
) -> dict[str, Any]:
    """Score ``items`` with ``model`` and write the activation store to ``out_dir``; returns meta.

    Work is split into shards of ``shard_size`` items (in item order) written under
    ``out_dir/.shards``; a re-run after a crash skips complete shards and produces the same store.
    ``add_bos=None`` asks :func:`actspace.lm.scoring.needs_bos`; ``max_length=None`` uses the model's
    position limit. ``on_shard_done(shard)`` is called after each shard is written (tests use it to
    simulate a crash). ``progress`` switches the terminal bar; ``progress_file`` (a
    :class:`~actspace.core.progress.Progress`) counts items per batch, for ``scripts/status.py``.
    """
    wall_start = time.perf_counter()
    poolings = list(poolings)
    if (
        not poolings
        or any(p not in POOLINGS for p in poolings)
        or len(set(poolings)) < len(poolings)
    ):
        raise ValueError(f"poolings must be distinct values from {POOLINGS}, got {poolings}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError("batch_size and shard_size must be at least 1")
    items = list(items)
    if not items:
        raise ValueError("no items to extract")
    out_dir = Path(out_dir)
    device = next(model.parameters()).device
    out_dtype = resolve_storage_dtype(storage_dtype, device)
    if add_bos is None:
        add_bos = needs_bos(model)
    if max_length is None:
        max_length = model_max_length(model, tokenizer)
    blocks = residual_blocks(model)
    n_layers, d = len(blocks), hidden_size(model)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0

    encoded, n_truncated = encode_items(tokenizer, items, add_bos=add_bos, max_length=max_length)
    max_choices = max(len(item.choices) for item in items)
    n_shards = math.ceil(len(items) / shard_size)
    settings = {
        "model": model_name,
        "task": task_name,
        "n_items": len(items),
        "poolings": poolings,
        "storage_dtype": _dtype_name(out_dtype),
        "compute_dtype": _dtype_name(next(model.parameters()).dtype),
        "shard_size": shard_size,
        "n_layers": n_layers,
        "hidden_size": d,
        "max_choices": max_choices,
        "weights_fingerprint": model_fingerprint(model),
    }
    fingerprint = _fingerprint(items, encoded, settings)
    shards_dir = out_dir / SHARDS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)  # the store is incomplete until rewritten
    manifest = shards_dir / "manifest.json"
    if shards_dir.exists():
        try:
            stale = read_json(manifest).get("fingerprint") != fingerprint
        except (OSError, ValueError):
            stale = True
        if stale:
            log.info("discarding shards of a different run in %s", shards_dir)
            shutil.rmtree(shards_dir)
    shards_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(manifest, {"fingerprint": fingerprint, **settings})

    shapes: dict[str, list[int]] = {name: [n_layers + 1, d] for name in poolings}
    shapes["choice_end"] = [max_choices, n_layers + 1, d]
    shapes["choice_mask"] = [max_choices]
    shard_ranges = [
        range(s * shard_size, min((s + 1) * shard_size, len(items))) for s in range(n_shards)
    ]
    done = [_shard_complete(shards_dir, s, shard_ranges[s], shapes) for s in range(n_shards)]
    resumed = sum(done)
    items_done = sum(len(shard_ranges[s]) for s in range(n_shards) if done[s])

    _write_progress(
        out_dir,
        items_done=items_done,
        total=len(items),
        run_items=0,
        elapsed=0.0,
        last_shard=max((s for s in range(n_shards) if done[s]), default=None),
        n_shards=n_shards,
        device=device,
    )
    if progress_file is not None:
        if resumed:
            progress_file.last_checkpoint = f"resumed with {resumed}/{n_shards} shards done"
        progress_file.set_total(len(items), initial=items_done)
    backoff = _Backoff(batch_size)
    bar = tqdm(
        total=len(items),
        initial=items_done,
        unit="item",
        desc=f"extract {model_name}/{task_name}".rstrip("/"),
        disable=not progress,
        dynamic_ncols=True,
    )
    run_items, run_start = 0, time.perf_counter()
    try:
        for shard, indices in enumerate(shard_ranges):
            if done[shard]:
                continue
            shard_start = time.perf_counter()
            stats = _extract_shard(
                model,
                [encoded[i] for i in indices],
                backoff,
                poolings=poolings,
                pad_id=pad_id,
                out_dtype=out_dtype,
                max_choices=max_choices,
                blocks=blocks,
                bar=_Ticks(bar, progress_file),
            )
            tensors_path, stats_path, rows_path = _shard_paths(shards_dir, shard)
            with atomic_path(tensors_path) as tmp:
                save_file(stats.pop("tensors"), str(tmp))
            stats["seconds"] = time.perf_counter() - shard_start
            atomic_write_json(stats_path, stats)
            rows = [
                _score_row(items[i], i, encoded[i], logliks)
                for i, logliks in zip(indices, stats.pop("logliks"), strict=True)
            ]
            write_jsonl(rows_path, rows)
            run_items += len(indices)
            items_done += len(indices)
            _write_progress(
                out_dir,
                items_done=items_done,
                total=len(items),
                run_items=run_items,
                elapsed=time.perf_counter() - run_start,
                last_shard=shard,
                n_shards=n_shards,
                device=device,
            )
            if progress_file is not None:
                progress_file.update(0, checkpoint=f"shard {shard + 1}/{n_shards}")
            if on_shard_done is not None:
                on_shard_done(shard)
    finally:
        bar.close()

    meta = _finish(
        out_dir,
        shards_dir,
        n_shards,
        poolings,
        settings=settings,
        extra={
            "device": str(device),
            "batch_size": batch_size,
            "add_bos": add_bos,
            "mean_skips_bos": add_bos,
            "max_length": max_length,
            "n_truncated": n_truncated,
            "pad_token_id": pad_id,
        },
        timing={
            "wall_s": time.perf_counter() - wall_start,
            "resumed_shards": resumed,
            "final_batch_size": backoff.batch_size,
            "oom_retries": backoff.retries,
            "peak_memory_mb": peak_memory_mb(device),
        },
    )
    _write_progress(
        out_dir,
        items_done=len(items),
        total=len(items),
        run_items=run_items,
        elapsed=time.perf_counter() - run_start,
        last_shard=n_shards - 1,
        n_shards=n_shards,
        device=device,
    )
    return meta


class _Ticks:
    """Advances the terminal bar and the progress file together, once per batch."""

    def __init__(self, bar: Any, progress_file: Progress | None) -> None:
        self.bar = bar
        self.progress_file = progress_file

    def update(self, n: int) -> None:
        self.bar.update(n)
        if self.progress_file is not None:
            self.progress_file.update(n)


def _extract_shard(
    model: Any,
    shard_items: list[EncodedItem],
    backoff: _Backoff,
    *,
    poolings: list[str],
    pad_id: int,
    out_dtype: torch.dtype,
    max_choices: int,
    blocks: Sequence[torch.nn.Module],
    bar: Any,
) -> dict[str, Any]:
    """Run one shard (length-sorted batches) and return its tensors, log-likelihoods and counts."""
    # longest first: an out-of-memory error shows up on the first batch; index breaks ties
    order = sorted(
        shard_items, key=lambda it: (-len(it.context), -max(map(len, it.choices)), it.index)
    )
    position = {item.index: row for row, item in enumerate(shard_items)}
    n = len(shard_items)
    depth, d = len(blocks) + 1, None
    tensors: dict[str, torch.Tensor] = {}
    logliks: list[list[float] | None] = [None] * n
    counts = {"forward_passes": 0, "processed_tokens": 0, "context_tokens": 0, "choice_tokens": 0}

    def keep(batch: Sequence[EncodedItem], result: BatchResult) -> None:
        nonlocal d
        rows = torch.tensor([position[item.index] for item in batch])
        if not tensors:
            d = result.choice_end.shape[-1]
            for name in poolings:
                tensors[name] = torch.zeros((n, depth, d), dtype=out_dtype)
            tensors["choice_end"] = torch.zeros((n, max_choices, depth, d), dtype=out_dtype)
            tensors["choice_mask"] = torch.zeros((n, max_choices), dtype=torch.uint8)
        for name in poolings:
            tensors[name][rows] = _checked(result.pooled[name], name)
        tensors["choice_end"][rows] = _checked(result.choice_end, "choice_end")
        for item, scores in zip(batch, result.logliks, strict=True):
            row = position[item.index]
            tensors["choice_mask"][row, : len(item.choices)] = 1
            if not all(math.isfinite(value) for value in scores):
                raise ValueError(f"item {item.index}: non-finite log-likelihood {scores}")
            logliks[row] = scores
            counts["context_tokens"] += len(item.context)
            counts["choice_tokens"] += sum(len(choice) for choice in item.choices)
        counts["forward_passes"] += result.forward_passes
        counts["processed_tokens"] += result.processed_tokens
        bar.update(len(batch))

    def run(batch: Sequence[EncodedItem]) -> BatchResult:
        return score_batch(
            model,
            batch,
            poolings=poolings,
            capture=True,
            pad_token_id=pad_id,
            out_dtype=out_dtype,
            max_choices=max_choices,
            blocks=blocks,
        )

    backoff.run(order, run, keep)
    return {"tensors": tensors, "logliks": logliks, **counts}


def _checked(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.isfinite(tensor).all():
        raise ValueError(
            f"non-finite values in the {name!r} activations (the model overflowed, or the storage "
            f"dtype is too narrow: try --storage-dtype float32 or bfloat16)"
        )
    return tensor


def _write_progress(
    out_dir: Path,
    *,
    items_done: int,
    total: int,
    run_items: int,
    elapsed: float,
    last_shard: int | None,
    n_shards: int,
    device: torch.device,
) -> None:
    rate = run_items / elapsed if elapsed > 0 and run_items else None
    eta = (total - items_done) / rate if rate else None
    atomic_write_json(
        out_dir / PROGRESS_FILE,
        {
            "items_done": items_done,
            "items_total": total,
            "items_per_s": rate,
            "eta_s": eta,
            "last_shard": last_shard,
            "n_shards": n_shards,
            "peak_memory_mb": peak_memory_mb(device),
            "done": items_done >= total,
            "updated": time.time(),
        },
    )


def _finish(
    out_dir: Path,
    shards_dir: Path,
    n_shards: int,
    poolings: list[str],
    *,
    settings: dict[str, Any],
    extra: dict[str, Any],
    timing: dict[str, Any],
) -> dict[str, Any]:
    """Join the shards into the store's files, write meta.json last, remove the shards."""
    paths = [_shard_paths(shards_dir, s) for s in range(n_shards)]
    tensor_parts = [p[0] for p in paths]
    concat_safetensors(out_dir / "pooled.safetensors", tensor_parts, poolings)
    concat_safetensors(
        out_dir / "choice_end.safetensors", tensor_parts, ["choice_end", "choice_mask"]
    )
    with atomic_path(out_dir / "scores.jsonl") as tmp, open(tmp, "wb") as out:
        for _, _, rows_path in paths:
            out.write(rows_path.read_bytes())
    stats = [read_json(p[1]) for p in paths]
    total = {
        key: sum(s[key] for s in stats)
        for key in ("forward_passes", "processed_tokens", "context_tokens", "choice_tokens")
    }
    compute_s = sum(s["seconds"] for s in stats)
    n_items = settings["n_items"]
    real_tokens = total["context_tokens"] + total["choice_tokens"]
    meta = {
        **settings,
        **extra,
        "forward_passes": total["forward_passes"],
        "tokens": {
            "context": total["context_tokens"],
            "choices": total["choice_tokens"],
            "processed": total["processed_tokens"],
        },
        "files": list(STORE_FILES),
        "timings": {
            **timing,
            "compute_s": compute_s,
            "items_per_s": n_items / compute_s if compute_s > 0 else None,
            "tokens_per_s": real_tokens / compute_s if compute_s > 0 else None,
        },
        "provenance": provenance(),
    }
    atomic_write_json(out_dir / "meta.json", meta)
    shutil.rmtree(shards_dir)
    return meta
