"""Log-likelihood scoring of multiple-choice items, as lm-evaluation-harness v0.4 scores them.

The log-likelihood of a choice is the sum of its continuation tokens' log-probabilities given the
context. The encoding follows the harness's ``HFLM`` (``lm_eval/models/huggingface.py``) and
``TemplateLM`` (``lm_eval/api/model.py``):

- the request is ``(context, " " + choice)``: the target delimiter precedes the choice;
- trailing whitespace of the context moves to the front of the continuation;
- ``whole = encode(context + continuation)``, ``context_enc = encode(context)`` and the
  continuation tokens are ``whole[len(context_enc):]``; the model reads
  ``context_enc + continuation_enc`` (left-truncated to the model's maximum length);
- ``encode`` adds no special tokens (``add_special_tokens=False``), except for models that need a
  BOS token (Gemma: the harness sets ``add_bos_token=True`` for every ``gemma`` model type), where
  the BOS token starts both encodings;
- an empty context is replaced by the prefix token (the tokenizer's BOS id, else its EOS id), and
  the continuation is encoded without special tokens; if that encoding already starts with the
  prefix token, it is used as the context instead of adding a second one.

OPT: its tokenizer prepends ``</s>`` (its BOS) only through ``add_special_tokens=True``. The
harness v0.4 encodes with ``add_special_tokens=False`` for causal models and sets
``add_bos_token`` only for Gemma, so OPT items are scored *without* ``</s>``, and so are they here;
``</s>`` appears only as the prefix token of an empty context. (Harness releases after
PR #3347, October 2025, defer to the tokenizer's own ``add_bos_token`` setting instead, which
can change this for OPT and others; this module keeps the v0.4 rule.)

Metrics follow the harness's ``process_results``: ``acc`` is the argmax of the sums; ``acc_norm``
the argmax of the sums divided by the choice's length in characters (the choice without the
delimiter); TruthfulQA ``mc1`` is ``acc`` with the true answer at index 0; ``mc2`` the probability
mass of the true answers normalised over all answers (``process_results_mc2``), computed here in
log space so that it cannot underflow to 0/0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from actspace.lm.tasks import Item

#: The harness's ``target_delimiter`` for multiple-choice tasks.
TARGET_DELIMITER = " "

#: The harness's fallback maximum length when neither config nor tokenizer gives one.
DEFAULT_MAX_LENGTH = 2048


def needs_bos(model_or_config: Any, tokenizer: Any = None) -> bool:
    """Whether contexts get a BOS token in front: always for the Gemma families, and wherever the
    tokenizer adds one by default (OPT's ``</s>``, Llama 2 and 3, Mistral).

    lm-evaluation-harness 0.4.13 encodes contexts with the tokenizer's default special tokens, so
    the second rule keeps the scoring equal to the harness's; the first keeps Gemma, which needs
    its BOS, right even where a tokenizer was saved without it. Accepts a model, a config or a
    ``model_type`` string, and the tokenizer (None: the model type alone decides).
    """
    if isinstance(model_or_config, str):
        model_type = model_or_config
    else:
        config = getattr(model_or_config, "config", model_or_config)
        model_type = getattr(config, "model_type", "") or ""
    return "gemma" in model_type.lower() or (
        tokenizer is not None and tokenizer_adds_bos(tokenizer)
    )


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether encoding with the tokenizer's default special tokens puts its BOS token first."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    with_special = tokenizer.encode("a", add_special_tokens=True)
    plain = tokenizer.encode("a", add_special_tokens=False)
    return len(with_special) > len(plain) and with_special[0] == bos and plain[:1] != [bos]


def prefix_token_id(tokenizer: Any) -> int:
    """The token that stands for an empty context: BOS if the tokenizer has one, else EOS."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError(
        "the tokenizer has neither a BOS nor an EOS token to stand for an empty context"
    )


