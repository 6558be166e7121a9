"""Length-bucketed batches: little padding, and the same log-likelihoods as one item at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.tiny import FAMILIES, make_tokenizer

from actspace.lm.batching import (
    PADDING_TOLERANCE,
    leading_batch,
    length_groups,
    padding_efficiency,
    plan_padding,
)
from actspace.lm.forward import cache_argument, encode_items, score_batch
from actspace.lm.models import load_model
from actspace.lm.tasks import Item, load_task

ITEMS = [
    Item("a", "The quick brown fox", ["jumps over the lazy dog.", "sat.", "is a cat"], 0, {}),
    Item("b", "A man is sitting on a roof. He starts", ["pulling up roofing.", "to fly", "A"], 1),
    Item("c", "Question: what is the capital of France?\nAnswer:", ["Paris", "the bird"], 0, {}),
    Item("d", "1, 2, 3,", ["10 and 42", "D", "so do A, B, C and D too"], 1, {}),
    Item("e", "The cat sat on the mat and looked at the bird", ["outside", "the window."], 1),
    Item("f", "Q: what is 1, 2, 3?\nA:", ["Numbers", "A cat", "the mat and the window"], 0),
]


def test_leading_batch_stops_where_padding_would_exceed_the_tolerance():
    # 10, 10, 9: 30 slots for 29 tokens; adding 5 would make 40 slots for 34 tokens (> 1.15)
    assert leading_batch([10, 10, 9, 5, 5], ceiling=8) == 3
    assert leading_batch([10, 10, 9, 5, 5], ceiling=2) == 2  # the ceiling binds first
    assert leading_batch([10, 1], ceiling=8) == 1  # one item alone always forms a batch
    assert leading_batch([10, 1], ceiling=8, tolerance=math.inf) == 2
    assert leading_batch([], ceiling=8) == 0


def test_length_groups_are_the_fewest_within_the_tolerance():
    # sorted: 10 (0), 9 (4), 5 (6), 5 (7), 2 (5), 1 (1), 1 (2), 1 (3); 34 tokens, budget 3.4
    # (at 10%); three groups pad at least 4 ([10 9] [5 5 2] [1 1 1] or [10 9] [5 5] [2 1 1 1])
    groups = length_groups([10, 1, 1, 1, 9, 2, 5, 5], tolerance=0.10)
    assert groups == [[0, 4], [6, 7], [5], [1, 2, 3]]
    assert length_groups([3, 3, 3], tolerance=0.0) == [[0, 1, 2]]
    assert length_groups([4, 2], tolerance=0.0) == [[0], [1]]
    assert length_groups([4, 2], tolerance=math.inf) == [[0, 1]]
    assert length_groups([]) == []


def test_plan_counts_slots_of_both_passes():
    # one batch (ceiling 2, equal contexts): context 2 x 5 slots; choices 4, 4, 1, 1 in two groups
    plan = plan_padding([5, 5], [[4, 1], [4, 1]], ceiling=2)
    assert (plan.real, plan.slots, plan.forward_passes) == (20, 20, 3)
    assert plan.efficiency == 1.0
    # the former plan: one continuation pass padded to 4
    wide = plan_padding([5, 5], [[4, 1], [4, 1]], ceiling=2, tolerance=math.inf)
    assert (wide.slots, wide.forward_passes) == (10 + 16, 2)
    assert padding_efficiency(26, 20) == 1.3 and padding_efficiency(0, 0) is None


def _shaped(rng, n, context, n_choices, choice):
    contexts = [int(x) for x in rng.integers(*context, size=n)]
    counts = [n_choices] * n if isinstance(n_choices, int) else rng.integers(*n_choices, size=n)
    choices = [[int(x) for x in rng.integers(*choice, size=k)] for k in counts]
    return contexts, choices


#: Token-length ranges shaped like the benchmarks (SmolLM2 tokenizer on the real data).
SHAPES = {
    "hellaswag": dict(context=(20, 140), n_choices=4, choice=(5, 70)),
    "truthfulqa_mc2": dict(context=(20, 60), n_choices=(2, 14), choice=(2, 45)),
    "mmlu": dict(context=(30, 600), n_choices=4, choice=(1, 40)),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("batch_size", [8, 16, 64])
def test_padding_within_the_tolerance_on_benchmark_shaped_lengths(shape, batch_size):
    rng = np.random.default_rng(0)
    contexts, choices = _shaped(rng, 256, **SHAPES[shape])
    before = plan_padding(contexts, choices, batch_size, tolerance=math.inf)
    after = plan_padding(contexts, choices, batch_size)
    assert before.real == after.real
    assert before.efficiency > 1 + PADDING_TOLERANCE  # uniform lengths padded to the batch's max
    assert after.efficiency <= 1 + PADDING_TOLERANCE


REAL_TASKS = {
    "hellaswag": dict(type="hellaswag", path="hellaswag_validation.jsonl.gz"),
    "truthfulqa_mc1": dict(type="truthfulqa_mc1", path="truthfulqa_mc_validation.jsonl.gz"),
    "truthfulqa_mc2": dict(type="truthfulqa_mc2", path="truthfulqa_mc_validation.jsonl.gz"),
    "mmlu": dict(type="mmlu", path="mmlu_validation.jsonl.gz"),
}


@pytest.mark.parametrize("task", sorted(REAL_TASKS))
def test_padding_within_the_tolerance_on_real_benchmark_items(task, shared_benchmarks):
    spec = {**REAL_TASKS[task], "source": "local", "limit": 300}
    spec["path"] = str(shared_benchmarks / spec["path"])
    encoded, _ = encode_items(make_tokenizer(), load_task(spec))
    contexts = [len(e.context) for e in encoded]
    choices = [[len(c) for c in e.choices] for e in encoded]
    for batch_size in (16, 64):
        assert plan_padding(contexts, choices, batch_size).efficiency <= 1 + PADDING_TOLERANCE


def _load(folder):
    return load_model(folder, dtype="float32", device="cpu")


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_scoring_equals_one_item_at_a_time(family, tiny_model_dir, one_torch_thread):
    model, tokenizer = _load(tiny_model_dir(family))
    encoded, _ = encode_items(tokenizer, ITEMS)
    pad = tokenizer.pad_token_id
    batched = score_batch(model, encoded, pad_token_id=pad, max_choices=3)
    assert batched.forward_passes > 2  # choices of different lengths ran in several groups
    for row, item in enumerate(encoded):
        alone = score_batch(model, [item], pad_token_id=pad, max_choices=3)
        np.testing.assert_allclose(batched.logliks[row], alone.logliks[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.choice_end[row], alone.choice_end[0], atol=1e-5, rtol=0)
        for name, pooled in batched.pooled.items():
            torch.testing.assert_close(pooled[row], alone.pooled[name][0], atol=1e-5, rtol=0)


def test_out_of_memory_in_a_choice_pass_retries_to_identical_results(
    tiny_model_dir, tmp_path, monkeypatch
):
    from actspace.core.store import ActivationStore
    from actspace.lm.extraction import extract_store

    model, tokenizer = _load(tiny_model_dir("llama"))
    same = [Item(item.id, "A man is sitting on a roof.", item.choices, 0, {}) for item in ITEMS]
    kwargs = dict(
        poolings=["last"], storage_dtype="float32", shard_size=16, batch_size=8, progress=False
    )
    clean = extract_store(model, tokenizer, same, tmp_path / "clean", **kwargs)
    forward = model.forward

    def flaky(*args, **kw):
        if kw.get(cache_argument(model)) is not None and kw["input_ids"].shape[0] > 4:
            raise RuntimeError("CUDA error: out of memory")
        return forward(*args, **kw)

    monkeypatch.setattr(model, "forward", flaky)
    meta = extract_store(model, tokenizer, same, tmp_path / "oom", **kwargs)
    assert meta["timings"]["oom_retries"] >= 1 and clean["timings"]["oom_retries"] == 0
    a, b = ActivationStore(tmp_path / "clean"), ActivationStore(tmp_path / "oom")
    for x, y in zip(a.logliks(), b.logliks(), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)
    np.testing.assert_allclose(a.choice_end(1)[0], b.choice_end(1)[0], atol=1e-5, rtol=0)
