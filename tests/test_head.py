"""The LM head at scored positions only gives the log-likelihoods of the full logits."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import transformers
from helpers.tiny import FAMILIES, make_tokenizer, tiny_config

from actspace.lm.forward import encode_items, score_batch
from actspace.lm.head import (
    LogitProcessing,
    finish_logits,
    head_input,
    head_only_reason,
    logit_processing,
    token_logprobs,
)
from actspace.lm.models import load_model
from actspace.lm.tasks import Item

ITEMS = [
    Item("a", "The quick brown fox", ["jumps over the lazy dog.", "sat.", "is a cat"], 0),
    Item("b", "A man is sitting on a roof. He starts", ["pulling up roofing.", "to fly"], 1),
    Item("c", "Question: what is the capital of France?\nAnswer:", ["Paris", "the bird"], 0),
]


def _score(model, tokenizer, **kwargs):
    encoded, _ = encode_items(tokenizer, ITEMS)
    return score_batch(model, encoded, pad_token_id=tokenizer.pad_token_id, **kwargs)


def _assert_same(model, tokenizer):
    head_only = _score(model, tokenizer)
    full = _score(model, tokenizer, full_logits=True)
    for got, want in zip(head_only.logliks, full.logliks, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # no group ran again with full logits: our head agreed with the model's own logits
    assert head_only.forward_passes == full.forward_passes
    return head_only, full


@pytest.mark.parametrize("family", FAMILIES)
def test_head_only_equals_full_logits(family, tiny_model_dir, one_torch_thread):
    model, tokenizer = load_model(tiny_model_dir(family), dtype="float32", device="cpu")
    assert head_only_reason(model) is None
    _assert_same(model, tokenizer)


def _random_model(config):
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def test_softcapping_is_applied_as_the_model_does(one_torch_thread):
    tokenizer = make_tokenizer()
    config = tiny_config("gemma2", vocab_size=len(tokenizer))
    config.final_logit_softcapping = 0.05  # tiny random logits (~0.1) are capped hard
    model = _random_model(config)
    assert logit_processing(model) == LogitProcessing(softcap=0.05)
    _, capped = _assert_same(model, tokenizer)
    assert finish_logits(torch.tensor([0.2, -0.1]), logit_processing(model)).abs().max() < 0.05
    model.config.final_logit_softcapping = None  # without the cap the answer differs
    plain = _score(model, tokenizer, full_logits=True)
    assert not np.allclose(capped.logliks[0], plain.logliks[0], atol=1e-3)


def test_granite_logits_scaling_is_applied(one_torch_thread):
    tokenizer = make_tokenizer()
    config = transformers.GraniteConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        logits_scaling=0.02,
        pad_token_id=1,
    )
    model = _random_model(config)
    assert logit_processing(model) == LogitProcessing(scaling=0.02)
    _assert_same(model, tokenizer)


def test_unknown_logit_processing_falls_back_to_full_logits(caplog, one_torch_thread):
    tokenizer = make_tokenizer()
    model = _random_model(tiny_config("llama", vocab_size=len(tokenizer)))
    reference = _score(model, tokenizer, full_logits=True)

    def double(_module, _args, output):  # something after the head that we do not reproduce
        output.logits.mul_(2.0)

    handle = model.register_forward_hook(double)
    try:
        doubled = _score(model, tokenizer, full_logits=True)
        with caplog.at_level(logging.WARNING, logger="actspace.lm.forward"):
            got = _score(model, tokenizer)
    finally:
        handle.remove()
    assert "differ from the model's own" in caplog.text
    for a, b in zip(got.logliks, doubled.logliks, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert not np.allclose(got.logliks[0], reference.logliks[0], atol=1e-3)
    assert got.forward_passes > doubled.forward_passes  # the first group ran again


def test_unchecked_model_types_get_full_logits(monkeypatch, one_torch_thread):
    tokenizer = make_tokenizer()
    model = _random_model(tiny_config("llama", vocab_size=len(tokenizer)))
    monkeypatch.setattr(model.config, "model_type", "mystery")
    assert "model type 'mystery'" in head_only_reason(model)
    calls = []
    monkeypatch.setattr("actspace.lm.forward.head_input", lambda m: calls.append(m))
    _score(model, tokenizer)  # scores with full logits: the head hook is never installed
    assert calls == []


def test_head_input_hands_the_head_one_position(one_torch_thread):
    tokenizer = make_tokenizer()
    model = _random_model(tiny_config("gpt2", vocab_size=len(tokenizer)))
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    with torch.no_grad(), head_input(model) as hidden:
        out = model(input_ids=ids)
    assert out.logits.shape == (1, 1, len(tokenizer))
    assert hidden[0].shape == (2, 4, 32)
    with torch.no_grad():
        full = model(input_ids=ids).logits
    torch.testing.assert_close(out.logits[0, 0], full[0, -1], atol=1e-6, rtol=0)


def test_token_logprobs_in_chunks_match_log_softmax():
    logits = torch.randn(7, 11, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 3, 10, 2, 2, 5, 1])
    want = torch.log_softmax(logits, dim=-1)[torch.arange(7), targets]
    for chunk in (1, 3, 7, 100):
        got = token_logprobs(lambda a, b: logits[a:b], targets, 7, chunk)
        torch.testing.assert_close(got, want)