def _encode(tokenizer: Any, text: str, add_bos: bool) -> list[int]:
    """``tok_encode``: no special tokens; with ``add_bos`` the BOS id in front.

    The BOS id is prepended explicitly rather than through ``add_special_tokens=True``: for Gemma
    that gives the same ids, and it also holds for tokenizers whose post-processor adds no BOS
    (the harness passes ``add_bos_token=True`` to such tokenizers for the same effect).
    """
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    if add_bos:
        if tokenizer.bos_token_id is None:
            raise ValueError("the model needs a BOS token but its tokenizer has none")
        ids = [int(tokenizer.bos_token_id), *ids]
    return ids


def encode_pair(
    tokenizer: Any, context: str, continuation: str, *, add_bos: bool = False
) -> tuple[list[int], list[int]]:
    """Context and continuation token ids with the harness's ``_encode_pair`` semantics.

    ``continuation`` already holds the target delimiter (``" " + choice``). A context that is
    empty after its trailing whitespace moved to the continuation is treated as empty: the
    prefix token becomes its encoding (the harness would fail on an empty context encoding).
    """
    if context == "":
        continuation_enc = _encode(tokenizer, continuation, add_bos=False)
        prefix = prefix_token_id(tokenizer)
        if continuation_enc and continuation_enc[0] == prefix:
            return continuation_enc[:1], continuation_enc[1:]
        return [prefix], continuation_enc
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if context == "" and not add_bos:
        return encode_pair(tokenizer, "", continuation)
    whole_enc = _encode(tokenizer, context + continuation, add_bos)
    context_enc = _encode(tokenizer, context, add_bos)
    return context_enc, whole_enc[len(context_enc) :]


def encode_item(
    tokenizer: Any, item: Item, *, add_bos: bool = False, delimiter: str = TARGET_DELIMITER
) -> tuple[list[int], list[list[int]]]:
    """``(context_ids, [continuation_ids per choice])`` for one item.

    The context ids are the same for every choice (they depend on the context alone). Raises
    ValueError when a choice encodes to no token, which the harness rejects too.
    """
    context_ids: list[int] | None = None
    continuations: list[list[int]] = []
    for number, choice in enumerate(item.choices):
        ctx, cont = encode_pair(tokenizer, item.context, delimiter + choice, add_bos=add_bos)
        if not cont:
            raise ValueError(
                f"item {item.id}: choice {number} ({choice!r}) encodes to no token after the "
                "context (the tokenizer merged it into the context's last token)"
            )
        if context_ids is None:
            context_ids = ctx
        elif ctx != context_ids:
            raise ValueError(f"item {item.id}: the context encodes differently across choices")
        continuations.append(cont)
    if context_ids is None:
        raise ValueError(f"item {item.id}: no choices")
    return context_ids, continuations


def max_length(model: Any, tokenizer: Any = None) -> int:
    """The harness's ``max_length``: config ``n_positions`` / ``max_position_embeddings`` /
    ``n_ctx``, else the tokenizer's ``model_max_length``, else 2048."""
    config = getattr(model, "config", model)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10**12:
        return limit
    return DEFAULT_MAX_LENGTH


def model_input(
    context_ids: Sequence[int], continuation_ids: Sequence[int], limit: int
) -> list[int]:
    """The harness's causal input: ``(context + continuation)[-(limit + 1):][:-1]``."""
    if len(continuation_ids) > limit:
        raise ValueError(
            f"a continuation of {len(continuation_ids)} tokens exceeds the model's {limit}"
        )
    return list((list(context_ids) + list(continuation_ids))[-(limit + 1) :][:-1])


