"""Steering vectors, steered generation and side effects: known answers on tiny models.

The fast tests use tiny random models; the slow one trains (or reuses) a built-in organism and
checks that steering toward an attribute raises its score, as the organisms were built to allow.
The relative coefficients, the first position and the shipped English sets have their own tests in
tests/test_steering_convention.py; the real-model check is tests/test_steering_real_lm.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.scripts import assert_clean_exit, load_script
from safetensors.torch import load_file

from actspace.branches.patching.behavior_edit import (
    SideEffectData,
    choose_best,
    headline,
    infer_model_source,
    load_neutral_prompts,
    neutral_text_split,
    perplexity_ratio,
    run_behavior_edit,
    shift_summary,
    split_indices,
    vector_split,
)
from actspace.branches.patching.edit_choice import least_damaging
from actspace.branches.patching.patching_vs_prompting import (
    PromptingData,
    compare_methods,
    default_prefix,
    prompting_results,
    run_patching_vs_prompting,
    summary_markdown,
)
from actspace.core.criteria import failed
from actspace.core.io import read_json, read_jsonl, write_jsonl
from actspace.core.schema import validate_schema
from actspace.lm.hooks import capture_residual
from actspace.lm.models import load_model, residual_blocks
from actspace.lm.tasks import Item
from actspace.methods.scorers import LexiconScorer
from actspace.methods.steering import (
    ContrastPair,
    Perplexity,
    SamplingSettings,
    Steering,
    check_steering_layers,
    contrast_vectors,
    count_forward,
    default_steering_layers,
    generate,
    layer_means,
    load_contrast_pairs,
    prefixed_items,
    prompt_scores,
    steering_vectors,
    task_correct,
    text_nll,
)

#: experiments.behavior_edit and patching_vs_prompting with the schema's defaults.
STUDY = validate_schema({})["experiments"]
EDIT, PROMPTING = STUDY["behavior_edit"], STUDY["patching_vs_prompting"]
SETTINGS = SamplingSettings.from_section(
    {**EDIT, "max_new_tokens": 6, "samples_per_prompt": 2, "batch_size": 8}
)
PROMPTS = ["The cat sat", "A man is", "The quick brown fox", "Question: what is", "The dog"]
TEXTS = [
    "The cat sat on the mat and looked at the bird.",
    "A man is sitting on a roof.",
    "The quick brown fox jumps over the lazy dog.",
    "He starts pulling up roofing on a roof.",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory):
    from helpers.tiny import make_tiny_model

    folder = make_tiny_model("gpt2", tmp_path_factory.mktemp("tiny_gpt2"))
    model, tokenizer = load_model(folder, device="cpu", dtype="float32")
    return model, tokenizer


def random_vector(model, seed: int = 0, scale: float = 5.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(model.config.hidden_size, generator=generator)


def items() -> list[Item]:
    return [
        Item("a", "The cat sat on the", ["mat", "roof", "dog"], 0, {}),
        Item("b", "The capital of France is", ["Paris", "roof"], 0, {}),
        Item("c", "A man is sitting on a", ["roof", "fox", "bird"], 0, {}),
    ]


# ------------------------------------------------------------------------------------ data files
def test_contrast_pairs_join_on_the_pair_key_and_bad_rows_are_named(tmp_path):
    rows = [
        {"id": "t0n", "attribute": "toxicity", "polarity": "negative", "text": "a", "pair": "t0"},
        {"id": "t0p", "attribute": "toxicity", "polarity": "positive", "text": "A", "pair": "t0"},
        {"id": "t1p", "attribute": "toxicity", "polarity": "positive", "text": "B", "pair": "t1"},
        {"id": "t1n", "attribute": "toxicity", "polarity": "negative", "text": "b", "pair": "t1"},
    ]
    write_jsonl(tmp_path / "a.jsonl", rows)
    pairs = load_contrast_pairs(tmp_path / "a.jsonl")
    assert pairs == {
        "toxicity": [
            ContrastPair("t0", "toxicity", "A", "a"),
            ContrastPair("t1", "toxicity", "B", "b"),
        ]
    }
    write_jsonl(tmp_path / "bad.jsonl", [*rows, {**rows[0], "polarity": "neutral"}])
    with pytest.raises(ValueError, match="row 5: polarity 'neutral'"):
        load_contrast_pairs(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="not found"):
        load_contrast_pairs(tmp_path / "missing.jsonl")
    write_jsonl(tmp_path / "p.jsonl", [{"id": "p0", "prompt": "The dog"}, {"id": "p1"}])
    with pytest.raises(ValueError, match="row 2 needs string fields"):
        load_neutral_prompts(tmp_path / "p.jsonl")


def test_splits_are_seeded_disjoint_and_complete():
    selection, report = split_indices(10, 0.5, seed=3)
    assert len(selection) == 5 and sorted(selection + report) == list(range(10))
    assert split_indices(10, 0.5, seed=3) == (selection, report)
    assert split_indices(10, 0.5, seed=4) != (selection, report)
    vec, held = vector_split(20, None, seed=0)
    assert len(vec) == 10 and not set(vec) & set(held) and len(vec) + len(held) == 20
    assert len(vector_split(20, 100, seed=0)[1]) == 2  # at least two pairs stay held out
    with pytest.raises(ValueError, match="at least 2 prompts"):
        split_indices(1, 0.5, seed=0)


def test_default_layers_spread_over_the_blocks_and_layer_zero_cannot_be_steered():
    assert default_steering_layers(4) == [1, 2, 3]
    assert default_steering_layers(12) == [3, 6, 9]
    assert default_steering_layers(2) == [1, 2]
    assert default_steering_layers(1) == [1]
    with pytest.raises(ValueError, match="layer 0, the embeddings, cannot be steered"):
        check_steering_layers([0, 1], 4)
    with pytest.raises(ValueError, match="steering layer 5 is out of range"):
        check_steering_layers([5], 4)


def test_model_source_and_default_prefixes(tmp_path):
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "training.json").write_text("{}")
    assert infer_model_source(tmp_path / "org") == "organism"
    assert infer_model_source(tmp_path) == "local"
    assert infer_model_source("gpt2") == "hub"
    assert infer_model_source("gpt2", "local") == "local"
    assert "idiot" in default_prefix("toxicity", "organism")
    assert default_prefix("formality", "hub").startswith("Write")


# ------------------------------------------------------------------------------ steering vectors
def test_layer_means_pool_over_every_token_but_the_first(gpt2):
    model, tokenizer = gpt2
    texts = ["The cat sat on the mat.", "A man", "The quick brown fox jumps."]
    batched = layer_means(model, tokenizer, texts, [0, 2, 3], batch_size=8)
    blocks = residual_blocks(model)
    expected = torch.zeros_like(batched)
    last = torch.zeros_like(batched)
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        with torch.no_grad(), capture_residual(blocks) as states:
            model(input_ids=ids)
        for slot, layer in enumerate([0, 2, 3]):
            expected[slot] += states[layer][0, 1:].mean(dim=0) / len(texts)  # not the sink
            last[slot] += states[layer][0, -1] / len(texts)
    torch.testing.assert_close(batched, expected, atol=1e-5, rtol=1e-4)
    pooled_last = layer_means(model, tokenizer, texts, [0, 2, 3], pooling="last", batch_size=2)
    torch.testing.assert_close(pooled_last, last, atol=1e-5, rtol=1e-4)


def test_steering_vector_is_the_mean_difference(gpt2):
    model, tokenizer = gpt2
    same = [ContrastPair(str(i), "toxicity", t, t) for i, t in enumerate(TEXTS)]
    zero = steering_vectors(model, tokenizer, same, [1, 3])
    assert set(zero) == {1, 3} and all(float(v.abs().max()) == 0.0 for v in zero.values())
    pairs = [
        ContrastPair("0", "toxicity", TEXTS[0], TEXTS[1]),
        ContrastPair("1", "toxicity", TEXTS[2], TEXTS[3]),
    ]
    vectors = steering_vectors(model, tokenizer, pairs, [2])
    single = [layer_means(model, tokenizer, [t], [2])[0] for t in TEXTS]
    expected = (single[0] + single[2]) / 2 - (single[1] + single[3]) / 2
    assert vectors[2].shape == (model.config.hidden_size,)
    torch.testing.assert_close(vectors[2], expected, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------- generation
def test_a_zero_steering_vector_changes_nothing(gpt2):
    model, tokenizer = gpt2
    zero = Steering(2, torch.zeros(model.config.hidden_size), coefficient=8.0)
    plain = generate(model, tokenizer, PROMPTS, seed=7, settings=SETTINGS)
    steered = generate(model, tokenizer, PROMPTS, seed=7, settings=SETTINGS, steering=zero)
    assert plain.texts == steered.texts
    assert len(plain.texts) == len(PROMPTS) and all(len(t) == 2 for t in plain.texts)
    base, with_zero = (
        text_nll(model, tokenizer, TEXTS),
        text_nll(model, tokenizer, TEXTS, steering=zero),
    )
    np.testing.assert_array_equal(base.nll, with_zero.nll)
    ratio = perplexity_ratio(base, with_zero, n_boot=200, seed=0)
    assert ratio["ratio"] == 1.0 and ratio["ratio_ci"] == [1.0, 1.0]
    np.testing.assert_array_equal(
        task_correct(model, tokenizer, items()),
        task_correct(model, tokenizer, items(), steering=zero),
    )


def test_a_large_vector_changes_generation_and_the_hook_is_removed_after(gpt2):
    model, tokenizer = gpt2
    steer = Steering(1, random_vector(model, scale=50.0))
    plain = generate(model, tokenizer, PROMPTS, seed=7, settings=SETTINGS)
    steered = generate(model, tokenizer, PROMPTS, seed=7, settings=SETTINGS, steering=steer)
    assert plain.texts != steered.texts
    again = generate(model, tokenizer, PROMPTS, seed=7, settings=SETTINGS)
    assert again.texts == plain.texts  # same seed, same texts; no hook left behind
    other_seed = generate(model, tokenizer, PROMPTS, seed=8, settings=SETTINGS)
    assert other_seed.texts != plain.texts
    assert (
        text_nll(model, tokenizer, TEXTS, steering=steer).value
        != text_nll(model, tokenizer, TEXTS).value
    )


def test_generation_leaves_the_callers_random_state_alone(gpt2):
    model, tokenizer = gpt2
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate(model, tokenizer, PROMPTS[:2], seed=0, settings=SETTINGS)
    torch.testing.assert_close(torch.rand(3), expected)


def test_generation_counts_forward_passes_and_tokens(gpt2):
    model, tokenizer = gpt2
    one = generate(model, tokenizer, ["The cat sat"], seed=0, settings=SETTINGS)
    n_prompt = len(tokenizer.encode("The cat sat", add_special_tokens=False))
    cost = one.cost
    # One prefill plus one call per further token; the longest sample sets the number of steps.
    assert 1 <= cost.forward_passes <= SETTINGS.max_new_tokens
    assert cost.processed_tokens == 2 * n_prompt + 2 * (cost.forward_passes - 1)
    assert 2 <= cost.generated_tokens <= 2 * SETTINGS.max_new_tokens
    with count_forward(model) as counted:
        model(input_ids=torch.tensor([[1, 2, 3], [4, 5, 6]]))
        model(input_ids=torch.tensor([[1]]))
    assert counted.forward_passes == 2 and counted.processed_tokens == 7


def test_prompting_prefix_is_not_part_of_the_continuation_and_costs_prompt_tokens(gpt2):
    model, tokenizer = gpt2
    plain = generate(model, tokenizer, PROMPTS[:2], seed=1, settings=SETTINGS)
    prefixed = generate(
        model, tokenizer, PROMPTS[:2], seed=1, settings=SETTINGS, prefix="The cat sat."
    )
    assert prefixed.cost.processed_tokens > plain.cost.processed_tokens
    assert not any(t.startswith("The cat sat.") for ts in prefixed.texts for t in ts)


# ----------------------------------------------------------------------------------- side effects
def test_text_nll_matches_a_hand_computation_and_a_prefix_scores_the_same_tokens(gpt2):
    model, tokenizer = gpt2
    ppl = text_nll(model, tokenizer, TEXTS[:2], batch_size=1)
    batched = text_nll(model, tokenizer, TEXTS[:2], batch_size=2)
    np.testing.assert_allclose(ppl.nll, batched.nll, rtol=1e-5)
    ids = torch.tensor([tokenizer.encode(TEXTS[0], add_special_tokens=False)])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
    expected = -float(logprobs.gather(1, ids[0, 1:, None]).sum())
    assert ppl.nll[0] == pytest.approx(expected, rel=1e-5)
    assert ppl.tokens[0] == ids.shape[1] - 1
    assert ppl.value == pytest.approx(math.exp(ppl.nll.sum() / ppl.tokens.sum()))
    prefixed = text_nll(model, tokenizer, TEXTS[:2], prefix="The dog.")
    assert prefixed.nll[0] != ppl.nll[0]


def test_perplexity_ratio_and_its_interval():
    base = Perplexity(np.array([2.0, 4.0, 6.0]), np.array([2.0, 2.0, 2.0]))
    doubled = Perplexity(base.nll + np.log(2.0) * base.tokens, base.tokens)
    result = perplexity_ratio(base, doubled, n_boot=200, seed=0)
    assert result["ratio"] == pytest.approx(2.0)
    assert result["ratio_ci"] == pytest.approx([2.0, 2.0])


def test_task_accuracy_side_effect_and_prefixed_items(gpt2):
    model, tokenizer = gpt2
    correct = task_correct(model, tokenizer, items(), batch_size=2)
    assert correct.dtype == bool and correct.shape == (3,)
    np.testing.assert_array_equal(correct, task_correct(model, tokenizer, items(), batch_size=3))
    moved = prefixed_items(items(), "Answer this. ")
    assert moved[0].context == "Answer this. The cat sat on the"
    assert moved[0].choices == items()[0].choices
    assert prefixed_items(items(), "") == items()


def _entry(layer, coefficient, shift, budget_high, report_high=1.1, random_gap=0.2):
    """A grid entry: selection shift ``shift``; budget-check and report perplexity intervals
    ending at ``budget_high`` and ``report_high``."""
    return {
        "layer": layer,
        "coefficient": coefficient,
        "selection": {"shift": shift},
        "report": {"shift": shift / 2, "shift_ci": [shift / 4, shift], "n": 5},
        "budget_perplexity": {"ratio": budget_high - 0.05, "ratio_ci": [1.0, budget_high]},
        "perplexity": {"ratio": report_high - 0.05, "ratio_ci": [1.0, report_high]},
        "random_direction": {
            "steered_minus_random": random_gap,
            "steered_minus_random_ci": [random_gap - 0.1, random_gap + 0.1],
        },
    }


def test_a_setting_over_budget_is_never_chosen_even_with_the_largest_shift():
    # The largest selection shift (0.5) is over budget: its interval ends at 3 > 2.
    grid = [_entry(1, 2.0, 0.1, 1.1), _entry(1, 8.0, 0.5, 3.0), _entry(2, 4.0, 0.3, 1.5)]
    best = choose_best(grid, 2.0)
    assert (best["layer"], best["coefficient"], best["within_perplexity_budget"]) == (2, 4.0, True)
    assert choose_best(grid, None)["coefficient"] == 8.0
    # The interval, not the point, must be within: a point of 1.95 whose interval ends at 2.05
    # is over a budget of 2.
    edge = [_entry(1, 1.0, 0.1, 1.2), _entry(1, 2.0, 0.9, 2.05)]
    assert choose_best(edge, 2.0)["coefficient"] == 1.0
    # However large its shift, an over-budget setting loses to any within-budget one.
    for shift in (0.6, 5.0, 1e6):
        grid = [_entry(1, 1.0, 0.01, 1.1), _entry(3, 9.0, shift, 2.5)]
        assert choose_best(grid, 2.0)["coefficient"] == 1.0
    # The report texts' perplexity plays no part in the choice, however large or small.
    grid = [_entry(1, 2.0, 0.1, 1.1, report_high=50.0), _entry(1, 8.0, 0.5, 3.0, report_high=1.0)]
    assert choose_best(grid, 2.0)["coefficient"] == 2.0


def test_no_setting_within_budget_chooses_nothing_and_fails_naming_the_budget():
    grid = [_entry(1, 2.0, 0.4, 2.6), _entry(1, 8.0, 0.9, 9.0), _entry(2, 4.0, 0.3, 2.2)]
    assert choose_best(grid, 2.0) is None
    least = least_damaging(grid)
    assert (least["layer"], least["coefficient"], least["chosen"]) == (2, 4.0, False)
    result = {"grid": grid, "best": None, "least_damaging": least}
    head = headline("toxicity", result, 2.0)
    assert head["success"] is False and head["value"] is None and head["ci"] == [None, None]
    assert head["comparison"] is None and head["setting"] is None
    assert [c["name"] for c in failed(head["criteria"])] == ["perplexity_within_budget"]
    assert "no setting kept perplexity within the budget" in head["note"]
    assert "no setting kept perplexity within the budget" in head["criteria"][1]["rule"]
    assert head["held_out"] is True


def test_the_criteria_are_the_plan_then_the_report_budget_then_the_random_direction():
    grid = [_entry(1, 2.0, 0.4, 1.5, report_high=1.8)]
    best = choose_best(grid, 2.0)
    best["random_direction"] = grid[0]["random_direction"]
    best["comparison"] = {"kind": "paired"}
    head = headline("formality", {"grid": grid, "best": best}, 2.0)
    names = [(c["name"], c["kind"]) for c in head["criteria"]]
    assert names == [
        ("shift_above_zero", "plan"),
        ("perplexity_within_budget", "control"),
        ("beats_random_direction", "control"),
    ]
    assert head["success"] is True and head["value"] == 0.2
    # The report texts' interval over budget fails the control, whatever the budget half said.
    grid = [_entry(1, 2.0, 0.4, 1.5, report_high=2.3)]
    best = choose_best(grid, 2.0)
    best["random_direction"] = grid[0]["random_direction"]
    head = headline("formality", {"grid": grid, "best": best}, 2.0)
    assert [c["name"] for c in failed(head["criteria"])] == ["perplexity_within_budget"]
    assert head["success"] is False
    # A shift no larger than a random direction's fails the random-direction control.
    grid = [_entry(1, 2.0, 0.4, 1.5, random_gap=0.0)]
    best = choose_best(grid, 2.0)
    best["random_direction"] = grid[0]["random_direction"]
    head = headline("formality", {"grid": grid, "best": best}, 2.0)
    assert [c["name"] for c in failed(head["criteria"])] == ["beats_random_direction"]
    # Without a budget there is no budget control; the choice is over every setting.
    head = headline("formality", {"grid": grid, "best": best}, None)
    assert [c["name"] for c in head["criteria"]] == ["shift_above_zero", "beats_random_direction"]


def test_the_neutral_texts_split_in_seeded_disjoint_halves():
    split = neutral_text_split(10, seed=3)
    assert sorted(split.budget + split.report) == list(range(10))
    assert len(split.budget) == len(split.report) == 5
    assert neutral_text_split(10, seed=3) == split and neutral_text_split(10, seed=4) != split
    with pytest.raises(ValueError, match="need at least 4 neutral texts"):
        neutral_text_split(3, seed=0)


# ------------------------------------------------------------------------------ experiment level
def synthetic_world(tmp_path: Path) -> tuple[Path, Path, Path]:
    from actspace.world.synthetic import World

    world = World.generate(seed=3)
    write_jsonl(tmp_path / "attributes.jsonl", world.attribute_sets(12))
    write_jsonl(tmp_path / "prompts.jsonl", world.neutral_prompts(8))
    task_rows = world.task_items("arithmetic")[:6]
    write_jsonl(tmp_path / "task.jsonl", task_rows)
    return tmp_path / "attributes.jsonl", tmp_path / "prompts.jsonl", tmp_path / "task.jsonl"


def _edit(model, tokenizer, tmp_path, *, texts=None, coefficients=(0.0, 4.0), budget=None):
    """run_behavior_edit on the synthetic world with a lexicon scorer, layers 1 and 3."""
    attributes, prompts_file, _ = synthetic_world(tmp_path)
    pairs = load_contrast_pairs(attributes)
    prompts = load_neutral_prompts(prompts_file)
    split = {a: vector_split(len(p), None, 0) for a, p in pairs.items()}
    held_out = [pairs["toxicity"][i].negative for i in split["toxicity"][1]]
    results, rows, vectors = run_behavior_edit(
        model,
        tokenizer,
        pairs=pairs,
        prompts=prompts,
        scorers={"toxicity": LexiconScorer("toxicity")},
        side=SideEffectData(texts=held_out if texts is None else texts(held_out)),
        vector_pairs={"toxicity": split["toxicity"][0]},
        settings=SETTINGS,
        layers=[1, 3],
        coefficients=list(coefficients),
        pooling=EDIT["pooling"],
        selection_fraction=EDIT["selection_fraction"],
        max_perplexity_ratio=EDIT["max_perplexity_ratio"] if budget is None else budget,
        n_bootstrap=200,
        seed=0,
    )
    return results, rows, vectors, prompts


def test_run_behavior_edit_with_a_zero_coefficient_reports_no_shift(gpt2, tmp_path):
    model, tokenizer = gpt2
    results, rows, vectors, prompts = _edit(model, tokenizer, tmp_path)
    info = results["attributes"]["toxicity"]
    assert [(g["layer"], g["coefficient"]) for g in info["grid"]] == [
        (1, 0.0),
        (1, 4.0),
        (3, 0.0),
        (3, 4.0),
    ]
    for g in info["grid"]:
        if g["coefficient"] == 0.0:
            assert g["report"]["shift"] == 0.0 and g["perplexity"]["ratio"] == 1.0
            assert g["budget_perplexity"]["ratio"] == 1.0
    assert results["n_selection"] + results["n_report"] == len(prompts)
    side = results["side_effect"]
    assert sorted(side["budget_text_indices"] + side["report_text_indices"]) == list(
        range(side["n_neutral_texts"])
    )
    assert set(vectors["toxicity"]) == {1, 3}
    # The unsteered baseline, the 4 settings and the random direction at the chosen setting.
    assert len(rows) == len(prompts) * (1 + 4 + 1)
    assert [r["vector"] for r in rows[:: len(prompts)]] == ["none", *["contrast"] * 4, "random"]
    best = info["best"]
    # Coefficient 4 on a tiny random model ruins perplexity; only coefficient 0 is within budget,
    # and its random direction (times 0) changes nothing.
    assert best["coefficient"] == 0.0 and best["within_perplexity_budget"]
    assert best["random_direction"]["steered_minus_random"] == 0.0


def test_the_budget_reads_only_the_budget_check_texts(gpt2, tmp_path):
    """Replacing a report-half neutral text changes the reported perplexity, never the choice."""
    model, tokenizer = gpt2
    base, _, _, _ = _edit(model, tokenizer, tmp_path, coefficients=(0.0, 0.5, 4.0), budget=1.5)
    report = base["side_effect"]["report_text_indices"]

    def swapped(texts):
        texts = list(texts)
        texts[report[0]] = "Zebra quantum marmalade eleven purple yesterday sings loudly."
        return texts

    other, _, _, _ = _edit(
        model, tokenizer, tmp_path, texts=swapped, coefficients=(0.0, 0.5, 4.0), budget=1.5
    )
    a, b = base["attributes"]["toxicity"], other["attributes"]["toxicity"]
    # The budget-check ratios agree up to the padding of a batch that holds the swapped text.
    for ga, gb in zip(a["grid"], b["grid"], strict=True):
        assert gb["budget_perplexity"]["ratio"] == pytest.approx(ga["budget_perplexity"]["ratio"])
        assert gb["budget_perplexity"]["ratio_ci"] == pytest.approx(
            ga["budget_perplexity"]["ratio_ci"]
        )
    changed = [
        abs(ga["perplexity"]["ratio"] - gb["perplexity"]["ratio"])
        for ga, gb in zip(a["grid"], b["grid"], strict=True)
    ]
    assert max(changed) > 1e-3
    assert (a["best"]["layer"], a["best"]["coefficient"]) == (
        b["best"]["layer"],
        b["best"]["coefficient"],
    )


def test_compare_methods_with_a_zero_vector_matches_unsteered(gpt2):
    model, tokenizer = gpt2
    prompts = [{"id": f"p{i}", "prompt": p} for i, p in enumerate(PROMPTS)]
    result, rows = compare_methods(
        model,
        tokenizer,
        attribute="toxicity",
        scorer=LexiconScorer("toxicity"),
        prompts=prompts,
        steering=Steering(1, torch.zeros(model.config.hidden_size), 4.0),
        prefix="The stupid dog, you idiot.",
        side=SideEffectData(texts=TEXTS, items=items()),
        settings=SETTINGS,
        timing_repeats=2,
        n_bootstrap=200,
        seed=0,
    )
    assert result["timing_repeats"] == 2
    methods = result["methods"]
    assert methods["steering"]["shift"] == 0.0 and methods["steering"]["perplexity"]["ratio"] == 1
    assert methods["steering"]["accuracy"]["delta"] == 0.0
    assert methods["prompting"]["extra_prompt_tokens"] > 0
    assert (
        methods["prompting"]["cost"]["processed_tokens"]
        > methods["steering"]["cost"]["processed_tokens"]
    )
    assert len(rows) == 3 * len(PROMPTS)
    with pytest.raises(ValueError, match="no prompting prefix"):
        compare_methods(
            model,
            tokenizer,
            attribute="toxicity",
            scorer=LexiconScorer("toxicity"),
            prompts=prompts,
            steering=Steering(1, torch.zeros(model.config.hidden_size)),
            prefix=" ",
            side=SideEffectData(texts=TEXTS),
            settings=SETTINGS,
            timing_repeats=PROMPTING["timing_repeats"],
            n_bootstrap=EDIT["n_bootstrap"],
            seed=0,
        )


def test_prompting_has_nothing_to_compare_where_no_setting_was_chosen():
    data = PromptingData(
        edit={"attributes": {"toxicity": {"best": None}}},
        vectors={},
        edit_folder="edit",
        prompts=[{"id": "a", "prompt": "The cat"}, {"id": "b", "prompt": "A dog"}],
        side=SideEffectData(texts=TEXTS),
        model_source="organism",
    )
    kwargs = {"prefixes": {}, "timing_repeats": 1, "scorers": {}, "settings": SETTINGS}
    attributes, rows = run_patching_vs_prompting(
        None, None, data, **kwargs, n_bootstrap=100, seed=0, device="cpu"
    )
    assert (
        rows == []
        and "no setting kept perplexity within the budget" in (attributes["toxicity"]["note"])
    )
    results = prompting_results(
        attributes, data, model="m", seed=0, samples_per_prompt=1, duration_s=0.0
    )
    (head,) = results["headlines"]
    assert head["value"] is None and head["comparison"] is None and head["success"] is None
    assert "no steering setting to compare" in summary_markdown(results)


def test_the_scripts_write_their_folders_and_refuse_bad_input(gpt2, tmp_path, tiny_model_dir):
    behavior_edit = load_script("behavior_edit")
    patching_vs_prompting = load_script("patching_vs_prompting")
    model_dir = tiny_model_dir("gpt2")
    attributes, prompts, task = synthetic_world(tmp_path)
    edit_dir, pvp_dir = tmp_path / "edit", tmp_path / "pvp"
    # The sections as the workflow passes them: schema defaults, resolved files, the extras.
    edit = {
        **EDIT,
        "attribute_sets": str(attributes),
        "prompts": str(prompts),
        "max_new_tokens": 4,
        "samples_per_prompt": 2,
        "n_bootstrap": 100,
        "scorers": {a: {"kind": "lexicon"} for a in ("toxicity", "formality")},
    }
    extras = {
        "model_ref": {"name": "tiny", "path": str(model_dir), "revision": None},
        "model_source": "local",
        "dtype": "auto",
        "device": "cpu",
    }
    edit_params = {**edit, **extras, "layers": [1, 2], "coefficients": [-2, 2]}
    common = ["--task-file", str(task), "--seed", "5"]
    behavior_edit.main(
        ["--params", json.dumps(edit_params), *common, "--output-dir", str(edit_dir)]
    )
    for name in ("results.json", "config.json", "summary.md", "vectors.safetensors"):
        assert (edit_dir / name).is_file()
    results = read_json(edit_dir / "results.json")
    assert results["experiment"] == "behavior_edit" and results["model_source"] == "local"
    for head in results["headlines"]:
        best = results["attributes"][head["label"]]["best"]
        comparison = head["comparison"]
        assert head["value"] == best["report"]["shift"]
        assert len(comparison["a"]) == len(comparison["b"]) == head["n"] == results["n_report"]
        gain = np.mean(comparison["a"]) - np.mean(comparison["b"])
        assert gain == pytest.approx(head["value"], abs=1e-9)
    assert results["coefficients"] == [-2.0, 2.0] and results["n_task_items"] == 6
    assert results["layers"] == [1, 2] and results["seed"] == 5
    assert results["attributes"]["toxicity"]["scorer"]["kind"] == "lexicon"
    assert read_json(edit_dir / "config.json")["max_perplexity_ratio"] == 2.0
    # vectors.safetensors holds what coefficient 1 adds: as long as the layer's reference norm.
    saved = load_file(str(edit_dir / "vectors.safetensors"))
    for attribute, info in results["attributes"].items():
        for layer, norm in info["reference_norms"].items():
            assert float(saved[f"{attribute}.layer{layer}"].norm()) == pytest.approx(norm, 1e-5)
    assert "reference norm" in results["steering_convention"]
    pvp_params = {
        **PROMPTING,
        **extras,
        "behavior_edit": edit,
        "prefixes": {"toxicity": "You idiot.", "formality": None},
    }
    patching_vs_prompting.main(
        ["--params", json.dumps(pvp_params), *common, "--behavior-edit", str(edit_dir),
         "--output-dir", str(pvp_dir)]
    )  # fmt: skip
    pvp = read_json(pvp_dir / "results.json")
    for head in pvp["headlines"]:
        comparison = head["comparison"]
        gain = np.mean(comparison["a"]) - np.mean(comparison["b"])
        assert gain == pytest.approx(head["value"], abs=1e-9)
        assert len(comparison["a"]) == head["n"] == len(pvp["prompt_ids"])
    assert pvp["prompt_ids"] == results["report_ids"]
    # patching_vs_prompting reports perplexity on behavior_edit's report texts only.
    budget, report = results["budget_text_pair_ids"], results["report_text_pair_ids"]
    assert not set(budget) & set(report) and sorted(budget + report) == sorted(
        results["neutral_text_pair_ids"]
    )
    assert pvp["n_neutral_texts"] == len(report)
    assert all(h["held_out"] is True for h in results["headlines"] + pvp["headlines"])
    assert all(h["criteria"][0]["kind"] == "plan" for h in results["headlines"])
    assert pvp["attributes"]["toxicity"]["methods"]["prompting"]["prefix"] == "You idiot."
    assert pvp["attributes"]["formality"]["methods"]["prompting"]["prefix"].startswith("Write")
    assert len(read_jsonl(pvp_dir / "generations.jsonl")) == 2 * 3 * len(pvp["prompt_ids"])
    # The common flags override --params: --layers, --n-samples (this step's n_prompts).
    with pytest.raises(SystemExit, match="^error: steering layer 9 is out of range"):
        behavior_edit.main(
            ["--params", json.dumps(edit_params), *common, "--layers", "9", "--output-dir",
             str(tmp_path / "x")]
        )  # fmt: skip
    with pytest.raises(SystemExit, match="^error: n_prompts must be at least 2, got 1"):
        behavior_edit.main(
            ["--params", json.dumps(edit_params), *common, "--n-samples", "1", "--output-dir",
             str(tmp_path / "x")]
        )  # fmt: skip
    with pytest.raises(SystemExit, match="^error: behavior_edit output not found"):
        patching_vs_prompting.main(
            ["--params", json.dumps(pvp_params), *common, "--behavior-edit",
             str(tmp_path / "none"), "--output-dir", str(tmp_path / "y")]
        )  # fmt: skip
    # Without --params a step takes the schema's defaults, and names the input it lacks: the
    # world's files, which only the workflow has (the English sets need no file: see
    # test_a_real_model_run_by_hand_gets_the_english_sets).
    assert_clean_exit(
        behavior_edit.main,
        ["--params", json.dumps({"builtin_sets": "world"}), "--model", str(model_dir),
         "--output-dir", str(tmp_path / "z")],
        "no attribute_sets: pass --attribute-sets",
    )  # fmt: skip


def test_a_model_given_by_hand_has_its_source_inferred(tmp_path, tiny_model_dir):
    """--model overrides the workflow's model reference, and with it the configured source."""
    behavior_edit = load_script("behavior_edit")
    attributes, prompts, _ = synthetic_world(tmp_path)
    params = {
        **EDIT,
        "attribute_sets": str(attributes),
        "prompts": str(prompts),
        "attributes": ["toxicity"],
        "layers": [1],
        "coefficients": [2],
        "max_new_tokens": 2,
        "samples_per_prompt": 1,
        "n_bootstrap": 100,
        "scorers": {"toxicity": {"kind": "lexicon"}},
        "model_ref": {"name": "org", "path": "results/models/none", "revision": None},
        "model_source": "organism",
        "dtype": "auto",
        "device": "cpu",
        "seed": 1,
    }
    out = tmp_path / "out"
    behavior_edit.main(
        ["--params", json.dumps(params), "--model", str(tiny_model_dir("gpt2")),
         "--output-dir", str(out)]
    )  # fmt: skip
    results = read_json(out / "results.json")
    assert results["model"] == str(tiny_model_dir("gpt2")) and results["model_source"] == "local"


