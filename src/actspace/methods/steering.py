"""Steering vectors: contrast pairs, layer means, the intervention, generation and its side effects.

A *steering vector* for an attribute at layer ``k`` starts from the mean difference of the residual
stream between texts with the attribute and the same texts without it (activation addition, Turner
et al. 2023; contrastive activation addition, Rimsky et al. 2023): every text's residual stream
after ``k`` blocks is pooled over its tokens, and the mean over negative texts is subtracted from
the mean over positive ones. Layers run 1..L (layer 0, the embeddings, is not a block output).

Both papers report their coefficients as raw multipliers of such a difference, whose length
relative to the residual stream depends on the layer (the residual norm grows with depth), the
model and the contrast set. Here a coefficient is *relative*: the vector added is
``coefficient * r_k * d / |d|``, with ``d`` the mean difference and ``r_k`` the layer's
*reference norm*, the median L2 norm of the residual stream over the tokens of the contrast texts
that made ``d``. Coefficient 1 adds a vector as long as a typical token's residual stream at that
layer, whatever the layer or the model.

The first position of every sequence (the BOS token where the model needs one, else the first
token) is left out everywhere: of the pooling, of the reference norm and of the intervention. It
is the attention sink: in Llama-family models its residual stream is 100 times longer than the
other tokens' from the middle layers on (about 22,000 against 170 at layer 15 of SmolLM2-135M),
in a few dimensions and by an amount that depends on the token, so that a mean over positions
that includes it is dominated by it. The intervention adds the vector at every other position of
the prompt and of the generated tokens (CAA adds it at the positions after the prompt).

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
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from actspace.lm.forward import encode_items, score_batch
from actspace.lm.hooks import capture_residual
from actspace.lm.models import hidden_size, residual_blocks
from actspace.lm.scoring import item_metrics, needs_bos
from actspace.lm.tasks import Item
from actspace.methods.scorers import AttributeScorer

# The intervention and the contrast pairs live in their own modules; they are found here too.
from actspace.methods.steering_hook import (
    Steering as Steering,
)
from actspace.methods.steering_hook import (
    check_steering_layers as check_steering_layers,
)
from actspace.methods.steering_hook import (
    default_steering_layers as default_steering_layers,
)
from actspace.methods.steering_hook import (
    steer_residual as steer_residual,
)
from actspace.methods.steering_sets import POLARITIES as POLARITIES
from actspace.methods.steering_sets import ContrastPair as ContrastPair
from actspace.methods.steering_sets import load_contrast_pairs as load_contrast_pairs

POOLINGS = ("mean", "last")
#: How a steering coefficient is read, in one line (results.json and the summaries repeat it).
CONVENTION = (
    "added vector = coefficient x reference norm x unit(mean difference); reference norm = "
    "median L2 norm of the layer's residual stream over the contrast texts' tokens; the first "
    "position of every sequence (the attention sink) is neither pooled, measured nor steered"
)


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
@dataclass
class LayerStats:
    """Per layer: the mean over texts of each text's pooled residual stream ([layers, d]) and the
    L2 norm of the residual stream at every token counted (one 1-D tensor per layer)."""

    means: torch.Tensor
    token_norms: list[torch.Tensor]


@torch.no_grad()
def layer_stats(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    pooling: str = "mean",
    batch_size: int = 32,
) -> LayerStats:
    """Pooled means and token norms of ``texts`` at ``layers`` in one pass (float32).

    ``mean`` pools over the text's tokens, ``last`` takes the last token; the first position (BOS
    where the model needs one, else the first token: the attention sink) is never pooled nor
    counted in the norms, so every text needs two positions or more.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; allowed: {', '.join(POOLINGS)}")
    if not texts:
        raise ValueError("layer_stats needs at least one text")
    blocks = residual_blocks(model)
    layers = [int(k) for k in layers]
    if not layers:
        raise ValueError("layer_stats needs at least one layer")
    bad = [k for k in layers if not 0 <= k <= len(blocks)]
    if bad:
        raise ValueError(f"layer {bad[0]} is out of range 0..{len(blocks)}")
    add_bos = needs_bos(model, tokenizer)
    device = _device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total = torch.zeros((len(layers), hidden_size(model)), dtype=torch.float64)
    norms: list[list[torch.Tensor]] = [[] for _ in layers]
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        encoded = [_encode(tokenizer, t, add_bos) for t in chunk]
        short = [text for text, ids in zip(chunk, encoded, strict=True) if len(ids) < 2]
        if short:
            raise ValueError(
                f"contrast text {short[0]!r} has fewer than 2 token positions (the first, the "
                "attention sink, is left out)"
            )
        width = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, row_ids in enumerate(encoded):
            ids[row, : len(row_ids)] = torch.tensor(row_ids)
            mask[row, : len(row_ids)] = 1
        ids, mask = ids.to(device), mask.to(device)
        with capture_residual(blocks) as states:
            model(input_ids=ids, attention_mask=mask, use_cache=False)
        counted = mask.clone().to(torch.float32)
        counted[:, 0] = 0  # right padding: column 0 is every text's first position
        weights = counted
        if pooling == "last":
            weights = torch.zeros_like(counted)
            weights[torch.arange(len(encoded), device=device), mask.sum(dim=1) - 1] = 1.0
        weights = weights / weights.sum(dim=1, keepdim=True)
        for slot, layer in enumerate(layers):
            hidden = states[layer].to(torch.float32)
            pooled = torch.einsum("bsd,bs->bd", hidden, weights)
            total[slot] += pooled.sum(dim=0).double().cpu()
            norms[slot].append(hidden.norm(dim=-1)[counted.bool()].cpu())
    return LayerStats((total / len(texts)).to(torch.float32), [torch.cat(n) for n in norms])


