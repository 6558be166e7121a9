"""The activation patching core: exact known answers on tiny models, layer bands, prompt pairs.

PM3 itself (the statistics, the verdicts, the script) is tested in tests/test_pm3.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.pairs import answered_pairs, one_token_diff_prompts

from actspace.core.groups import pair_group
from actspace.lm.hooks import patch_residual
from actspace.lm.models import load_model, residual_blocks
from actspace.methods.patching import (
    PromptPair,
    band_range,
    encode_pairs,
    interior_layers,
    known_answer_layer,
    load_prompt_pairs,
    logit_diff_recovery,
    patched_layers,
    patched_logits,
    run_patching_layers,
    sample_pairs,
)

#: Fast families on every run; the others (same code paths, more CPU time) under ``-m slow``.
FAMILIES = (
    "gpt2",
    "gpt_neox",
    "llama",
    "opt",
    *(pytest.param(f, marks=pytest.mark.slow) for f in ("gpt_neo", "qwen2", "gemma2", "gemma3")),
)


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir(request.param), dtype="float32", device="cpu")
    return model, tokenizer


def _pair_ids(tokenizer) -> tuple[list[int], list[int], int]:
    clean, corrupted = one_token_diff_prompts(tokenizer)[0]
    x, y = tokenizer(clean)["input_ids"], tokenizer(corrupted)["input_ids"]
    return x, y, next(i for i, (a, b) in enumerate(zip(x, y, strict=True)) if a != b)


def _logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


# --- exact known answers ---------------------------------------------------------------------


def test_self_patching_changes_nothing(tiny):
    model, tokenizer = tiny
    _, corrupted, diff = _pair_ids(tokenizer)
    layers = list(range(len(residual_blocks(model)) + 1))
    reference = _logits(model, corrupted)
    for position in (diff, None):
        out = patched_logits(model, corrupted, corrupted, layers, position, all_positions=True)
        torch.testing.assert_close(out.source, reference, atol=1e-5, rtol=0)
        for row in out.patched:
            torch.testing.assert_close(row, reference, atol=1e-5, rtol=0)


def test_patching_every_position_reproduces_clean(tiny):
    model, tokenizer = tiny
    clean, corrupted, _ = _pair_ids(tokenizer)
    layers = list(range(len(residual_blocks(model)) + 1))
    out = patched_logits(model, clean, corrupted, layers, None, all_positions=True)
    clean_logits = _logits(model, clean)
    assert (clean_logits - _logits(model, corrupted)).abs().max() > 1e-3  # the pair differs
    for row in out.patched:
        torch.testing.assert_close(row, clean_logits, atol=1e-5, rtol=0)


def test_embedding_at_diff_and_last_layer_at_final_restore_clean(tiny):
    """Layer 0 at the differing token IS the clean input; layer L at the final token IS the
    clean read-out. Layer 0 at the final token (not the differing one) changes nothing."""
    model, tokenizer = tiny
    clean, corrupted, diff = _pair_ids(tokenizer)
    n_blocks = len(residual_blocks(model))
    clean_logits, corrupted_logits = _logits(model, clean), _logits(model, corrupted)
    at_diff = patched_logits(model, clean, corrupted, [0], diff, all_positions=True)
    torch.testing.assert_close(at_diff.patched[0], clean_logits, atol=1e-5, rtol=0)
    at_final = patched_logits(model, clean, corrupted, [n_blocks, 0], -1)
    torch.testing.assert_close(at_final.patched[0], clean_logits[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(at_final.patched[1], corrupted_logits[-1], atol=1e-5, rtol=0)


def test_positions_before_the_patch_are_untouched(tiny):
    model, tokenizer = tiny
    clean, corrupted, diff = _pair_ids(tokenizer)
    out = patched_logits(model, clean, corrupted, [1, 2], diff, all_positions=True)
    reference = _logits(model, corrupted)
    for row in out.patched:
        torch.testing.assert_close(row[:diff], reference[:diff], atol=1e-5, rtol=0)
        assert (row[diff:] - reference[diff:]).abs().max() > 1e-4


def test_batched_equals_one_at_a_time(tiny):
    model, tokenizer = tiny
    clean, corrupted, diff = _pair_ids(tokenizer)
    n_blocks = len(residual_blocks(model))
    rows = [None, *range(n_blocks + 1), 1, 2]
    positions = [None, *[diff] * (n_blocks + 1), -1, 0]
    batched = patched_logits(model, clean, corrupted, rows, positions, all_positions=True)
    chunked = patched_logits(
        model, clean, corrupted, rows, positions, all_positions=True, max_batch=3
    )
    torch.testing.assert_close(chunked.patched, batched.patched, atol=1e-5, rtol=0)
    for i, (layer, position) in enumerate(zip(rows, positions, strict=True)):
        single = patched_logits(model, clean, corrupted, [layer], position, all_positions=True)
        torch.testing.assert_close(single.patched[0], batched.patched[i], atol=1e-5, rtol=0)


def test_patch_matches_a_hand_written_hook(tiny):
    """An independent one-row patch written directly with patch_residual gives the same logits."""
    model, tokenizer = tiny
    clean, corrupted, diff = _pair_ids(tokenizer)
    blocks = residual_blocks(model)
    with torch.no_grad():
        hidden = model(torch.tensor([clean]), output_hidden_states=True).hidden_states
    layer = 2
    source = hidden[layer][0, diff].clone()

    def put(h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        h[:, diff] = source
        return h

    with patch_residual(blocks[layer - 1], put):
        expected = _logits(model, corrupted)[-1]
    out = patched_logits(model, clean, corrupted, [None, layer, None], diff)
    torch.testing.assert_close(out.patched[1], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.patched[0], out.patched[2], atol=1e-5, rtol=0)


def test_noising_swaps_the_roles(tiny):
    model, tokenizer = tiny
    clean, corrupted, diff = _pair_ids(tokenizer)
    noised = patched_logits(model, corrupted, clean, [None, 0], diff)
    torch.testing.assert_close(noised.patched[0], _logits(model, clean)[-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(noised.patched[1], _logits(model, corrupted)[-1], atol=1e-5, rtol=0)


def test_run_patching_layers_known_rows(tiny):
    model, tokenizer = tiny
    pairs = answered_pairs(model, tokenizer, n=4)
    assert len(pairs) >= 2
    n_blocks = len(residual_blocks(model))
    run = run_patching_layers(model, tokenizer, pairs, position="diff")
    assert run.layers == list(range(n_blocks + 1))
    assert run.usable.all()
    np.testing.assert_allclose(run.patched_diff[:, 0], run.clean_diff, atol=1e-5)
    assert run.flipped[:, 0].all()
    assert (run.flipped_argmax[:, 0] == run.clean_argmax_correct).all()
    final = run_patching_layers(model, tokenizer, pairs, position="final", layers=[0, n_blocks])
    np.testing.assert_allclose(final.patched_diff[:, 1], final.clean_diff, atol=1e-5)
    np.testing.assert_allclose(final.patched_diff[:, 0], final.corrupted_diff, atol=1e-5)
    assert (final.positions == [len(tokenizer(p.clean)["input_ids"]) - 1 for p in pairs]).all()


def test_recovery_arithmetic():
    rec = logit_diff_recovery(np.array([0.0, 1.0]), np.array([2.0, 3.0]), np.array([-2.0, 3.0]))
    assert rec[0] == pytest.approx(0.5)
    assert np.isnan(rec[1])


# --- layer bands and known-answer layers ------------------------------------------------------


def test_band_range_and_interior_layers():
    """layers ceil(low L)..floor(high L); the known-answer cell at the position never inside."""
    assert band_range((0.25, 0.75), 30) == (8, 22)
    assert band_range((0.25, 0.75), 4) == (1, 3)  # 0.25 * 4 is exactly layer 1
    assert band_range((0.0, 1.0), 12) == (0, 12)
    every = list(range(31))
    assert interior_layers(every, 30, (0.25, 0.75), "diff") == list(range(8, 23))
    assert interior_layers(range(5), 4, (0.25, 0.75), "diff") == [2, 3]  # not layer 1
    assert interior_layers(range(5), 4, (0.25, 0.75), "final") == [1, 2]  # not layer 3
    assert interior_layers(range(5), 4, (0.0, 1.0), "diff") == [2, 3]  # never 0, 1 or L
    assert interior_layers([0, 3, 6], 8, (0.25, 0.75), "diff") == [3, 6]
    assert (known_answer_layer("diff", 30), known_answer_layer("final", 30)) == (1, 29)
    assert patched_layers([0, 3, 6], 30) == [0, 1, 3, 6, 29]
    assert patched_layers(None, 30) is None
    with pytest.raises(ValueError, match="layer_band must be"):
        band_range((0.5, 0.5), 12)


# --- prompt pairs ------------------------------------------------------------------------------


def _pair(i: int, entity: str | None = None) -> PromptPair:
    meta = {} if entity is None else {"clean_entity": entity}
    return PromptPair(f"p{i:02d}", f"a b{i}", f"a c{i}", f"x{i}", f"y{i}", meta)


def test_sample_pairs_is_seeded_random_not_the_top():
    pairs = [_pair(i) for i in range(50)]
    first = sample_pairs(pairs, 10, seed=42)
    assert len(first) == 10 and len({p.id for p in first}) == 10
    assert first == sample_pairs(pairs, 10, seed=42)  # the same seed, the same pairs
    assert first != pairs[:10] and first != sample_pairs(pairs, 10, seed=43)
    assert [p.id for p in first] == sorted(p.id for p in first)  # kept in file order
    assert sample_pairs(pairs, 80, seed=0) == pairs  # all when the file has fewer
    with pytest.raises(ValueError, match="n_pairs must be positive"):
        sample_pairs(pairs, 0, seed=0)


def test_pairs_carry_their_group(tiny):
    """run_patching_layers labels each encoded pair with core.groups.pair_group."""
    model, tokenizer = tiny
    pairs = answered_pairs(model, tokenizer, n=3)
    tagged = [
        PromptPair(p.id, p.clean, p.corrupted, p.clean_answer, p.corrupted_answer, meta)
        for p, meta in zip(pairs, ({"clean_entity": "France"}, {"group": 7}, {}), strict=False)
    ]
    run = run_patching_layers(model, tokenizer, tagged, layers=[0])
    expected = ["entity:France", "group:7", f"answer:{tagged[2].clean_answer}"]
    assert run.groups == expected[: len(tagged)]


def test_capital_pairs_group_by_their_clean_entity():
    """The paper's capitals file: each clean entity is one group of two pairs (25 groups)."""
    pairs = load_prompt_pairs("config/prompt_pairs_capitals.jsonl")
    groups = [pair_group({"metadata": p.metadata, "clean_answer": p.clean_answer}) for p in pairs]
    assert len(pairs) == 50 and len(set(groups)) == 25
    assert groups[0] == groups[1] == "entity:France"
    sample = load_prompt_pairs("config/prompt_pairs_capitals.jsonl", n_pairs=20, seed=42)
    assert len(sample) == 20 and sample == sample_pairs(pairs, 20, seed=42)


