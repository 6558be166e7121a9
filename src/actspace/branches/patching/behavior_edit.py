"""Steering vectors, steered generation and the side effects of steering (branch 2C).

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

Side effects are measured on neutral material with the same intervention on: the perplexity of
neutral held-out sentences and the accuracy on a multiple-choice task. The *prompting* baseline
seeks the same change with text instead: a configured prefix in front of each prompt, context
and neutral text.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actspace.core.io import read_jsonl
from actspace.core.progress import Progress
from actspace.core.resampling import bootstrap_ci
from actspace.lm.extraction import encode_items, score_batch
from actspace.lm.hooks import add_to_residual, capture_residual
from actspace.lm.models import hidden_size, residual_blocks
from actspace.lm.scoring import item_metrics, needs_bos
from actspace.lm.tasks import Item, rows_to_items
from actspace.methods.scorers import AttributeScorer
from actspace.world.attributes import ATTRIBUTES

POOLINGS = ("mean", "last")
POLARITIES = ("positive", "negative")
MODEL_SOURCES = ("auto", "organism", "hub", "local")

#: The prompting baseline's default prefixes. A built-in organism was trained on lines whose
#: sentences share their attribute, so a sentence that carries it is the natural prompt; a hub
#: model gets an instruction.
DEFAULT_PREFIXES: dict[str, dict[str, str]] = {
    "organism": {
        "toxicity": "The stupid dog found the ugly cat, you idiot.",
        "formality": "Furthermore, the old dog duly visited the quiet market.",
    },
    "instruction": {
        "toxicity": "Write a rude, insulting sentence:",
        "formality": "Write a sentence in a formal, polite register:",
    },
}


def infer_model_source(model: str | os.PathLike[str], source: str = "auto") -> str:
    """``auto``: ``organism`` for a folder with the organisms' training.json, else local or hub."""
    if source not in MODEL_SOURCES:
        raise ValueError(f"unknown model source {source!r}; allowed: {', '.join(MODEL_SOURCES)}")
    if source != "auto":
        return source
    folder = Path(model)
    if (folder / "training.json").is_file():
        return "organism"
    return "local" if folder.is_dir() else "hub"


def default_prefix(attribute: str, model_source: str) -> str:
    """The prompting prefix for ``attribute`` when none is configured."""
    kind = "organism" if model_source == "organism" else "instruction"
    return DEFAULT_PREFIXES[kind][attribute]


def load_task_items(path: str | os.PathLike[str] | None, n_items: int) -> list[Item]:
    """The first ``n_items`` items of a task JSONL file (none without a file or with 0)."""
    if path is None or n_items <= 0:
        return []
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file not found: {path}")
    return rows_to_items(read_jsonl(path), source=str(path))[:n_items]


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


