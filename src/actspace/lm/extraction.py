"""One pass per item: choice log-likelihoods and the residual stream, into the activation store.

:func:`extract_store` scores every item of a task with :func:`actspace.lm.forward.score_batch`
(the context once, then every choice from its cache: one context pass per batch and one pass per
group of choices of similar length, :mod:`actspace.lm.batching`), capturing
the residual stream at every layer in the same calls. It runs in resumable shards
(:mod:`actspace.lm.shards`: a killed run started again resumes at the first unfinished shard and
gives the same store), halves the batch on out-of-memory errors (:mod:`actspace.lm.memory`) and
writes the store described in :mod:`actspace.core.store`.

Before any forward pass it refuses items with a single choice (:func:`check_choices`) and counts
the items longer than the model's window: ``truncation="truncate"`` cuts their contexts from the
left with a warning, ``"refuse"`` raises :class:`TruncationRefused` (the ``extract.truncation``
key); ``meta.json`` records the count (``n_truncated``) and the mode.

What is stored (:mod:`actspace.core.store`): the layers of ``extract.layers`` (all by default),
in ``extract.storage_dtype``. ``auto`` is float16 on every device: the pre-mortems' values from a
float16 store match float32's within their reported precision (tests/test_store_layout.py), at
half the size. A float16 store whose values overflow (beyond +-65504) is extracted again in
float32 rather than failing; ``meta.json`` says so (``storage_dtype_fallback``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from actspace.core.io import atomic_path, atomic_write_json, write_jsonl
from actspace.core.progress import Progress
from actspace.core.store import CHOICE_COUNTS
from actspace.lm.batching import leading_batch
from actspace.lm.forward import POOLINGS, BatchResult, EncodedItem, encode_items, score_batch
from actspace.lm.memory import Backoff, peak_memory_mb
from actspace.lm.models import hidden_size, residual_blocks
from actspace.lm.scoring import item_metrics, needs_bos
from actspace.lm.scoring import max_length as model_max_length
from actspace.lm.shards import (
    COUNTS,
    join_shards,
    model_fingerprint,
    open_shards,
    run_fingerprint,
    shard_complete,
    shard_paths,
    write_progress,
)
from actspace.lm.tasks import Item

log = logging.getLogger(__name__)

#: What ``extract.truncation`` allows for items longer than the model's window.
TRUNCATION_MODES = ("truncate", "refuse")

STORAGE_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


#: What ``auto`` stores, whatever the device (the module docstring says why).
AUTO_STORAGE_DTYPE = torch.float16


def resolve_storage_dtype(storage_dtype: str, device: torch.device) -> torch.dtype:
    """The dtype of the stored activations; ``auto`` is float16 on every ``device``."""
    del device  # the stored values do not depend on where they were computed
    if storage_dtype == "auto":
        return AUTO_STORAGE_DTYPE
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(
            f"storage dtype {storage_dtype!r} unknown; allowed: auto, {', '.join(STORAGE_DTYPES)}"
        )
    return STORAGE_DTYPES[storage_dtype]


class Float16Overflow(ValueError):
    """Activations beyond float16's range while storing float16 (the store falls back)."""


def check_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    """The layers to store (``extract.layers``; ``None`` = every layer 0..n_layers), ascending."""
    if layers is None:
        return list(range(n_layers + 1))
    bad = [k for k in layers if not isinstance(k, int) or isinstance(k, bool)]
    bad += [k for k in layers if k not in bad and not 0 <= k <= n_layers]
    if bad or not layers or len(set(layers)) < len(layers):
        raise ValueError(
            f"extract.layers: {bad[0] if bad else list(layers)!r} is not allowed; give distinct "
            f"layers from 0 (embeddings) to {n_layers} (the model's last block), or null for all"
        )
    return sorted(layers)


class TruncationRefused(ValueError):
    """Items do not fit the model's window and ``extract.truncation`` is ``refuse``."""


def _task_label(task_name: str) -> str:
    return f"task {task_name!r}" if task_name else "the task"


def check_choices(items: Sequence[Item], task_name: str = "") -> None:
    """Refuse items with fewer than two choices: scoring them cannot be wrong, so they would
    count as correct whatever the model does (and a correctness probe has nothing to learn)."""
    single = [item for item in items if len(item.choices) < 2]
    if single:
        raise ValueError(
            f"{_task_label(task_name)}: {len(single)} of {len(items)} items have fewer than 2 "
            f"choices (first: item {single[0].id!r}, {len(single[0].choices)}); multiple-choice "
            "scoring needs at least 2 choices per item"
        )