def layer_means(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    pooling: str = "mean",
    batch_size: int = 32,
) -> torch.Tensor:
    """The mean over ``texts`` of each text's pooled residual stream at ``layers``: [layers, d]
    (:func:`layer_stats`; the first position is left out)."""
    stats = layer_stats(model, tokenizer, texts, layers, pooling=pooling, batch_size=batch_size)
    return stats.means


@dataclass(frozen=True)
class SteeringVectors:
    """Per layer: the mean difference of the contrast pairs (``directions``) and the layer's
    reference norm, the median residual-stream norm over their tokens (``reference_norms``)."""

    directions: dict[int, torch.Tensor]
    reference_norms: dict[int, float]

    def scaled(self) -> dict[int, torch.Tensor]:
        """The vector that coefficient 1 adds, per layer: ``reference_norm * d / |d|`` (a zero
        direction stays zero)."""
        return {k: relative_vector(d, self.reference_norms[k]) for k, d in self.directions.items()}


def relative_vector(direction: torch.Tensor, reference_norm: float) -> torch.Tensor:
    """``direction`` rescaled to length ``reference_norm`` (zero stays zero)."""
    length = float(direction.norm())
    return direction * (float(reference_norm) / length) if length > 0 else direction.clone()


def contrast_vectors(
    model: torch.nn.Module,
    tokenizer: Any,
    pairs: Sequence[ContrastPair],
    layers: Sequence[int],
    *,
    pooling: str = "mean",
    batch_size: int = 32,
) -> SteeringVectors:
    """Mean(positive) - mean(negative) of the pooled residual stream per layer, and the median
    token norm of both sides (the first position of every text left out of both)."""
    if not pairs:
        raise ValueError("steering_vectors needs at least one contrast pair")
    sides = [
        layer_stats(model, tokenizer, texts, layers, pooling=pooling, batch_size=batch_size)
        for texts in ([p.positive for p in pairs], [p.negative for p in pairs])
    ]
    positive, negative = sides
    return SteeringVectors(
        directions={int(k): positive.means[i] - negative.means[i] for i, k in enumerate(layers)},
        reference_norms={
            int(k): float(torch.cat([positive.token_norms[i], negative.token_norms[i]]).median())
            for i, k in enumerate(layers)
        },
    )


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
    found = contrast_vectors(
        model, tokenizer, pairs, layers, pooling=pooling, batch_size=batch_size
    )
    return found.directions


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
    add_bos = needs_bos(model, tokenizer)
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
    add_bos = needs_bos(model, tokenizer)
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
    encoded, _ = encode_items(tokenizer, items, add_bos=needs_bos(model, tokenizer))
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
