"""Synthetic activation stores with known structure (real store folders: safetensors,
scores.jsonl, meta.json).

Answers are right mostly for ``frequent`` items and wrong mostly for ``unseen`` ones; the pooled
activations carry correctness linearly at one layer only (or nowhere), and the per-choice
activations carry the truth of each choice along one direction.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

#: P(correct) by bucket of a synthetic store's items.
P_CORRECT = {"frequent": 0.95, "rare": 0.5, "unseen": 0.08}


def synthetic_store(
    folder: Path,
    *,
    n: int = 300,
    d: int = 16,
    n_layers: int = 3,
    n_choices: int = 4,
    signal_layer: int = 2,
    planted: bool = True,
    direction_seed: int = 100,
    strength: float = 2.5,
    seed: int = 0,
) -> Path:
    """Write a store to ``folder``; correctness is readable at ``signal_layer`` when planted.

    Pooled layers: noise, plus ``strength * (+1 correct / -1 wrong) * u`` at the signal layer.
    Choice ends (layers >= 1): noise plus ``strength * (+1 true choice / -1 other) * v``.
    ``u`` and ``v`` come from ``direction_seed``, so two stores with the same one share them.
    Log-likelihoods: the chosen answer wins, by a larger margin on average when it is right.
    """
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(direction_seed)
    u = directions.normal(size=d)
    u /= np.linalg.norm(u)
    v = directions.normal(size=d)
    v /= np.linalg.norm(v)
    buckets = rng.choice(list(P_CORRECT), size=n, p=[0.4, 0.3, 0.3])
    correct = rng.random(n) < np.array([P_CORRECT[b] for b in buckets])
    label = rng.integers(0, n_choices, size=n)
    pred = label.copy()
    for i in np.flatnonzero(~correct):
        pred[i] = rng.choice([c for c in range(n_choices) if c != label[i]])
    sign = np.where(correct, 1.0, -1.0)

    pooled = rng.normal(size=(n, n_layers + 1, d))
    if planted:
        pooled[:, signal_layer] += strength * sign[:, None] * u
    truth = np.where(np.arange(n_choices)[None, :] == label[:, None], 1.0, -1.0)
    choice = rng.normal(size=(n, n_choices, n_layers + 1, d))
    if planted:
        choice[:, :, 1:] += strength * truth[:, :, None, None] * v
    mask = np.ones((n, n_choices), dtype=np.uint8)

    rows = []
    for i in range(n):
        logliks = rng.normal(size=n_choices) - 3.0
        margin = rng.exponential(1.0) + (0.7 if correct[i] else 0.0)
        logliks[pred[i]] = logliks.max() + margin
        rows.append(
            {
                "index": i,
                "id": f"item{i}",
                "label": int(label[i]),
                "logliks": logliks.tolist(),
                "pred": int(pred[i]),
                "correct": bool(correct[i]),
                "n_choices": n_choices,
                "metadata": {"bucket": str(buckets[i])},
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"last": torch.tensor(pooled, dtype=torch.float32)}, folder / "pooled.safetensors")
    save_file(
        {
            "choice_end": torch.tensor(choice, dtype=torch.float32),
            "choice_mask": torch.tensor(mask),
        },
        folder / "choice_end.safetensors",
    )
    (folder / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {
        "model": folder.parent.name,
        "task": folder.name,
        "n_items": n,
        "n_layers": n_layers,
        "hidden_size": d,
        "poolings": ["last"],
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def rewrite_store(
    source: Path,
    folder: Path,
    *,
    dtype: torch.dtype = torch.float16,
    layers: list[int] | None = None,
) -> Path:
    """Write a copy of the store at ``source`` as extraction writes one now: the ``layers`` given
    (default: all), in ``dtype``, choice ends packed one row per real choice (no checksums, so
    it opens unchecked). ``meta.json`` records the layers."""
    from actspace.core.store import CHOICE_COUNTS, ActivationStore

    store = ActivationStore(source)
    chosen = list(range(store.n_layers + 1)) if layers is None else list(layers)
    folder.mkdir(parents=True, exist_ok=True)
    pooled = {
        name: torch.from_numpy(store.pooled(name)[:, [store.layers.index(k) for k in chosen]])
        for name in store.poolings
    }
    save_file(
        {name: t.to(dtype).contiguous() for name, t in pooled.items()},
        folder / "pooled.safetensors",
    )
    mask = store.choice_mask()
    rows = np.stack([store.choice_end(k)[0][mask] for k in chosen], axis=1)  # [choices, L, d]
    save_file(
        {
            "choice_end": torch.from_numpy(rows).to(dtype),
            CHOICE_COUNTS: torch.from_numpy(mask.sum(axis=1).astype(np.int32)),
        },
        folder / "choice_end.safetensors",
    )
    (folder / "scores.jsonl").write_bytes((source / "scores.jsonl").read_bytes())
    meta = {**store.meta, "layers": chosen, "storage_dtype": str(dtype).removeprefix("torch.")}
    meta.pop("checksums", None)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder
