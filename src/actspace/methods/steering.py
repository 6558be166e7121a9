"""Steering vectors: contrast pairs, layer means, the intervention, generation and its side effects.

A *steering vector* for an attribute at layer ``k`` is the mean difference of the residual stream
between texts with the attribute and the same texts without it (activation addition, Turner et al.
2023; contrastive activation addition, Rimsky et al. 2024): every text's residual stream after
``k`` blocks is pooled over its tokens, and the mean over negative texts is subtracted from the
mean over positive ones. Steering adds ``coefficient * vector`` to the output of block ``k - 1``
at every position while the model reads the prompt and generates, so layers run 1..L (layer 0, the
embeddings, is not a block output).

Generation is seeded sampling with ``model.generate``: prompts of equal token length are batched
together (no padding, so no position bookkeeping), and ``torch.manual_seed`` is set before each
batch from the seed and the batch's prompt indices. The same prompt therefore meets the same random
numbers under every steering setting, which makes the steered-minus-unsteered comparison paired.

Side effects are measured on neutral material with the same intervention on (or a text prefix in
front, the prompting alternative): the perplexity of neutral sentences and the accuracy on a
multiple-choice task. Branch 2C's behavior_edit and patching_vs_prompting are built on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actspace.core.io import read_jsonl
from actspace.lm.forward import encode_items, score_batch
from actspace.lm.hooks import add_to_residual, capture_residual
from actspace.lm.models import hidden_size, residual_blocks
from actspace.lm.scoring import item_metrics, needs_bos
from actspace.lm.tasks import Item
from actspace.methods.scorers import AttributeScorer
from actspace.world.attributes import ATTRIBUTES

POOLINGS = ("mean", "last")
POLARITIES = ("positive", "negative")


# ----------------------------------------------------------------------------------- the data
@dataclass(frozen=True)
class ContrastPair:
    """One sentence with (``positive``) and without (``negative``) an attribute."""

    id: str
    attribute: str
    positive: str
    negative: str


def load_contrast_pairs(path: str | os.PathLike[str]) -> dict[str, list[ContrastPair]]:
    """Read ``attributes.jsonl`` into contrast pairs per attribute.

    Rows are ``{id, attribute, polarity, text}`` with an optional ``pair`` key joining the two
    versions of one sentence; without it the k-th positive and the k-th negative row of an
    attribute form a pair. A ValueError names the first bad row.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"attribute sets file not found: {path}")
    by_attribute: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for number, row in enumerate(read_jsonl(path), start=1):
        where = f"{path}: row {number}"
        for key in ("id", "attribute", "polarity", "text"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{where} lacks the string field {key!r}")
        if row["attribute"] not in ATTRIBUTES:
            raise ValueError(
                f"{where}: attribute {row['attribute']!r} is not one of {', '.join(ATTRIBUTES)}"
            )
        if row["polarity"] not in POLARITIES:
            raise ValueError(f"{where}: polarity {row['polarity']!r} is not positive or negative")
        sides = by_attribute.setdefault(row["attribute"], {"positive": [], "negative": []})
        sides[row["polarity"]].append((str(row.get("pair", "")), row["text"]))
    out: dict[str, list[ContrastPair]] = {}
    for attribute, sides in by_attribute.items():
        positive, negative = sides["positive"], sides["negative"]
        if all(key for key, _ in positive + negative):
            neg_by_key = dict(negative)
            pairs = [
                ContrastPair(key, attribute, text, neg_by_key[key])
                for key, text in positive
                if key in neg_by_key
            ]
        else:
            pairs = [
                ContrastPair(f"{attribute}-{k:04d}", attribute, pos, neg)
                for k, ((_, pos), (_, neg)) in enumerate(zip(positive, negative, strict=False))
            ]
        if len(pairs) < 2:
            raise ValueError(f"{path}: attribute {attribute!r} has fewer than 2 contrast pairs")
        out[attribute] = pairs
    if not out:
        raise ValueError(f"{path} holds no attribute rows")
    return out


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


# ------------------------------------------------------------------------------ forward counts
@dataclass
class Cost:
    """Forward calls, token slots and seconds spent by one piece of work."""

    forward_passes: int = 0
    processed_tokens: int = 0
    seconds: float = 0.0
    generated_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "forward_passes": self.forward_passes,
            "processed_tokens": self.processed_tokens,
            "seconds": round(self.seconds, 4),
        }
        if self.generated_tokens:
            out["generated_tokens"] = self.generated_tokens
            out["seconds_per_generated_token"] = self.seconds / self.generated_tokens
            out["forward_passes_per_generated_token"] = self.forward_passes / self.generated_tokens
            out["processed_tokens_per_generated_token"] = (
                self.processed_tokens / self.generated_tokens
            )
        return out