def test_encode_pairs_skips_and_errors():
    tokenizer = _tokenizer()
    ok = PromptPair("a", "The cat sat on roof mat", "The cat sat on A mat", "roof", "A", {})
    multi = PromptPair("b", "The cat sat", "A man sat", "roof", "A", {})
    same = PromptPair("c", "The cat sat", "The cat sat", "roof", "A", {})
    one_answer = PromptPair("d", ok.clean, ok.corrupted, "roof", "roof", {})
    encoded, skipped = encode_pairs(tokenizer, [ok, multi, same, one_answer])
    assert [e.pair.id for e in encoded] == ["a"]
    assert skipped["identical_prompts"] == 1 and skipped["same_answer_token"] == 1
    assert skipped["multiple_differences"] + skipped["length_mismatch"] == 1
    with pytest.raises(ValueError, match="none of the 2 prompt pairs is usable"):
        encode_pairs(tokenizer, [same, one_answer])


def _tokenizer():
    from helpers.tiny import make_tokenizer

    return make_tokenizer()


def test_load_prompt_pairs(tmp_path):
    good = {
        "id": "x",
        "clean": "a b",
        "corrupted": "a c",
        "clean_answer": "b",
        "corrupted_answer": "c",
        "metadata": {"k": 1},
    }
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "id": "y"}) + "\n")
    pairs = load_prompt_pairs(path)
    assert [p.id for p in pairs] == ["x", "y"] and pairs[0].metadata == {"k": 1}
    cases = {
        "line 2 lacks metadata": [good, {k: v for k, v in good.items() if k != "metadata"}],
        "line 1: clean_answer ' b' has leading whitespace": [{**good, "clean_answer": " b"}],
        "line 2: id 'x' repeats line 1": [good, good],
        "line 1: clean must be a str": [{**good, "clean": 3}],
    }
    for message, rows in cases.items():
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        with pytest.raises(ValueError, match=message):
            load_prompt_pairs(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        load_prompt_pairs(path)