@torch.no_grad()
def score_reference(
    model: Any,
    tokenizer: Any,
    items: Iterable[Item],
    *,
    add_bos: bool | None = None,
    delimiter: str = TARGET_DELIMITER,
) -> list[list[float]]:
    """Choice log-likelihoods by one forward pass per (context, choice), as the harness runs them.

    ``add_bos`` defaults to :func:`needs_bos` of the model and tokenizer. Log-probabilities are
    taken in float32 whatever the model's dtype (the harness takes them in the model's dtype;
    equal in float32).
    """
    if add_bos is None:
        add_bos = needs_bos(model, tokenizer)
    limit = max_length(model, tokenizer)
    device = next(model.parameters()).device
    model.eval()
    scores: list[list[float]] = []
    for item in items:
        context_ids, continuations = encode_item(
            tokenizer, item, add_bos=add_bos, delimiter=delimiter
        )
        item_scores = []
        for cont in continuations:
            inp = model_input(context_ids, cont, limit)
            input_ids = torch.tensor([inp], dtype=torch.long, device=device)
            logits = model(input_ids=input_ids).logits[0, len(inp) - len(cont) :]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            targets = torch.tensor(cont, dtype=torch.long, device=device)
            item_scores.append(float(logprobs.gather(1, targets[:, None]).sum()))
        scores.append(item_scores)
    return scores


def _logsumexp(values: np.ndarray) -> float:
    top = float(np.max(values))
    if not math.isfinite(top):
        return top
    return top + math.log(float(np.sum(np.exp(values - top))))


def mc2_score(logliks: Sequence[float], labels: Sequence[int]) -> float:
    """Probability mass of the true answers over all answers, as ``process_results_mc2``.

    Like the harness (lm-eval 0.4.13, ``probs_norm[labels == 1]``), every answer labelled 1
    counts as true, wherever it stands (two TruthfulQA items list a true answer after a false
    one; older harness releases split at the first 0 and counted it as false).
    """
    values = np.asarray(logliks, dtype=np.float64)
    labels = list(labels)
    if len(labels) != len(values) or 0 not in labels:
        raise ValueError("mc2 needs one label per answer and at least one false answer (0)")
    true = np.asarray(labels) == 1
    if not true.any():
        raise ValueError("mc2 needs at least one true answer (label 1)")
    return math.exp(_logsumexp(values[true]) - _logsumexp(values))


def item_metrics(logliks: Sequence[float], item: Item) -> dict[str, Any]:
    """``pred``, ``correct``, ``pred_norm``, ``correct_norm``; ``mc1`` for TruthfulQA MC1 items
    and ``mc2`` for items whose metadata holds ``labels`` (TruthfulQA MC2)."""
    values = np.asarray(logliks, dtype=np.float64)
    if values.shape != (len(item.choices),):
        raise ValueError(
            f"item {item.id}: {values.size} log-likelihoods for {len(item.choices)} choices"
        )
    lengths = np.array([float(len(choice)) for choice in item.choices])
    pred = int(np.argmax(values))
    pred_norm = int(np.argmax(values / lengths))
    result: dict[str, Any] = {
        "pred": pred,
        "correct": pred == item.label,
        "pred_norm": pred_norm,
        "correct_norm": pred_norm == item.label,
    }
    if item.metadata.get("task") == "truthfulqa_mc1":
        result["mc1"] = float(pred == item.label)
    labels = item.metadata.get("labels")
    if labels is not None:
        result["mc2"] = mc2_score(values, labels)
    return result


def _mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and the harness's standard error (sample standard deviation / sqrt(n))."""
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if array.size < 2:
        return mean, float("nan")
    return mean, float(array.std(ddof=1) / math.sqrt(array.size))


def aggregate(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Task-level metrics over per-item rows (``item_metrics`` output or ``scores.jsonl`` rows):
    ``n``, ``acc``, ``acc_norm`` and, where items carry them, ``mc1`` and ``mc2``; each metric
    with ``{metric}_stderr``."""
    rows = list(rows)
    if not rows:
        raise ValueError("no scored items to aggregate")
    result: dict[str, Any] = {"n": len(rows)}
    columns = {"acc": "correct", "acc_norm": "correct_norm", "mc1": "mc1", "mc2": "mc2"}
    for metric, column in columns.items():
        values = [float(row[column]) for row in rows if row.get(column) is not None]
        if not values:
            continue
        if metric in ("acc", "acc_norm") and len(values) != len(rows):
            raise ValueError(f"{len(rows) - len(values)} rows lack {column!r}")
        result[metric], result[f"{metric}_stderr"] = _mean_stderr(values)
        if metric in ("mc1", "mc2"):
            result[f"{metric}_n"] = len(values)
    return result