@contextlib.contextmanager
def count_forward(model: torch.nn.Module) -> Iterator[Cost]:
    """Count the model's top-level forward calls and the token slots they process."""
    cost = Cost()

    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args and isinstance(args[0], torch.Tensor):
            ids = args[0]
        cost.forward_passes += 1
        if isinstance(ids, torch.Tensor):
            cost.processed_tokens += int(ids.numel())

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    start = time.perf_counter()
    try:
        yield cost
    finally:
        cost.seconds += time.perf_counter() - start
        handle.remove()


# ------------------------------------------------------------------------------ interventions
@dataclass(frozen=True)
class Steering:
    """Add ``coefficient * vector`` to the residual stream after ``layer`` blocks."""

    layer: int
    vector: torch.Tensor
    coefficient: float = 1.0

    def apply(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        blocks = residual_blocks(model)
        check_steering_layers([self.layer], len(blocks))
        return add_to_residual(blocks[self.layer - 1], self.coefficient * self.vector)


def _intervention(model: torch.nn.Module, steering: Steering | None):
    return steering.apply(model) if steering is not None else contextlib.nullcontext()


def with_prefix(prefix: str, text: str) -> str:
    """``prefix`` then one space then ``text`` (the prefix's own trailing space is dropped)."""
    prefix = prefix.rstrip()
    return f"{prefix} {text}" if prefix else text


def _encode(tokenizer: Any, text: str, add_bos: bool) -> list[int]:
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    if add_bos and tokenizer.bos_token_id is not None:
        ids = [int(tokenizer.bos_token_id), *ids]
    return ids


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------- steering vectors
@torch.no_grad()
def layer_means(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    pooling: str = "mean",
    batch_size: int = 32,
) -> torch.Tensor:
    """The mean over ``texts`` of each text's pooled residual stream at ``layers``: [layers, d].

    ``mean`` pools over the text's tokens (a BOS token, where the model needs one, is left out);
    ``last`` takes the last token. Float32 whatever the model's dtype.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; allowed: {', '.join(POOLINGS)}")
    if not texts:
        raise ValueError("layer_means needs at least one text")
    blocks = residual_blocks(model)
    layers = [int(k) for k in layers]
    if not layers:
        raise ValueError("layer_means needs at least one layer")
    bad = [k for k in layers if not 0 <= k <= len(blocks)]
    if bad:
        raise ValueError(f"layer {bad[0]} is out of range 0..{len(blocks)}")
    add_bos = needs_bos(model)
    skip = 1 if add_bos else 0
    device = _device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total = torch.zeros((len(layers), hidden_size(model)), dtype=torch.float64)
    for start in range(0, len(texts), batch_size):
        encoded = [_encode(tokenizer, t, add_bos) for t in texts[start : start + batch_size]]
        if any(len(ids) <= skip for ids in encoded):
            raise ValueError("a contrast text encodes to no tokens")
        width = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, row_ids in enumerate(encoded):
            ids[row, : len(row_ids)] = torch.tensor(row_ids)
            mask[row, : len(row_ids)] = 1
        ids, mask = ids.to(device), mask.to(device)
        with capture_residual(blocks) as states:
            model(input_ids=ids, attention_mask=mask, use_cache=False)
        weights = mask.clone().to(torch.float32)
        weights[:, :skip] = 0
        if pooling == "last":
            lengths = mask.sum(dim=1)
            weights = torch.zeros_like(weights)
            weights[torch.arange(len(encoded), device=device), lengths - 1] = 1.0
        weights = weights / weights.sum(dim=1, keepdim=True)
        for slot, layer in enumerate(layers):
            hidden = states[layer].to(torch.float32)
            pooled = torch.einsum("bsd,bs->bd", hidden, weights)
            total[slot] += pooled.sum(dim=0).double().cpu()
    return (total / len(texts)).to(torch.float32)


def steering_vectors(
    model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[ContrastPair],
    layers: Sequence[int],
    *,
    pooling: str = "mean",
    batch_size: int = 32,
) -> dict[int, torch.Tensor]:
    """Mean(positive) - mean(negative) of the pooled residual stream, per layer ([d] each)."""
    if not pairs:
        raise ValueError("steering_vectors needs at least one contrast pair")
    positive = layer_means(
        model,
        tokenizer,
        [p.positive for p in pairs],
        layers,
        pooling=pooling,
        batch_size=batch_size,
    )
    negative = layer_means(
        model,
        tokenizer,
        [p.negative for p in pairs],
        layers,
        pooling=pooling,
        batch_size=batch_size,
    )
    return {int(k): positive[i] - negative[i] for i, k in enumerate(layers)}


# ---------------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class SamplingSettings:
    """How continuations are sampled (the sampling keys of ``experiments.behavior_edit``)."""

    max_new_tokens: int
    temperature: float
    top_k: int
    samples_per_prompt: int
    batch_size: int

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> SamplingSettings:
        """The settings named by a configuration section's sampling keys."""
        return cls(
            max_new_tokens=int(section["max_new_tokens"]),
            temperature=float(section["temperature"]),
            top_k=int(section["top_k"]),
            samples_per_prompt=int(section["samples_per_prompt"]),
            batch_size=int(section["batch_size"]),
        )

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.samples_per_prompt < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens, samples_per_prompt and batch_size must be positive")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or positive, got {self.top_k}")


