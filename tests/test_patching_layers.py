"""patching_layers (branch 2C): exact known answers of the layer-by-position sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.pairs import answered_pairs
from helpers.scripts import load_script

from actspace.branches.patching.patching_layers import (
    SPLIT_METHOD,
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
from actspace.methods.patching import encode_pairs, exact_proportion_ci, grouped_parts

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
    strongest = {k: den["strongest"][k] for k in ("layer", "offset", "change_rate", "effect")}
    assert strongest == {"layer": 1, "offset": -1, "change_rate": 0.5, "effect": 0.75}
    diff_curve = den["by_layer"]["diff"]
    assert [r["effect"]["mean"] for r in diff_curve] == [1.0, 0.75, 0.0]
    assert [r["change"]["rate"] for r in diff_curve] == [1.0, 0.5, 0.0]
    final_curve = den["by_layer"]["final"]
    assert [r["change"]["rate"] for r in final_curve] == [0.0, 0.5, 1.0]
    noi = out["directions"]["noising"]
    # Destruction (2 - patched) / 4; a at layer 0, diff position (column 0): (2 + 2) / 4 = 1.
    assert [r["effect"]["mean"] for r in noi["by_layer"]["diff"]] == [1.0, 0.0, 0.0]
    assert [r["change"]["rate"] for r in noi["by_layer"]["final"]] == [0.0, 0.5, 1.0]
    # The headline is held out: with seed 0, b alone selects (its layer-1 answer changes at the
    # final token only: rate 1 at offset 0) and a alone tests: a's layer 1 at offset 0 is -2,
    # no change, recovery (-2 + 2) / 4 = 0. The all-pairs cell above (offset -1) plays no part.
    assert out["split"]["selection"]["ids"] == ["b"] and out["split"]["heldout"]["ids"] == ["a"]
    assert (out["strongest_layer"], out["strongest_offset"]) == (1, 0)
    assert out["selection_change_rate"] == 1.0
    assert out["value"] == 0.0 and out["n"] == 1 and out["success"] is None
    assert out["held_out"] is True and "selection pairs" in out["selection"]
    assert out["comparison"]["kind"] == "one_sample"
    assert out["comparison"]["values"] == [0.0]
    data = figure_data(out)
    assert np.array(data["heatmaps"]["noising"]["effect"]).shape == (3, 3)
    assert data["curves"]["denoising"]["diff"]["change_rate"] == [1.0, 0.5, 0.0]


def test_no_usable_pair_is_reported_not_invented():
    wrong = _sweep("c", 2, 0, [[9, 9]] * 3, [[9, 9]] * 3, clean=-1.0, corrupted=1.0)
    out = summarise_sweeps([wrong], [0, 1, 2], n_blocks=2)
    assert out["n_usable"] == 0 and out["directions"] == {} and "no pair" in out["note"]
    # The headline still exists (with no value), so the statistics step reports it as such.
    assert out["metric"] and out["value"] is None and out["comparison"] is None
    assert out["held_out"] is False and "no cell was chosen" in out["selection"]


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
    assert "Strongest cell over all usable pairs" in text and "| 0 |" in text
    # The helper's pairs carry no metadata: each is grouped by its clean answer.
    assert [row["group"] for row in per_pair] == [f"answer:{p.clean_answer}" for p in pairs]
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
                    "metadata": {"group": p.id},
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
    # Split as PM3 splits (its default selection_fraction, the seed), by metadata.group.
    rows = [json.loads(line) for line in (out / "per_pair.jsonl").read_text().splitlines()]
    assert [row["group"] for row in rows] == [f"group:{p.id}" for p in pairs]
    parts = {row["id"]: row["split"] for row in rows}
    assert sorted(results["split"]["selection"]["ids"] + results["split"]["heldout"]["ids"]) == (
        sorted(parts)
    )
    assert all(parts[i] == "heldout" for i in results["split"]["heldout"]["ids"])
    assert results["n"] == results["split"]["heldout"]["n"] and results["held_out"] is True
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


# ------------------------------------------------------------------- the held-out headline
def _grouped_sweeps(changes: np.ndarray, groups: list[str]) -> list[PairSweep]:
    """Usable pairs of 4 tokens (difference at token 1) whose denoised answer changes where
    ``changes`` ([pairs, layers, 4], bool) says: the patched difference is +2 there, -2 elsewhere;
    noising mirrors it."""
    out = []
    for i, (flags, group) in enumerate(zip(changes, groups, strict=True)):
        denoised = np.where(flags, 2.0, -2.0)
        out.append(_sweep(f"p{i}", 4, 1, denoised, -denoised))
        out[-1].group = group
    return out


def _rate(sweeps, ids, layer, offset):
    by_id = {s.id: s for s in sweeps}
    return float(np.mean([by_id[i].changed("denoising")[layer, offset - 1] for i in ids]))


def test_the_cell_chosen_on_one_group_is_tested_on_the_other_and_does_not_carry_over():
    """Two entities: one's answers change only at layer 1, final token; the other's only at layer
    2, the token before. Whichever entity selects, the cell it picks changes none of the other's:
    the held-out rate is 0, where the same pairs would have shown 1."""
    changes = np.zeros((10, 4, 4), dtype=bool)
    changes[:5, 1, 3] = True  # entity x: layer 1, offset 0
    changes[5:, 2, 2] = True  # entity y: layer 2, offset -1
    sweeps = _grouped_sweeps(changes, ["entity:x"] * 5 + ["entity:y"] * 5)
    for seed in range(4):
        out = summarise_sweeps(sweeps, [0, 1, 2, 3], n_blocks=3, n_bootstrap=200, seed=seed)
        split = out["split"]
        assert {split["selection"]["n_groups"], split["heldout"]["n_groups"]} == {1}
        chosen_x = split["selection"]["ids"] == [f"p{i}" for i in range(5)]
        assert (out["strongest_layer"], out["strongest_offset"]) == (
            (1, 0) if chosen_x else (2, -1)
        )
        assert out["selection_change_rate"] == 1.0
        assert out["value"] == 0.0 and out["n"] == 5 and out["ci"][0] == 0.0
        assert out["comparison"]["values"] == [0.0] * 5  # recovery (-2 + 2) / 4


def test_the_held_out_pairs_share_no_pair_and_no_entity_with_the_selection_pairs():
    rng = np.random.default_rng(7)
    groups = [f"entity:{i // 3}" for i in range(24)]  # 8 entities of 3 pairs
    sweeps = _grouped_sweeps(rng.random((24, 5, 4)) < 0.4, groups)
    out = summarise_sweeps(sweeps, [0, 1, 2, 3, 4], n_blocks=4, n_bootstrap=200, seed=3)
    split = out["split"]
    select, heldout = split["selection"]["ids"], split["heldout"]["ids"]
    assert not set(select) & set(heldout) and sorted(select + heldout) == sorted(
        s.id for s in sweeps
    )
    group_of = {s.id: s.group for s in sweeps}
    assert not {group_of[i] for i in select} & {group_of[i] for i in heldout}
    assert split == {**split, "method": SPLIT_METHOD}
    # The split is PM3's: grouped_parts on the usable pairs, their groups, the fraction, the seed.
    idx = np.arange(24)
    pm3_select, pm3_heldout, _ = grouped_parts(idx, np.array(groups, dtype=object), 0.5, 3)
    assert select == [f"p{i}" for i in pm3_select] and heldout == [f"p{i}" for i in pm3_heldout]
    # The chosen cell is the best on the selection pairs; its value is the held-out pairs' rate.
    layer, offset = out["strongest_layer"], out["strongest_offset"]
    best = max(_rate(sweeps, select, k, o) for k in (1, 2, 3) for o in range(-3, 1))
    assert out["selection_change_rate"] == _rate(sweeps, select, layer, offset) == best
    assert out["value"] == pytest.approx(_rate(sweeps, heldout, layer, offset))
    assert out["n"] == len(heldout)


def test_a_cell_that_is_strongest_by_chance_is_unremarkable_on_held_out_pairs():
    """Every cell changes 30% of answers at random. The cell that happens to be strongest on the
    40 selection pairs changes 50% of them, an interval clear of 30% had it been tested there;
    on the 40 held-out pairs it changes 30%, and its interval holds the true rate."""
    rng = np.random.default_rng(16)
    sweeps = _grouped_sweeps(rng.random((80, 5, 4)) < 0.3, [f"entity:{i // 2}" for i in range(80)])
    out = summarise_sweeps(sweeps, [0, 1, 2, 3, 4], n_blocks=4, n_bootstrap=200, seed=0)
    assert out["selection_change_rate"] == 0.5
    assert exact_proportion_ci(20, 40)[0] > 0.3  # the same-pairs test would have "found" it
    assert out["value"] == pytest.approx(0.3) and out["n"] == 40
    assert out["ci"][0] < 0.3 < out["ci"][1]
