"""patching_layers (branch 2C): exact known answers of the layer-by-position sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.pairs import answered_pairs
from helpers.scripts import load_script

from actspace.branches.patching.patching_layers import (
    PairSweep,
    figure_data,
    run_layer_position_sweep,
    strongest_cell,
    summarise_sweeps,
    summary_markdown,
    sweep_pairs,
)
from actspace.core.schema import validate_schema
from actspace.lm.hooks import patch_residual
from actspace.lm.models import load_model, residual_blocks
from actspace.methods.patching import encode_pairs

#: experiments.patching_layers with the schema's defaults.
SECTION = validate_schema({})["experiments"]["patching_layers"]


@pytest.fixture(scope="module", params=("gpt2", "llama"))
def tiny(request, tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir(request.param), dtype="float32", device="cpu")
    return model, tokenizer, answered_pairs(model, tokenizer, n=4)


def test_cells_with_known_effects(tiny):
    """Layer 0 at the differing token and layer L at the final token carry everything; positions
    before the difference and layer 0 elsewhere carry nothing."""
    model, tokenizer, pairs = tiny
    n_blocks = len(residual_blocks(model))
    sweeps, layers, _ = sweep_pairs(model, tokenizer, pairs, layers=None, max_batch=7)
    assert layers == list(range(n_blocks + 1))
    for sweep in sweeps:
        assert sweep.usable
        for direction in ("denoising", "noising"):
            effect = sweep.effect(direction)
            assert effect.shape == (n_blocks + 1, sweep.n_tokens)
            np.testing.assert_allclose(effect[0, sweep.diff_position], 1.0, atol=1e-4)
            np.testing.assert_allclose(effect[n_blocks, -1], 1.0, atol=1e-4)
            others = [p for p in range(sweep.n_tokens) if p != sweep.diff_position]
            np.testing.assert_allclose(effect[0, others], 0.0, atol=1e-4)
            np.testing.assert_allclose(effect[:, : sweep.diff_position], 0.0, atol=1e-4)
            assert sweep.changed(direction)[0, sweep.diff_position]
            assert not sweep.changed(direction)[0, others].any()


def test_batched_cells_equal_one_patch_at_a_time(tiny):
    """Every batched cell equals an unbatched forward patched with the hook directly."""
    model, tokenizer, pairs = tiny
    blocks = residual_blocks(model)
    encoded, _ = encode_pairs(tokenizer, pairs[:1])
    pair = encoded[0]
    sweeps, layers, _ = sweep_pairs(model, tokenizer, pairs[:1], layers=None, max_batch=5)
    clean = torch.tensor([pair.clean_ids])
    corrupted = torch.tensor([pair.corrupted_ids])
    with torch.no_grad():
        hidden = model(clean, output_hidden_states=True).hidden_states
    for layer in layers[1:-1]:  # hidden_states[L] may carry the final norm; inner layers do not
        for position in range(len(pair.clean_ids)):

            def write(h, layer=layer, position=position):
                h = h.clone()
                h[0, position] = hidden[layer][0, position]
                return h

            with torch.no_grad(), patch_residual(blocks[layer - 1], write):
                logits = model(corrupted).logits[0, -1]
            expected = float(logits[pair.clean_token] - logits[pair.corrupted_token])
            assert sweeps[0].denoised[layer, position] == pytest.approx(expected, abs=1e-4)


def _sweep(pid: str, n_tokens: int, diff: int, denoised, noised, clean=2.0, corrupted=-2.0):
    return PairSweep(
        pid,
        n_tokens,
        diff,
        clean,
        corrupted,
        np.asarray(denoised, float),
        np.asarray(noised, float),
    )


def test_summary_aligns_pairs_at_the_final_token_and_drops_unusable_pairs():
    # Two layers (0, 1, 2 with n_blocks = 2) and prompts of 2 and 3 tokens.
    a = _sweep(
        "a",
        2,
        0,
        denoised=[[2, -2], [2, -2], [-2, 2]],
        noised=[[-2, 2], [2, 2], [2, -2]],
    )
    b = _sweep(
        "b",
        3,
        1,
        denoised=[[-2, 2, -2], [-2, 0, 2], [-2, -2, 2]],
        noised=[[2, -2, 2], [2, 2, -2], [2, 2, -2]],
    )
    wrong = _sweep("c", 2, 0, [[9, 9]] * 3, [[9, 9]] * 3, clean=-1.0, corrupted=1.0)
    out = summarise_sweeps([a, b, wrong], [0, 1, 2], n_blocks=2, n_bootstrap=200)
    assert out["n_pairs"] == 3 and out["n_usable"] == 2
    assert out["offsets"] == [-2, -1, 0]
    den = out["directions"]["denoising"]
    # Recovery (patched + 2) / 4: a's cells sit in columns 1-2, b's in columns 0-2.
    effect = np.array(den["effect_heatmap"])
    np.testing.assert_allclose(effect[0], [0.0, (1.0 + 1.0) / 2, (0.0 + 0.0) / 2])
    np.testing.assert_allclose(effect[1], [0.0, (1.0 + 0.5) / 2, (0.0 + 1.0) / 2])
    assert den["pairs_per_cell"][0] == [1, 2, 2]
    # Only layer 1 is selectable; its best cell is the final token (b changes, a does not: 0.5)
    # against offset -1 (a changes, b does not: 0.5); the tie goes to the higher effect (0.75).
    assert den["strongest"] == {"layer": 1, "offset": -1, "change_rate": 0.5, "effect": 0.75}
    diff_curve = den["by_layer"]["diff"]
    assert [r["effect"]["mean"] for r in diff_curve] == [1.0, 0.75, 0.0]
    assert [r["change"]["rate"] for r in diff_curve] == [1.0, 0.5, 0.0]
    final_curve = den["by_layer"]["final"]
    assert [r["change"]["rate"] for r in final_curve] == [0.0, 0.5, 1.0]
    noi = out["directions"]["noising"]
    # Destruction (2 - patched) / 4; a at layer 0, diff position (column 0): (2 + 2) / 4 = 1.
    assert [r["effect"]["mean"] for r in noi["by_layer"]["diff"]] == [1.0, 0.0, 0.0]
    assert [r["change"]["rate"] for r in noi["by_layer"]["final"]] == [0.0, 0.5, 1.0]
    assert out["strongest_layer"] == 1
    assert out["value"] == 0.5 and out["n"] == 2 and out["success"] is None
    assert out["comparison"]["kind"] == "one_sample"
    assert out["comparison"]["values"] == [1.0, 0.5]
    data = figure_data(out)
    assert np.array(data["heatmaps"]["noising"]["effect"]).shape == (3, 3)
    assert data["curves"]["denoising"]["diff"]["change_rate"] == [1.0, 0.5, 0.0]


def test_no_usable_pair_is_reported_not_invented():
    wrong = _sweep("c", 2, 0, [[9, 9]] * 3, [[9, 9]] * 3, clean=-1.0, corrupted=1.0)
    out = summarise_sweeps([wrong], [0, 1, 2], n_blocks=2)
    assert out["n_usable"] == 0 and out["directions"] == {} and "no pair" in out["note"]
    # The headline still exists (with no value), so the statistics step reports it as such.
    assert out["metric"] and out["value"] is None and out["comparison"] is None


def test_strongest_cell_ignores_layers_that_change_answers_by_construction():
    rate = np.array([[1.0, 0.0], [0.2, 0.6], [0.0, 1.0]])
    effect = np.array([[1.0, 0.0], [0.1, 0.5], [0.0, 1.0]])
    assert strongest_cell(rate, effect, [0, 1, 2], [1]) == (1, 1)
    with pytest.raises(ValueError, match="no selectable layer"):
        strongest_cell(rate, effect, [0, 2], [])


def test_experiment_results_and_summary(tiny):
    model, tokenizer, pairs = tiny
    results, per_pair = run_layer_position_sweep(
        model, tokenizer, pairs, layers=[0, 1, 2], max_batch=64, n_bootstrap=200, seed=0
    )
    assert results["layers"] == [0, 1, 2] and len(per_pair) == len(pairs)
    assert results["patched_forward_rows"] == sum(2 * (3 * p["n_tokens"] + 1) for p in per_pair)
    text = summary_markdown({**results, "model": "tiny"})
    assert "Strongest layer" in text and "| 0 |" in text
    json.dumps(figure_data(results))
    with pytest.raises(ValueError, match="layers must lie in 0"):
        sweep_pairs(model, tokenizer, pairs, layers=[99], max_batch=SECTION["max_batch"])
    with pytest.raises(ValueError, match="max_batch must be positive"):
        run_layer_position_sweep(
            model, tokenizer, pairs, layers=None, max_batch=0, n_bootstrap=200, seed=0
        )


def test_script_writes_the_experiment(tiny_model_dir, tmp_path):
    script = load_script("patching_layers")
    model, tokenizer = load_model(tiny_model_dir("gpt2"), dtype="float32", device="cpu")
    pairs = answered_pairs(model, tokenizer, n=3)
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text(
        "".join(
            json.dumps(
                {
                    "id": p.id,
                    "clean": p.clean,
                    "corrupted": p.corrupted,
                    "clean_answer": p.clean_answer,
                    "corrupted_answer": p.corrupted_answer,
                    "metadata": {},
                }
            )
            + "\n"
            for p in pairs
        )
    )
    # The section as the workflow passes it: schema defaults, resolved choices, the extras.
    params = {
        **SECTION,
        "model": "tiny",
        "pairs": str(pairs_file),
        "n_pairs": 50,
        "n_bootstrap": 200,
        "model_ref": {"name": "tiny", "path": str(tiny_model_dir("gpt2")), "revision": None},
        "dtype": "auto",
        "device": "cpu",
        "seed": 0,
    }
    out = tmp_path / "out"
    script.main(
        ["--params", json.dumps(params), "--pairs", str(pairs_file), "--output-dir", str(out)]
    )
    for name in ("results.json", "config.json", "summary.md", "figure_data.json", "per_pair.jsonl"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["n_usable"] == 3 and results["strongest_layer"] in results["selectable_layers"]
    assert results["model"] == str(tiny_model_dir("gpt2"))
    assert results["layers"] == list(range(results["n_blocks"] + 1))
    # The common flags override --params: --n-samples is this step's n_pairs.
    script.main(
        ["--params", json.dumps(params), "--pairs", str(pairs_file), "--n-samples", "2",
         "--layers", "0,1", "--output-dir", str(tmp_path / "two")]
    )  # fmt: skip
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["n_pairs_loaded"] == 2 and two["layers"] == [0, 1]
    with pytest.raises(SystemExit, match="^error: layers must lie"):
        script.main(
            ["--params", json.dumps(params), "--pairs", str(pairs_file), "--layers", "0,99",
             "--output-dir", str(tmp_path / "bad")]
        )  # fmt: skip
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit, match="^error: no model"):
        script.main(["--pairs", str(pairs_file), "--output-dir", str(tmp_path / "bad")])