@dataclass
class Generations:
    """Continuations per prompt (``samples_per_prompt`` each) and what they cost."""

    texts: list[list[str]]
    cost: Cost = field(default_factory=Cost)


def _chunk_seed(seed: int, indices: Sequence[int]) -> int:
    key = f"{seed}:{','.join(map(str, indices))}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x7FFFFFFF


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    seed: int,
    settings: SamplingSettings,
    steering: Steering | None = None,
    prefix: str = "",
) -> Generations:
    """Sample continuations of ``prompts`` (each after ``prefix``, if any) with steering on.

    Returns the continuation texts only (the prompt and prefix are not part of them), decoded
    without special tokens and cut at the end-of-sequence token.
    """
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    add_bos = needs_bos(model)
    device = _device(model)
    encoded = [_encode(tokenizer, with_prefix(prefix, p), add_bos) for p in prompts]
    if any(not ids for ids in encoded):
        raise ValueError("a prompt encodes to no tokens")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    by_length: dict[int, list[int]] = {}
    for index, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(index)
    texts: list[list[str]] = [[] for _ in prompts]
    n = settings.samples_per_prompt
    cuda = [device] if device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=cuda),  # the caller's random state is left as it was
        count_forward(model) as cost,
        _intervention(model, steering),
    ):
        for length in sorted(by_length):
            group = by_length[length]
            for start in range(0, len(group), settings.batch_size):
                chunk = group[start : start + settings.batch_size]
                ids = torch.tensor([encoded[i] for i in chunk], dtype=torch.long, device=device)
                torch.manual_seed(_chunk_seed(seed, chunk))
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    temperature=settings.temperature,
                    top_k=settings.top_k,
                    top_p=1.0,
                    max_new_tokens=settings.max_new_tokens,
                    num_return_sequences=n,
                    pad_token_id=pad,
                )
                new = out[:, length:].cpu().tolist()
                for row, tokens in enumerate(new):
                    if eos is not None and eos in tokens:
                        tokens = tokens[: tokens.index(eos) + 1]
                    elif pad is not None and pad != eos and pad in tokens:
                        tokens = tokens[: tokens.index(pad)]
                    cost.generated_tokens += len(tokens)
                    texts[chunk[row // n]].append(
                        tokenizer.decode(tokens, skip_special_tokens=True)
                    )
    return Generations(texts=texts, cost=cost)


# ---------------------------------------------------------------------------------- side effects
@dataclass
class Perplexity:
    """Per-text summed negative log-likelihood and scored token counts."""

    nll: np.ndarray
    tokens: np.ndarray

    @property
    def value(self) -> float:
        return float(math.exp(self.nll.sum() / self.tokens.sum()))


@torch.no_grad()
def text_nll(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    prefix: str = "",
    steering: Steering | None = None,
    batch_size: int = 32,
) -> Perplexity:
    """NLL of each text's tokens after its first (with ``prefix`` in front, unscored).

    The first token of a text cannot be scored without a prefix, so it is never scored: with and
    without a prefix the same tokens count, and the perplexities compare like for like.
    """
    if not texts:
        raise ValueError("text_nll needs at least one text")
    add_bos = needs_bos(model)
    device = _device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows: list[tuple[list[int], int]] = []
    for text in texts:
        head = _encode(tokenizer, prefix.rstrip(), add_bos) if prefix.strip() else []
        body = list(tokenizer.encode((" " + text) if head else text, add_special_tokens=False))
        if not head and add_bos and tokenizer.bos_token_id is not None:
            head = [int(tokenizer.bos_token_id)]
        if len(body) < 2:
            raise ValueError(f"neutral text {text!r} has fewer than 2 tokens")
        rows.append((head + body, len(head) + 1))  # first scored index
    nll, counts = [], []
    with _intervention(model, steering):
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), int(pad), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (row_ids, _) in enumerate(batch):
                ids[row, : len(row_ids)] = torch.tensor(row_ids)
                mask[row, : len(row_ids)] = 1
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            token_lp = logprobs.gather(2, ids[:, 1:, None]).squeeze(-1).cpu()
            for row, (row_ids, first) in enumerate(batch):
                values = token_lp[row, first - 1 : len(row_ids) - 1]
                nll.append(-float(values.double().sum()))
                counts.append(int(values.numel()))
    return Perplexity(np.asarray(nll), np.asarray(counts, dtype=float))


