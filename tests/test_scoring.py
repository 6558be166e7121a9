"""Scoring: harness encoding, reference log-likelihoods against an independent computation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from actspace.lm.scoring import (
    aggregate,
    encode_item,
    encode_pair,
    item_metrics,
    mc2_score,
    needs_bos,
    score_reference,
)
from actspace.lm.tasks import Item, load_task

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def tokenizer_of(folder: Path) -> transformers.PreTrainedTokenizerBase:
    return transformers.AutoTokenizer.from_pretrained(folder)


def model_of(folder: Path) -> transformers.PreTrainedModel:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval()


def independent_loglik(model, tokenizer, context: str, choice: str, bos: bool) -> float:
    """Written from the harness's rules without the library: encode the pair, run the whole
    sequence once, and take the summed continuation log-probability from the model's own loss."""
    continuation = " " + choice
    stripped = context.rstrip()
    continuation = context[len(stripped) :] + continuation
    prefix = [tokenizer.bos_token_id] if bos else []
    if stripped:
        ctx = prefix + tokenizer(stripped, add_special_tokens=False)["input_ids"]
        whole = prefix + tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"]
        cont = whole[len(ctx) :]
    else:
        ctx = [
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ]
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + cont])
    labels = torch.tensor([[-100] * len(ctx) + cont])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss
    return -float(loss) * len(cont)


# ----------------------------------------------------------------------------- encoding


def test_encode_pair_harness_rules(tiny_model_dir) -> None:
    tok = tokenizer_of(tiny_model_dir("gpt2"))
    enc = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    ctx, cont = encode_pair(tok, "A man is sitting on a roof. He", " starts")
    assert ctx == enc("A man is sitting on a roof. He")
    assert ctx + cont == enc("A man is sitting on a roof. He starts")
    # trailing spaces of the context move to the continuation
    assert encode_pair(tok, "He ", "starts") == encode_pair(tok, "He", " starts")
    assert encode_pair(tok, "He  \n", "x") == (enc("He"), enc("He  \nx")[len(enc("He")) :])
    # an empty context becomes the prefix token (BOS, here <|endoftext|> = 0)
    assert encode_pair(tok, "", " The cat") == ([0], enc(" The cat"))
    assert encode_pair(tok, "", "<|endoftext|>The cat") == ([0], enc("The cat"))


def test_opt_gets_no_automatic_eos(tiny_model_dir) -> None:
    tok = tokenizer_of(tiny_model_dir("opt"))
    eos = tok.convert_tokens_to_ids("</s>")
    assert tok.encode("The cat")[0] == eos  # OPT's tokenizer prepends </s> by default ...
    ctx, cont = encode_pair(tok, "The cat", " sat")
    assert eos not in ctx + cont  # ... which the harness (add_special_tokens=False) leaves out
    assert ctx == tok.encode("The cat", add_special_tokens=False)
    assert encode_pair(tok, "", " The cat")[0] == [eos]  # needed only for an empty context


def test_gemma_gets_bos(tiny_model_dir) -> None:
    folder = tiny_model_dir("gemma2")
    config = transformers.AutoConfig.from_pretrained(folder)
    assert needs_bos(config) and needs_bos("gemma3_text")
    for family in ("gpt2", "gpt_neox", "opt"):
        assert not needs_bos(transformers.AutoConfig.from_pretrained(tiny_model_dir(family)))
    tok = tokenizer_of(folder)
    plain_ctx, plain_cont = encode_pair(tok, "The cat", " sat")
    ctx, cont = encode_pair(tok, "The cat", " sat", add_bos=True)
    assert ctx == [tok.bos_token_id, *plain_ctx] and cont == plain_cont


@pytest.mark.parametrize("family", ["opt", "llama", "gpt2"])
def test_contexts_start_as_the_tokenizer_starts_them_like_lm_eval(tiny_model_dir, family) -> None:
    """lm-eval 0.4.13 encodes a context with the tokenizer's default special tokens: OPT's
    tokenizer puts ``</s>`` first, the others nothing. The project's context ids are the same."""
    folder = tiny_model_dir(family)
    tok = tokenizer_of(folder)
    config = transformers.AutoConfig.from_pretrained(folder)
    add_bos = needs_bos(config, tok)
    assert add_bos == (family == "opt")
    context = "The cat sat on the"
    ctx, cont = encode_pair(tok, context, " mat", add_bos=add_bos)
    assert ctx == tok.encode(context)  # add_special_tokens defaults to True, as in the harness
    assert ctx + cont == tok.encode(context + " mat")


def test_encode_item(tiny_model_dir) -> None:
    tok = tokenizer_of(tiny_model_dir("gpt2"))
    item = Item("x", "A man is sitting on a roof. He ", ["starts", "looked"], 0, {})
    ctx, conts = encode_item(tok, item)
    assert ctx == tok.encode("A man is sitting on a roof. He", add_special_tokens=False)
    # the context's trailing space and the delimiter both precede the choice, as in the harness
    assert [ctx + cont for cont in conts] == [
        tok.encode("A man is sitting on a roof. He  starts", add_special_tokens=False),
        tok.encode("A man is sitting on a roof. He  looked", add_special_tokens=False),
    ]
    with pytest.raises(ValueError, match="item x: no choices"):
        encode_item(tok, Item("x", "c", [], 0, {}))