def check_truncation(
    n_truncated: int, n_items: int, window: int, truncation: str, task_name: str = ""
) -> None:
    """Refuse (``refuse``) or warn about (``truncate``) items longer than the model's window."""
    if truncation not in TRUNCATION_MODES:
        raise ValueError(
            f"truncation {truncation!r} unknown; allowed: {', '.join(TRUNCATION_MODES)}"
        )
    if not n_truncated:
        return
    what = (
        f"{_task_label(task_name)}: {n_truncated} of {n_items} items are longer than the "
        f"model's window of {window} tokens (context + longest choice)"
    )
    if truncation == "refuse":
        raise TruncationRefused(
            f"{what}; extract.truncation is refuse (set it to truncate to cut their contexts "
            "from the left)"
        )
    log.warning(
        "%s: their contexts were cut from the left (extract.truncation: refuse stops instead)",
        what,
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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
    **kw: Any,
) -> dict[str, Any]:
    """Score ``items`` with ``model`` and write the activation store to ``out_dir``; returns meta.

    The keyword arguments are :func:`_extract_store`'s. When float16 storage overflows, the store
    is extracted again in float32 (a warning line; meta.json ``storage_dtype_fallback`` says why)
    instead of failing: a store that needs float32's range gets it.
    """
    try:
        return _extract_store(model, tokenizer, items, out_dir, **kw)
    except Float16Overflow as error:
        log.warning("%s; extracting this store again in float32", error)
        fallback = {"requested": kw.get("storage_dtype"), "why": f"float16 overflowed: {error}"}
        kw = {**kw, "storage_dtype": "float32", "fallback": fallback}
        return _extract_store(model, tokenizer, items, out_dir, **kw)


def _shard_shapes(
    items: Sequence[Item], indices: range, poolings: Sequence[str], layers: list[int], d: int
) -> dict[str, list[int]]:
    """The full shape of every tensor of the shard of ``indices`` (choice ends packed)."""
    shapes = {name: [len(indices), len(layers), d] for name in poolings}
    shapes["choice_end"] = [sum(len(items[i].choices) for i in indices), len(layers), d]
    shapes[CHOICE_COUNTS] = [len(indices)]
    return shapes


