"""Activation patching and PM3: exact known answers on tiny models, and the arithmetic by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.pairs import answered_pairs, one_token_diff_prompts
from helpers.scripts import assert_clean_exit, load_script

from actspace.lm.hooks import patch_residual
from actspace.lm.models import load_model, residual_blocks
from actspace.methods.patching import (
    LayerPatching,
    PromptPair,
    encode_pairs,
    load_prompt_pairs,
    logit_diff_recovery,
    patched_logits,
    run_patching_layers,
)
from actspace.premortems.pm3 import pm3_from_patching, run_pm3, summary_markdown

#: The statistics' keywords, spelled out (the schema's defaults), so that these known answers do
#: not move when a default in the schema does.
STATS = {"n_bootstrap": 1000, "seed": 0, "threshold": 0.5, "selection_fraction": 0.5}
#: run_pm3's keywords: every layer at the differing token, every pair.
PM3 = {**STATS, "position": "diff", "layers": None, "n_pairs": 1000}
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


# --- arithmetic by hand ----------------------------------------------------------------------


def _hand_run() -> LayerPatching:
    # 6 pairs, layers 0..3 (3 blocks). Pair 5 is wrong on the clean prompt (unusable).
    clean = np.array([2.0, 4.0, 1.0, 3.0, 2.0, -1.0])
    corrupted = np.array([-2.0, -4.0, -1.0, -1.0, -2.0, -2.0])
    patched = np.array(
        [
            [2.0, 1.0, -1.0, -2.0],
            [4.0, 2.0, 0.0, -4.0],
            [1.0, -0.5, 0.5, -1.0],
            [3.0, 1.0, 2.0, -1.0],
            [2.0, -1.0, 1.0, -2.0],
            [-1.0, 0.0, 0.0, 0.0],
        ]
    )
    return LayerPatching(
        ids=[f"p{i}" for i in range(6)],
        layers=[0, 1, 2, 3],
        position="diff",
        positions=np.zeros(6, dtype=int),
        clean_diff=clean,
        corrupted_diff=corrupted,
        patched_diff=patched,
        flipped=patched > 0,
        flipped_argmax=patched > 0,
        candidate_tokens=[1, 2],
        clean_argmax_correct=clean > 0,
        corrupted_argmax_correct=corrupted < 0,
        skipped={"length_mismatch": 1},
        n_multi_token_answers=0,
    )


def test_recovery_arithmetic():
    rec = logit_diff_recovery(np.array([0.0, 1.0]), np.array([2.0, 3.0]), np.array([-2.0, 3.0]))
    assert rec[0] == pytest.approx(0.5)
    assert np.isnan(rec[1])


def test_pm3_arithmetic_by_hand():
    res = pm3_from_patching(_hand_run(), n_blocks=3, **{**STATS, "n_bootstrap": 200})
    assert res["baseline"]["n_usable"] == 5
    assert res["baseline"]["clean_accuracy"] == pytest.approx(5 / 6)
    assert res["baseline"]["corrupted_accuracy"] == pytest.approx(1.0)
    by_layer = {row["layer"]: row for row in res["per_layer"]}
    assert by_layer[0]["change_rate"] == 1.0 and by_layer[0]["recovery_mean"] == pytest.approx(1.0)
    assert by_layer[1]["change_rate"] == pytest.approx(3 / 5)
    # recovery at layer 1: (1+2)/4, (2+4)/8, (-0.5+1)/2, (1+1)/4, (-1+2)/4
    assert by_layer[1]["recovery_mean"] == pytest.approx(np.mean([0.75, 0.75, 0.25, 0.5, 0.25]))
    assert by_layer[2]["change_rate"] == pytest.approx(3 / 5)
    assert by_layer[3]["change_rate"] == 0.0
    assert res["selectable_layers"] == [1, 2]
    assert res["selection"]["n"] + res["n"] == 5
    assert res["selection"]["n"] == 2  # round(2.5) == 2 (banker's rounding)
    held = [int(i[1:]) for i in res["heldout"]["ids"]]
    chosen = res["chosen_layer"]
    assert chosen in (1, 2)
    expected = float(np.mean(_hand_run().flipped[held, chosen]))
    assert res["value"] == pytest.approx(expected)
    assert res["ci"][0] <= res["value"] <= res["ci"][1]
    assert res["ci"][0] <= res["heldout"]["ci_exact"][0]  # widened to the exact interval
    # 3 held-out pairs can never PASS 0.5: the Clopper-Pearson lower bound for 3/3 is 0.29.
    assert res["verdict"] in ("INCONCLUSIVE", "FAIL")
    assert sum(row["split"] == "heldout" for row in res["per_pair"]) == res["n"]
    assert res["per_pair"][5]["split"] is None


def test_pm3_layer_choice_by_selection_half():
    run = _hand_run()
    # Make layer 1 flip everything and layer 2 nothing: layer 1 must be chosen, value 1.0.
    run.patched_diff[:, 1], run.patched_diff[:, 2] = 1.0, -1.0
    run.flipped = run.patched_diff > 0
    res = pm3_from_patching(run, n_blocks=3, **{**STATS, "n_bootstrap": 200, "seed": 3})
    assert res["chosen_layer"] == 1
    assert res["value"] == 1.0
    assert res["selection"]["change_rate"]["1"] == 1.0


def test_pm3_too_few_usable_is_inconclusive():
    run = _hand_run()
    run.corrupted_diff = np.array([1.0, 1.0, 1.0, 1.0, 1.0, -2.0])  # none right on corrupted
    res = pm3_from_patching(run, n_blocks=3, **{**STATS, "n_bootstrap": 100})
    assert res["verdict"] == "INCONCLUSIVE" and res["n"] == 0 and res["chosen_layer"] is None
    assert "pair" in res["note"]
    summary_markdown({**res, "date": "2024-01-01", "duration_s": 0.1})


def test_large_all_flip_sample_passes():
    n = 40
    run = LayerPatching(
        ids=[str(i) for i in range(n)],
        layers=[1, 2],
        position="final",
        positions=np.zeros(n, dtype=int),
        clean_diff=np.ones(n),
        corrupted_diff=-np.ones(n),
        patched_diff=np.column_stack([np.ones(n), -np.ones(n)]),
        flipped=np.column_stack([np.ones(n, bool), np.zeros(n, bool)]),
        flipped_argmax=np.column_stack([np.ones(n, bool), np.zeros(n, bool)]),
        candidate_tokens=[1, 2],
        clean_argmax_correct=np.ones(n, bool),
        corrupted_argmax_correct=np.ones(n, bool),
        skipped={},
        n_multi_token_answers=0,
    )
    res = pm3_from_patching(run, n_blocks=3, **{**STATS, "n_bootstrap": 200})
    assert res["chosen_layer"] == 1 and res["value"] == 1.0 and res["n"] == 20
    assert res["ci"][0] == pytest.approx(0.025 ** (1 / 20))  # Clopper-Pearson for 20/20
    assert res["verdict"] == "PASS"


# --- end to end ------------------------------------------------------------------------------


def test_run_pm3_schema(tiny):
    model, tokenizer = tiny
    pairs = answered_pairs(model, tokenizer, n=6)
    bad = PromptPair("bad", "The cat sat", "The cat sat on the", "a", "o", {})
    res = run_pm3(model, tokenizer, [*pairs, bad], **{**PM3, "n_bootstrap": 100, "seed": 1})
    for key, kind in {
        "premortem": str,
        "name": str,
        "metric": str,
        "value": float,
        "ci": list,
        "ci_level": float,
        "threshold": float,
        "verdict": str,
        "n": int,
        "duration_s": float,
        "date": str,
    }.items():
        assert isinstance(res[key], kind), key
    assert (res["premortem"], res["name"], res["metric"]) == ("pm3", "patching", "change_rate")
    assert res["skipped"]["length_mismatch"] == 1
    assert res["baseline"]["n_usable"] == len(pairs)
    assert res["per_layer"][0]["change_rate"] == 1.0  # layer 0 at the differing token
    assert res["per_layer"][0]["recovery_mean"] == pytest.approx(1.0, abs=1e-4)
    text = summary_markdown(res)
    for word in ("Verdict", "Threshold", "CI", "Date", "Duration", res["verdict"]):
        assert word in text


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


def test_script_end_to_end(tmp_path, tiny_model_dir):
    pm3_patching = load_script("pm3_patching")
    folder = tiny_model_dir("gpt2")
    model, tokenizer = load_model(folder, dtype="float32", device="cpu")
    pairs = answered_pairs(model, tokenizer, n=6)
    pairs_path = tmp_path / "pairs.jsonl"
    pairs_path.write_text(
        "".join(json.dumps({**p.__dict__}) + "\n" for p in pairs), encoding="utf-8"
    )
    out = tmp_path / "pm3"
    section = {**PM3, "model": "tiny", "pairs": None, "n_pairs": 50, "n_bootstrap": 100}
    params = ["--params", json.dumps({**section, "dtype": "auto", "device": "cpu"})]
    args = ["--model", str(folder), "--pairs", str(pairs_path), "--output-dir", str(out)]
    pm3_patching.main([*params, *args, "--layers", "0,1,2,3"])
    results = json.loads((out / "results.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert results["premortem"] == "pm3" and results["model"] == str(folder)
    assert "per_pair" not in results
    assert len((out / "per_pair.jsonl").read_text().splitlines()) == len(pairs)
    assert config["position"] == "diff" and "provenance" in config
    assert config["pairs"] == str(pairs_path) and config["layers"] == [0, 1, 2, 3]
    assert "Verdict" in (out / "summary.md").read_text()
    pm3_patching.main([*params, *args, "--n-samples", "4"])
    assert json.loads((out / "results.json").read_text())["n_pairs_loaded"] == 4
    main = pm3_patching.main
    assert_clean_exit(main, [*params, *args, "--layers", "0,9"], "layers must lie in 0..3")
    missing = ["--pairs", str(tmp_path / "missing.jsonl"), "--output-dir", str(out)]
    with_model = [*params, "--model", str(folder), *missing]
    assert_clean_exit(main, with_model, "prompt pairs file not found")
    assert_clean_exit(main, [*params, *missing], "missing parameter(s) model_ref")