# ----------------------------------------------------------------------------- reference scores


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "opt", "gemma2"])
def test_score_reference_matches_independent(tiny_model_dir, family: str) -> None:
    folder = tiny_model_dir(family)
    model, tok = model_of(folder), tokenizer_of(folder)
    items = load_task({"type": "jsonl", "path": str(FIXTURES / "tasks_plain.jsonl")})
    scores = score_reference(model, tok, items)
    bos = family in ("gemma2", "opt")  # Gemma always; OPT because its tokenizer adds </s>
    for item, item_scores in zip(items, scores, strict=True):
        expected = [independent_loglik(model, tok, item.context, c, bos) for c in item.choices]
        assert len(item_scores) == len(item.choices)
        np.testing.assert_allclose(item_scores, expected, rtol=0, atol=1e-4)
        assert all(score < 0 for score in item_scores)


def test_score_reference_on_real_items(tiny_model_dir, shared_benchmarks: Path) -> None:
    folder = tiny_model_dir("gpt2")
    model, tok = model_of(folder), tokenizer_of(folder)
    items = load_task(
        {
            "type": "hellaswag",
            "source": "local",
            "path": str(shared_benchmarks / "hellaswag_validation.jsonl.gz"),
            "limit": 2,
        }
    )
    items += load_task(
        {
            "type": "mmlu",
            "source": "local",
            "path": str(shared_benchmarks / "mmlu_validation.jsonl.gz"),
            "limit": 1,
        }
    )
    scores = score_reference(model, tok, items)
    for item, item_scores in zip(items, scores, strict=True):
        expected = [independent_loglik(model, tok, item.context, c, False) for c in item.choices]
        np.testing.assert_allclose(item_scores, expected, rtol=0, atol=1e-4)


def test_score_reference_truncates_from_the_left(tiny_model_dir) -> None:
    folder = tiny_model_dir("gpt2")
    model, tok = model_of(folder), tokenizer_of(folder)
    context = "The quick brown fox jumps over the lazy dog. " * 30 + "The cat"
    [[score]] = score_reference(model, tok, [Item("long", context, ["sat on the mat."], 0, {})])
    ctx = tok.encode(context, add_special_tokens=False)
    cont = tok.encode(context + " sat on the mat.", add_special_tokens=False)[len(ctx) :]
    assert len(ctx) + len(cont) > 257
    # n_positions 256: the harness feeds the last 256 + 1 tokens without the last one
    window = (ctx + cont)[-257:][:-1]
    with torch.no_grad():
        logprobs = model(input_ids=torch.tensor([window])).logits[0].log_softmax(-1)
    first = len(window) - len(cont)
    expected = sum(float(logprobs[first + j, token]) for j, token in enumerate(cont))
    assert score == pytest.approx(expected, abs=1e-4)


# ----------------------------------------------------------------------------- metrics


def test_item_metrics_acc_and_acc_norm() -> None:
    item = Item("x", "c", ["a", "bbbbbbbbbb"], 1, {})
    metrics = item_metrics([-1.0, -5.0], item)
    # sums: -1 > -5 picks choice 0; per character: -1/1 < -5/10 picks choice 1
    assert metrics == {"pred": 0, "correct": False, "pred_norm": 1, "correct_norm": True}
    with pytest.raises(ValueError, match="3 log-likelihoods for 2 choices"):
        item_metrics([0.0, 0.0, 0.0], item)


def test_item_metrics_truthfulqa() -> None:
    mc1 = Item("t", "c", ["yes", "no", "maybe"], 0, {"task": "truthfulqa_mc1"})
    assert item_metrics([-2.0, -3.0, -4.0], mc1)["mc1"] == 1.0
    assert item_metrics([-5.0, -3.0, -4.0], mc1)["mc1"] == 0.0
    mc2 = Item("t", "c", ["p", "q", "r"], 0, {"task": "truthfulqa_mc2", "labels": [1, 1, 0]})
    logliks = np.log([0.5, 0.3, 0.2])
    assert item_metrics(logliks, mc2)["mc2"] == pytest.approx(0.8, abs=1e-12)
    # probabilities normalised over the answers: the scale of the log-likelihoods does not matter
    assert item_metrics(logliks - 1000.0, mc2)["mc2"] == pytest.approx(0.8, abs=1e-12)
    # p_true = (0.2 + 0.2) / (0.2 + 0.2 + 0.1)
    assert mc2_score(np.log([0.2, 0.2, 0.1]), [1, 1, 0]) == pytest.approx(0.8)
    # like the harness (lm-eval 0.4.13), an answer labelled 1 is true even after a 0
    assert mc2_score(np.log([0.5, 0.3, 0.2]), [1, 0, 1]) == pytest.approx(0.7)
    assert mc2_score([math.log(0.1), math.log(0.3)], [1, 0]) == pytest.approx(0.25)


def test_aggregate_known_numbers() -> None:
    rows = [
        {"correct": True, "correct_norm": True, "mc2": 0.8},
        {"correct": False, "correct_norm": True, "mc2": 0.4},
        {"correct": True, "correct_norm": False, "mc2": 0.6},
        {"correct": False, "correct_norm": True, "mc2": 0.2},
    ]
    result = aggregate(rows)
    assert result["n"] == 4
    assert result["acc"] == 0.5 and result["acc_norm"] == 0.75
    assert result["acc_stderr"] == pytest.approx(math.sqrt(1 / 3) / 2)
    assert result["mc2"] == pytest.approx(0.5) and result["mc2_n"] == 4
    assert "mc1" not in result
    with pytest.raises(ValueError, match="no scored items"):
        aggregate([])