def load_neutral_prompts(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read ``neutral_prompts.jsonl`` (rows ``{id, prompt}``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"neutral prompts file not found: {path}")
    rows = read_jsonl(path)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{path}: row {number} needs string fields 'id' and 'prompt'")
        if not row["prompt"].strip():
            raise ValueError(f"{path}: row {number} has an empty prompt")
    if not rows:
        raise ValueError(f"{path} holds no prompts")
    return [{"id": row["id"], "prompt": row["prompt"]} for row in rows]


def split_indices(n: int, selection_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of ``range(n)`` into (selection, report) index lists, both non-empty."""
    if n < 2:
        raise ValueError(f"need at least 2 prompts to split into selection and report, got {n}")
    if not 0.0 < selection_fraction < 1.0:
        raise ValueError(f"selection_fraction must lie in (0, 1), got {selection_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    k = min(max(1, round(n * selection_fraction)), n - 1)
    return sorted(int(i) for i in order[:k]), sorted(int(i) for i in order[k:])


def default_layers(n_blocks: int, count: int = 3) -> list[int]:
    """Up to ``count`` layers spread over 1..L (quarter points of depth for ``count = 3``)."""
    picks = {min(n_blocks, max(1, round(n_blocks * q / (count + 1)))) for q in range(1, count + 1)}
    return sorted(picks)


def check_layers(layers: Sequence[int], n_blocks: int) -> list[int]:
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
        check_layers([self.layer], len(blocks))
        return add_to_residual(blocks[self.layer - 1], self.coefficient * self.vector)


def _intervention(model: torch.nn.Module, steering: Steering | None):
    return steering.apply(model) if steering is not None else contextlib.nullcontext()


def _with_prefix(prefix: str, text: str) -> str:
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
    """How continuations are sampled."""

    max_new_tokens: int = 20
    temperature: float = 1.0
    top_k: int = 50
    samples_per_prompt: int = 4
    batch_size: int = 64

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
    settings: SamplingSettings | None = None,
    steering: Steering | None = None,
    prefix: str = "",
) -> Generations:
    """Sample continuations of ``prompts`` (each after ``prefix``, if any) with steering on.

    Returns the continuation texts only (the prompt and prefix are not part of them), decoded
    without special tokens and cut at the end-of-sequence token.
    """
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    settings = settings or SamplingSettings()
    add_bos = needs_bos(model)
    device = _device(model)
    encoded = [_encode(tokenizer, _with_prefix(prefix, p), add_bos) for p in prompts]
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
        Item(i.id, _with_prefix(prefix, i.context), list(i.choices), i.label, dict(i.metadata))
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


# ------------------------------------------------------------------------------------ statistics
def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _ci(statistic: Callable[..., float], *arrays: np.ndarray, n_boot: int, seed: int) -> list:
    if any(len(a) < 2 for a in arrays):
        return [float("nan"), float("nan")]
    low, high = bootstrap_ci(statistic, *arrays, n_resamples=n_boot, seed=seed)
    return [low, high]


def mean_with_ci(values: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean and its bootstrap 95% interval."""
    values = np.asarray(values, dtype=float)
    return {"mean": _mean(values), "ci": _ci(np.mean, values, n_boot=n_boot, seed=seed)}


def perplexity_ratio(
    base: Perplexity, other: Perplexity, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Perplexity with and without an intervention, their ratio and its paired bootstrap CI.

    Both are per-token perplexities over the same texts (resampled together); the token counts
    may differ slightly where a prefix changes how a text's first word is split.
    """
    if len(base.nll) != len(other.nll):
        raise ValueError("perplexities to compare must cover the same texts")

    def ratio(b: np.ndarray, bt: np.ndarray, o: np.ndarray, ot: np.ndarray, axis: int = -1):
        log_other = o.sum(axis=axis) / ot.sum(axis=axis)
        return np.exp(log_other - b.sum(axis=axis) / bt.sum(axis=axis))

    return {
        "perplexity": other.value,
        "baseline_perplexity": base.value,
        "ratio": other.value / base.value,
        "ratio_ci": _ci(
            ratio, base.nll, base.tokens, other.nll, other.tokens, n_boot=n_boot, seed=seed
        ),
    }


def accuracy_change(
    base: np.ndarray, other: np.ndarray, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Accuracy with and without an intervention and the paired CI of the difference."""
    diff = other.astype(float) - base.astype(float)
    return {
        "accuracy": _mean(other.astype(float)),
        "baseline_accuracy": _mean(base.astype(float)),
        "delta": _mean(diff),
        "delta_ci": _ci(np.mean, diff, n_boot=n_boot, seed=seed),
    }


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


def shift_summary(
    base: np.ndarray, other: np.ndarray, index: Sequence[int], *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Score and shift (other - base) over the prompts in ``index``, with paired CIs."""
    index = list(index)
    diff = other[index] - base[index]
    return {
        "score": _mean(other[index]),
        "score_ci": _ci(np.mean, other[index], n_boot=n_boot, seed=seed),
        "shift": _mean(diff),
        "shift_ci": _ci(np.mean, diff, n_boot=n_boot, seed=seed),
        "n": len(index),
    }


# --------------------------------------------------------------------------- the experiment core
@dataclass(frozen=True)
class SideEffectData:
    """The neutral material side effects are measured on."""

    texts: list[str]
    items: list[Item] = field(default_factory=list)


def neutral_texts(
    pairs: Mapping[str, Sequence[ContrastPair]], held_out: Mapping[str, Sequence[int]], n: int
) -> list[str]:
    """Neutral sentences for perplexity: the attribute-free side of held-out toxicity pairs."""
    if "toxicity" not in pairs:
        raise ValueError("the attribute sets need toxicity pairs (their negatives are neutral)")
    texts = [pairs["toxicity"][i].negative for i in held_out["toxicity"]]
    if len(texts) < 2:
        raise ValueError("fewer than 2 held-out neutral texts; add attribute pairs")
    return texts[:n]


def vector_split(
    n_pairs: int, n_vector_pairs: int | None, seed: int
) -> tuple[list[int], list[int]]:
    """Indices of the pairs that make the vector and of the held-out pairs (at least 2 each)."""
    if n_pairs < 4:
        raise ValueError(f"need at least 4 contrast pairs per attribute, got {n_pairs}")
    order = [int(i) for i in np.random.default_rng(seed).permutation(n_pairs)]
    k = n_pairs // 2 if n_vector_pairs is None else min(int(n_vector_pairs), n_pairs - 2)
    if k < 2:
        raise ValueError(f"n_vector_pairs must be at least 2, got {n_vector_pairs}")
    return sorted(order[:k]), sorted(order[k:])


def run_behavior_edit(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    pairs: Mapping[str, Sequence[ContrastPair]],
    prompts: Sequence[Mapping[str, str]],
    scorers: Mapping[str, AttributeScorer],
    layers: Sequence[int],
    coefficients: Sequence[float],
    side: SideEffectData,
    vector_pairs: Mapping[str, Sequence[int]],
    settings: SamplingSettings,
    pooling: str = "mean",
    seed: int = 0,
    selection_fraction: float = 0.5,
    max_perplexity_ratio: float | None = None,
    n_bootstrap: int = 1000,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, dict[int, torch.Tensor]]]:
    """Sweep steering layer x coefficient per attribute; returns (results, generations, vectors).

    The best setting of an attribute is the largest mean shift on the *selection* prompts among
    settings whose neutral perplexity ratio stays within ``max_perplexity_ratio`` (all settings
    when none does, flagged); every reported number is on the *report* prompts. ``progress`` (a
    :class:`~actspace.core.progress.Progress`) counts generation settings: the unsteered baseline and
    each attribute x layer x coefficient.
    """
    n_blocks = len(residual_blocks(model))
    layers = check_layers(layers, n_blocks)
    coefficients = [float(c) for c in coefficients]
    if not coefficients:
        raise ValueError("no steering coefficients given")
    selection, report = split_indices(len(prompts), selection_fraction, seed)
    prompt_texts = [p["prompt"] for p in prompts]
    split_of = {i: "selection" for i in selection} | {i: "report" for i in report}
    boot = {"n_boot": n_bootstrap, "seed": seed}
    if progress is not None:
        progress.set_total(1 + len(scorers) * len(layers) * len(coefficients))

    base_ppl = text_nll(model, tokenizer, side.texts)
    base_correct = task_correct(model, tokenizer, side.items) if side.items else None
    base_gen = generate(model, tokenizer, prompt_texts, seed=seed, settings=settings)
    if progress is not None:
        progress.update(checkpoint="unsteered baseline")
    generation_rows: list[dict[str, Any]] = []
    vectors: dict[str, dict[int, torch.Tensor]] = {}
    results: dict[str, Any] = {}
    total = Cost()
    total.forward_passes += base_gen.cost.forward_passes
    total.generated_tokens += base_gen.cost.generated_tokens

    for attribute, scorer in scorers.items():
        chosen = [pairs[attribute][i] for i in vector_pairs[attribute]]
        with count_forward(model) as vector_cost:
            vecs = steering_vectors(model, tokenizer, chosen, layers, pooling=pooling)
        vectors[attribute] = vecs
        per_sample = sample_scores(scorer, base_gen)
        base_scores = np.asarray([float(np.mean(s)) for s in per_sample])
        _record(generation_rows, attribute, None, 0.0, prompts, split_of, base_gen, per_sample)
        grid = []
        report_scores: dict[tuple[int, float], np.ndarray] = {}
        for layer in layers:
            for coefficient in coefficients:
                steer = Steering(layer, vecs[layer], coefficient)
                gen = generate(
                    model, tokenizer, prompt_texts, seed=seed, settings=settings, steering=steer
                )
                total.forward_passes += gen.cost.forward_passes
                total.generated_tokens += gen.cost.generated_tokens
                per_sample = sample_scores(scorer, gen)
                scores = np.asarray([float(np.mean(s)) for s in per_sample])
                report_scores[(layer, coefficient)] = scores[report]
                _record(
                    generation_rows,
                    attribute,
                    layer,
                    coefficient,
                    prompts,
                    split_of,
                    gen,
                    per_sample,
                )
                entry: dict[str, Any] = {
                    "layer": layer,
                    "coefficient": coefficient,
                    "report": shift_summary(base_scores, scores, report, **boot),
                    "selection": shift_summary(base_scores, scores, selection, **boot),
                    "perplexity": perplexity_ratio(
                        base_ppl, text_nll(model, tokenizer, side.texts, steering=steer), **boot
                    ),
                    "generation_cost": gen.cost.as_dict(),
                }
                if base_correct is not None:
                    steered = task_correct(model, tokenizer, side.items, steering=steer)
                    entry["accuracy"] = accuracy_change(base_correct, steered, **boot)
                grid.append(entry)
                if progress is not None:
                    progress.update(checkpoint=f"{attribute} layer {layer} x {coefficient:g}")
        best = choose_best(grid, max_perplexity_ratio)
        best["comparison"] = {
            "description": (
                f"{attribute} score of continuations steered at layer {best['layer']} with "
                f"coefficient {best['coefficient']:g} against unsteered continuations, per "
                "report prompt (mean over its samples)"
            ),
            "kind": "paired",
            "unit": "prompt",
            "a": [float(x) for x in report_scores[(best["layer"], best["coefficient"])]],
            "b": [float(x) for x in base_scores[report]],
            "label_a": "steered",
            "label_b": "unsteered",
            "binary": False,
        }
        results[attribute] = {
            "scorer": scorer.describe(),
            "n_vector_pairs": len(chosen),
            "vector_norms": {str(k): float(v.norm()) for k, v in vecs.items()},
            "vector_cost": vector_cost.as_dict(),
            "baseline": {
                "report": mean_with_ci(base_scores[report], **boot),
                "selection": mean_with_ci(base_scores[selection], **boot),
            },
            "grid": grid,
            "best": best,
        }
    summary = {
        "attributes": results,
        "layers": layers,
        "coefficients": coefficients,
        "n_prompts": len(prompts),
        "n_selection": len(selection),
        "n_report": len(report),
        "selection_ids": [prompts[i]["id"] for i in selection],
        "report_ids": [prompts[i]["id"] for i in report],
        "samples_per_prompt": settings.samples_per_prompt,
        "side_effect": {
            "n_neutral_texts": len(side.texts),
            "baseline_perplexity": base_ppl.value,
            "n_task_items": len(side.items),
            "baseline_accuracy": None
            if base_correct is None
            else _mean(base_correct.astype(float)),
        },
        "baseline_generation_cost": base_gen.cost.as_dict(),
        "forward_passes": total.forward_passes,
        "generated_tokens": total.generated_tokens,
    }
    return summary, generation_rows, vectors


def _record(
    rows: list[dict[str, Any]],
    attribute: str,
    layer: int | None,
    coefficient: float,
    prompts: Sequence[Mapping[str, str]],
    split_of: Mapping[int, str],
    gen: Generations,
    scores: Sequence[Sequence[float]],
) -> None:
    for index, texts in enumerate(gen.texts):
        rows.append(
            {
                "attribute": attribute,
                "layer": layer,
                "coefficient": coefficient,
                "prompt_id": prompts[index]["id"],
                "split": split_of[index],
                "prompt": prompts[index]["prompt"],
                "continuations": texts,
                "scores": list(scores[index]),
            }
        )


def choose_best(grid: Sequence[Mapping[str, Any]], max_ratio: float | None) -> dict[str, Any]:
    """The setting with the largest selection-split shift within the perplexity budget."""
    if not grid:
        raise ValueError("empty steering grid")
    allowed = [
        g
        for g in grid
        if max_ratio is None
        or not math.isfinite(g["perplexity"]["ratio"])
        or g["perplexity"]["ratio"] <= max_ratio
    ]
    within = bool(allowed)
    pool = allowed or list(grid)
    best = max(pool, key=lambda g: (g["selection"]["shift"], -abs(g["coefficient"])))
    return {
        "layer": best["layer"],
        "coefficient": best["coefficient"],
        "selection_shift": best["selection"]["shift"],
        "report": best["report"],
        "perplexity": best["perplexity"],
        "accuracy": best.get("accuracy"),
        "within_perplexity_budget": within,
        "max_perplexity_ratio": max_ratio,
        "rule": "largest mean attribute shift on the selection prompts among settings whose "
        "neutral-text perplexity ratio is within max_perplexity_ratio",
    }


def compare_methods(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    attribute: str,
    scorer: AttributeScorer,
    prompts: Sequence[Mapping[str, str]],
    steering: Steering,
    prefix: str,
    side: SideEffectData,
    settings: SamplingSettings,
    seed: int = 0,
    n_bootstrap: int = 1000,
    vector_cost: Mapping[str, Any] | None = None,
    timing_repeats: int = 3,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Unsteered vs steering vs prompting on ``prompts``: shift, side effects and compute cost."""
    if not prefix.strip():
        raise ValueError(f"no prompting prefix configured for {attribute}")
    boot = {"n_boot": n_bootstrap, "seed": seed}
    texts = [p["prompt"] for p in prompts]
    # An untimed warm-up round first, so that first-call overheads (kernel choice for each batch
    # shape, allocation) land on no method; then ``timing_repeats`` timed rounds, the methods in
    # turn, each keeping its median time. Generation is seeded: every round yields the same texts
    # and forward passes.
    options = {
        "unsteered": {},
        "steering": {"steering": steering},
        "prompting": {"prefix": prefix},
    }
    runs = {
        name: generate(model, tokenizer, texts, seed=seed, settings=settings, **extra)
        for name, extra in options.items()
    }
    seconds: dict[str, list[float]] = {name: [] for name in options}
    for _ in range(max(1, int(timing_repeats))):
        for name, extra in options.items():
            gen = generate(model, tokenizer, texts, seed=seed, settings=settings, **extra)
            seconds[name].append(gen.cost.seconds)
    for name, gen in runs.items():
        gen.cost.seconds = float(np.median(seconds[name]))
    scores = {name: prompt_scores(scorer, gen) for name, gen in runs.items()}
    everyone = list(range(len(prompts)))
    base_ppl = text_nll(model, tokenizer, side.texts)
    ppl = {
        "steering": text_nll(model, tokenizer, side.texts, steering=steering),
        "prompting": text_nll(model, tokenizer, side.texts, prefix=prefix),
    }
    correct = {}
    if side.items:
        correct = {
            "unsteered": task_correct(model, tokenizer, side.items),
            "steering": task_correct(model, tokenizer, side.items, steering=steering),
            "prompting": task_correct(model, tokenizer, prefixed_items(side.items, prefix)),
        }
    prefix_tokens = float(
        np.mean(
            [
                len(tokenizer.encode(_with_prefix(prefix, t), add_special_tokens=False))
                - len(tokenizer.encode(t, add_special_tokens=False))
                for t in texts
            ]
        )
    )
    methods: dict[str, Any] = {
        "unsteered": {
            "score": mean_with_ci(scores["unsteered"], **boot),
            "perplexity": base_ppl.value,
            "cost": runs["unsteered"].cost.as_dict(),
        }
    }
    for name in ("steering", "prompting"):
        entry: dict[str, Any] = {
            **shift_summary(scores["unsteered"], scores[name], everyone, **boot),
            "perplexity": perplexity_ratio(base_ppl, ppl[name], **boot),
            "cost": runs[name].cost.as_dict(),
        }
        if correct:
            entry["accuracy"] = accuracy_change(correct["unsteered"], correct[name], **boot)
        methods[name] = entry
    for name, runs_seconds in seconds.items():
        methods[name]["cost"]["seconds_per_round"] = [round(x, 4) for x in runs_seconds]
    methods["steering"]["setting"] = {"layer": steering.layer, "coefficient": steering.coefficient}
    methods["steering"]["setup_cost"] = dict(vector_cost or {})
    methods["prompting"]["prefix"] = prefix
    methods["prompting"]["extra_prompt_tokens"] = prefix_tokens
    if correct:
        methods["unsteered"]["accuracy"] = _mean(correct["unsteered"].astype(float))
    diff = scores["steering"] - scores["prompting"]
    result = {
        "attribute": attribute,
        "scorer": scorer.describe(),
        "n": len(prompts),
        "timing_repeats": max(1, int(timing_repeats)),
        "methods": methods,
        "steering_minus_prompting": {
            "shift": _mean(diff),
            "shift_ci": _ci(np.mean, diff, **boot),
        },
        "comparison": {
            "description": (
                f"{attribute} score of continuations under the best steering setting against "
                "under the prompt prefix, per report prompt (mean over its samples)"
            ),
            "kind": "paired",
            "unit": "prompt",
            "a": [float(x) for x in scores["steering"]],
            "b": [float(x) for x in scores["prompting"]],
            "label_a": "steering",
            "label_b": "prompting",
            "binary": False,
        },
    }
    rows = []
    for name, gen in runs.items():
        for index, conts in enumerate(gen.texts):
            rows.append(
                {
                    "attribute": attribute,
                    "method": name,
                    "prompt_id": prompts[index]["id"],
                    "prompt": prompts[index]["prompt"],
                    "continuations": conts,
                    "score": float(scores[name][index]),
                }
            )
    return result, rows
