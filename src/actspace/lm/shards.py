"""The resumable shards of an extraction, and how they are joined into the activation store.

A task is extracted in shards of ``shard_size`` items (in item order) under ``{store}/.shards``:
each shard is three files (tensors, statistics, score rows; the rows are written last), and a
``manifest.json`` holds the fingerprint of everything their content depends on (items, encoding,
settings, a sample of the weights). A re-run with the same fingerprint keeps the complete shards;
any other fingerprint discards them. When every shard is done, :func:`join_shards` writes the
store's files, ``meta.json`` last (with the size and sha256 of the others, which opening the
store checks), and removes the shards. ``progress.json`` beside them tells how
far a run is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from actspace.core.checksums import file_checksum
from actspace.core.io import atomic_path, atomic_write_json, provenance, read_json, read_jsonl
from actspace.core.store import (
    CHECKED_FILES,
    CHOICE_COUNTS,
    STORE_FILES,
    concat_safetensors,
    read_header,
)
from actspace.lm.batching import padding_efficiency
from actspace.lm.forward import EncodedItem
from actspace.lm.memory import peak_memory_mb
from actspace.lm.tasks import Item

log = logging.getLogger(__name__)

SHARDS_DIR = ".shards"
PROGRESS_FILE = "progress.json"
#: The per-shard counts that :func:`join_shards` sums into ``meta.json``: forward calls, token
#: slots run through the model (padding included; ``tokens.processed``), and the real context and
#: choice tokens (``tokens.context``, ``tokens.choices``, summed as ``tokens.real``);
#: ``padding_efficiency`` is slots per real token (1.0: no padding).
COUNTS = ("forward_passes", "processed_tokens", "context_tokens", "choice_tokens")


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


def run_fingerprint(items: Sequence[Item], encoded: Sequence[EncodedItem], settings: dict) -> str:
    """Hash of everything a shard's content depends on, so stale shards are never reused."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for item, enc in zip(items, encoded, strict=True):
        record = [item.id, item.label, enc.context, enc.choices, enc.mean_start]
        digest.update(json.dumps(record).encode())
    return digest.hexdigest()


def open_shards(out_dir: Path, fingerprint: str, settings: dict[str, Any]) -> Path:
    """The shards folder of the store ``out_dir``, ready for a run with ``fingerprint``.

    The store's ``meta.json`` is removed first (the store is incomplete until it is rewritten);
    shards of a run with another fingerprint are discarded; the manifest records this run's.
    """
    shards_dir = out_dir / SHARDS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").unlink(missing_ok=True)
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
    return shards_dir


def shard_paths(shards_dir: Path, shard: int) -> tuple[Path, Path, Path]:
    """A shard's tensors, statistics and score rows."""
    stem = shards_dir / f"shard_{shard:05d}"
    return (
        stem.with_suffix(".safetensors"),
        stem.with_name(stem.name + ".stats.json"),
        stem.with_suffix(".jsonl"),
    )


def shard_complete(
    shards_dir: Path, shard: int, indices: range, shapes: dict[str, list[int]]
) -> bool:
    """A shard is done when its three files exist and agree (the JSONL is written last):
    its tensors have the full ``shapes`` (rows included) and its rows are ``indices``."""
    tensors, stats, rows = shard_paths(shards_dir, shard)
    if not (tensors.is_file() and stats.is_file() and rows.is_file()):
        return False
    try:
        header = read_header(tensors)
        for name, shape in shapes.items():
            if name not in header or header[name]["shape"] != list(shape):
                return False
        read_json(stats)
        found = [row.get("index") for row in read_jsonl(rows)]
    except (ValueError, OSError, json.JSONDecodeError):
        return False
    return found == list(indices)


def write_progress(
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
    """Write ``progress.json``: items done, the rate of this run, its ETA and the peak memory."""
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


def store_bytes(out_dir: Path) -> dict[str, Any]:
    """The size of the store's data files, each and in total (meta.json itself not counted)."""
    files = {name: (out_dir / name).stat().st_size for name in CHECKED_FILES}
    return {"files": files, "total": sum(files.values())}


def join_shards(
    out_dir: Path,
    shards_dir: Path,
    n_shards: int,
    poolings: list[str],
    *,
    settings: dict[str, Any],
    extra: dict[str, Any],
    timing: dict[str, Any],
) -> dict[str, Any]:
    """Join the shards into the store's files, write meta.json last (with every other file's
    size and sha256, and ``store_bytes``), remove the shards."""
    paths = [shard_paths(shards_dir, s) for s in range(n_shards)]
    tensor_parts = [p[0] for p in paths]
    concat_safetensors(out_dir / "pooled.safetensors", tensor_parts, poolings)
    concat_safetensors(
        out_dir / "choice_end.safetensors", tensor_parts, ["choice_end", CHOICE_COUNTS]
    )
    with atomic_path(out_dir / "scores.jsonl") as tmp, open(tmp, "wb") as out:
        for _, _, rows_path in paths:
            out.write(rows_path.read_bytes())
    stats = [read_json(p[1]) for p in paths]
    total = {key: sum(s[key] for s in stats) for key in COUNTS}
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
            "real": real_tokens,
            "processed": total["processed_tokens"],
        },
        "padding_efficiency": padding_efficiency(total["processed_tokens"], real_tokens),
        "files": list(STORE_FILES),
        "store_bytes": store_bytes(out_dir),
        "checksums": {name: file_checksum(out_dir / name) for name in CHECKED_FILES},
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