def _extract_store(
    model: Any,
    tokenizer: Any,
    items: Sequence[Item],
    out_dir: str | os.PathLike[str],
    *,
    poolings: Sequence[str],
    batch_size: int,
    storage_dtype: str,
    shard_size: int,
    truncation: str = "truncate",
    layers: Sequence[int] | None = None,
    add_bos: bool | None = None,
    model_name: str = "",
    task_name: str = "",
    progress: bool = True,
    max_length: int | None = None,
    on_shard_done: Callable[[int], None] | None = None,
    progress_file: Progress | None = None,
    fallback: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``items`` with ``model`` and write the activation store to ``out_dir``; returns meta.

    Work is split into shards of ``shard_size`` items (in item order) written under
    ``out_dir/.shards``; a re-run after a crash skips complete shards and produces the same store.
    ``add_bos=None`` asks :func:`actspace.lm.scoring.needs_bos`; ``max_length=None`` uses the
    model's position limit. ``on_shard_done(shard)`` is called after each shard is written (tests
    use it to simulate a crash). ``progress`` switches the terminal bar; ``progress_file`` (a
    :class:`~actspace.core.progress.Progress`) counts items per batch, for ``scripts/status.py``.
    ``poolings``, ``batch_size``, ``storage_dtype``, ``shard_size``, ``truncation`` and
    ``layers`` are the ``extract:`` section's keys (the schema holds their defaults).
    ``batch_size`` is the most items per context pass: items of similar context length are
    batched together, fewer than ``batch_size`` where padding would exceed
    :data:`actspace.lm.batching.PADDING_TOLERANCE`, and an out-of-memory error halves it. Items
    with a single choice, and (``truncation="refuse"``) items longer than the window, are refused
    before any forward pass and before the store folder is touched. ``fallback`` (the dtype asked
    for and why float32 replaced float16) is recorded in meta.json.
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
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"truncation {truncation!r} unknown; allowed: truncate, refuse")
    items = list(items)
    if not items:
        raise ValueError("no items to extract")
    check_choices(items, task_name)
    out_dir = Path(out_dir)
    device = next(model.parameters()).device
    out_dtype = resolve_storage_dtype(storage_dtype, device)
    if add_bos is None:
        add_bos = needs_bos(model, tokenizer)
    if max_length is None:
        max_length = model_max_length(model, tokenizer)
    blocks = residual_blocks(model)
    n_layers, d = len(blocks), hidden_size(model)
    stored = check_layers(layers, n_layers)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0

    encoded, n_truncated = encode_items(tokenizer, items, add_bos=add_bos, max_length=max_length)
    check_truncation(n_truncated, len(items), max_length, truncation, task_name)
    max_choices = max(len(item.choices) for item in items)
    n_shards = math.ceil(len(items) / shard_size)
    settings = {
        "model": model_name,
        "task": task_name,
        "n_items": len(items),
        "poolings": poolings,
        "storage_dtype": _dtype_name(out_dtype),
        "layers": stored,
        "compute_dtype": _dtype_name(next(model.parameters()).dtype),
        "shard_size": shard_size,
        "n_layers": n_layers,
        "hidden_size": d,
        "max_choices": max_choices,
        "weights_fingerprint": model_fingerprint(model),
    }
    fingerprint = run_fingerprint(items, encoded, settings)
    shards_dir = open_shards(out_dir, fingerprint, settings)

    shard_ranges = [
        range(s * shard_size, min((s + 1) * shard_size, len(items))) for s in range(n_shards)
    ]
    done = [
        shard_complete(
            shards_dir,
            s,
            shard_ranges[s],
            _shard_shapes(items, shard_ranges[s], poolings, stored, d),
        )
        for s in range(n_shards)
    ]
    resumed = sum(done)
    items_done = sum(len(shard_ranges[s]) for s in range(n_shards) if done[s])

    write_progress(
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
    backoff = Backoff(batch_size)
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
                layers=stored,
                bar=_Ticks(bar, progress_file),
            )
            tensors_path, stats_path, rows_path = shard_paths(shards_dir, shard)
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
            write_progress(
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

    meta = join_shards(
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
            "truncation": truncation,
            "pad_token_id": pad_id,
            "storage_dtype_requested": fallback["requested"] if fallback else storage_dtype,
            "storage_dtype_fallback": fallback["why"] if fallback else None,
        },
        timing={
            "wall_s": time.perf_counter() - wall_start,
            "resumed_shards": resumed,
            "final_batch_size": backoff.batch_size,
            "oom_retries": backoff.retries,
            "peak_memory_mb": peak_memory_mb(device),
        },
    )
    write_progress(
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
    backoff: Backoff,
    *,
    poolings: list[str],
    pad_id: int,
    out_dtype: torch.dtype,
    max_choices: int,
    blocks: Sequence[torch.nn.Module],
    layers: Sequence[int],
    bar: Any,
) -> dict[str, Any]:
    """Run one shard and return its tensors, log-likelihoods and counts.

    Batches hold items of similar context length (at most the back-off's batch size, fewer where
    padding would exceed :data:`actspace.lm.batching.PADDING_TOLERANCE`); ``score_batch`` groups
    their choices by length in the same way.
    """
    # longest first: an out-of-memory error shows up on the first batch; index breaks ties
    order = sorted(
        shard_items, key=lambda it: (-len(it.context), -max(map(len, it.choices)), it.index)
    )
    position = {item.index: row for row, item in enumerate(shard_items)}
    n = len(shard_items)
    d = None
    select = torch.tensor(list(layers))
    counts_per_item = torch.tensor([len(item.choices) for item in shard_items], dtype=torch.int32)
    first_choice = torch.cumsum(counts_per_item, 0) - counts_per_item  # packed row of choice 0
    tensors: dict[str, torch.Tensor] = {}
    logliks: list[list[float] | None] = [None] * n
    counts = dict.fromkeys(COUNTS, 0)

    def keep(batch: Sequence[EncodedItem], result: BatchResult) -> None:
        nonlocal d
        rows = torch.tensor([position[item.index] for item in batch])
        if not tensors:
            d = result.choice_end.shape[-1]
            for name in poolings:
                tensors[name] = torch.zeros((n, len(select), d), dtype=out_dtype)
            total = int(counts_per_item.sum())
            tensors["choice_end"] = torch.zeros((total, len(select), d), dtype=out_dtype)
            tensors[CHOICE_COUNTS] = counts_per_item
        for name in poolings:
            tensors[name][rows] = _checked(result.pooled[name][:, select], name)
        ends = _checked(result.choice_end[:, :, select], "choice_end")
        for b, (item, scores) in enumerate(zip(batch, result.logliks, strict=True)):
            row = position[item.index]
            start, count = int(first_choice[row]), len(item.choices)
            tensors["choice_end"][start : start + count] = ends[b, :count]
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

    def take(rest: Sequence[EncodedItem], ceiling: int) -> int:
        return leading_batch([len(item.context) for item in rest[:ceiling]], ceiling)

    backoff.run(order, run, keep, take)
    return {"tensors": tensors, "logliks": logliks, **counts}


def _checked(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if not torch.isfinite(tensor).all():
        if tensor.dtype == torch.float16:
            raise Float16Overflow(
                f"non-finite values in the {name!r} activations stored as float16 (beyond "
                "+-65504, or the model overflowed)"
            )
        raise ValueError(
            f"non-finite values in the {name!r} activations (the model overflowed, or the storage "
            f"dtype is too narrow: set extract.storage_dtype to float32 or bfloat16)"
        )
    return tensor