def prefixed_items(items: Sequence[Item], prefix: str) -> list[Item]:
    """The items with ``prefix`` in front of each context."""
    if not prefix.strip():
        return list(items)
    return [
        Item(i.id, with_prefix(prefix, i.context), list(i.choices), i.label, dict(i.metadata))
        for i in items
    ]


@torch.no_grad()
def task_correct(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[Item],
    *,
    steering: Steering | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Per-item correctness (harness ``acc``) on a multiple-choice task, with steering on."""
    if not items:
        raise ValueError("task_correct needs at least one item")
    encoded, _ = encode_items(tokenizer, items, add_bos=needs_bos(model))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    correct: list[bool] = []
    with _intervention(model, steering):
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            result = score_batch(model, batch, capture=False, pad_token_id=int(pad))
            for enc, logliks in zip(batch, result.logliks, strict=True):
                correct.append(bool(item_metrics(logliks, items[enc.index])["correct"]))
    return np.asarray(correct, dtype=bool)


# ------------------------------------------------------------------------- scoring generations
def prompt_scores(scorer: AttributeScorer, generations: Generations) -> np.ndarray:
    """Each prompt's mean attribute score over its samples."""
    return np.asarray([float(np.mean(s)) for s in sample_scores(scorer, generations)])


def sample_scores(scorer: AttributeScorer, generations: Generations) -> list[list[float]]:
    """The attribute score of every sample, per prompt (one scorer call for all of them)."""
    flat = [text for texts in generations.texts for text in texts]
    scores = scorer.score(flat)
    out, start = [], 0
    for texts in generations.texts:
        out.append([float(x) for x in scores[start : start + len(texts)]])
        start += len(texts)
    return out