# ------------------------------------------------------------------------------- organisms (slow)
@pytest.mark.slow
def test_steering_toward_an_attribute_raises_its_score_on_an_organism(tmp_path, default_study):
    """On the default study's GPT-2 organism, the toxicity and formality vectors raise their
    lexicon scores at coefficient 1 (a vector as long as a typical token's residual stream)."""
    from actspace.world.synthetic import World

    world = World.generate(seed=42)
    folder = default_study / "results" / "models" / "tiny_gpt2"
    model, tokenizer = load_model(folder, device="cpu", dtype="float32")
    write_jsonl(tmp_path / "attributes.jsonl", world.attribute_sets(100))
    pairs = load_contrast_pairs(tmp_path / "attributes.jsonl")
    prompts = [p["prompt"] for p in world.neutral_prompts(40)]
    settings = SamplingSettings.from_section(EDIT)
    base = generate(model, tokenizer, prompts, seed=0, settings=settings)
    everyone = list(range(len(prompts)))
    for attribute in ("toxicity", "formality"):
        vector = contrast_vectors(model, tokenizer, pairs[attribute], [3]).scaled()[3]
        scorer = LexiconScorer(attribute)
        steer = Steering(3, vector, 1.0)
        steered = generate(model, tokenizer, prompts, seed=0, settings=settings, steering=steer)
        shift = shift_summary(
            prompt_scores(scorer, base),
            prompt_scores(scorer, steered),
            everyone,
            n_boot=500,
            seed=0,
        )
        assert shift["shift_ci"][0] > 0, f"{attribute}: steering did not raise the score: {shift}"
