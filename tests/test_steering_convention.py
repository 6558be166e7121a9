"""Steering that means the same on any model: relative coefficients, the first position (the
attention sink) left out of pooling, reference norm and intervention, and the English sets that
real models get. Known answers on tiny random models (GPT-2 and Llama families)."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.scripts import load_script

from actspace.config import resolve_config
from actspace.core.checks import WORLD_FILES
from actspace.core.io import read_json
from actspace.core.schema import validate_schema
from actspace.lm.forward import cache_argument, encode_items, returned_cache, score_batch
from actspace.lm.hooks import capture_residual
from actspace.lm.models import load_model, residual_blocks
from actspace.lm.tasks import Item
from actspace.methods.steering import (
    ContrastPair,
    Steering,
    contrast_vectors,
    layer_stats,
    relative_vector,
    text_nll,
)
from actspace.methods.steering_hook import token_positions
from actspace.methods.steering_sets import (
    english_sets,
    load_contrast_pairs,
    resolve_builtin_sets,
)

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "The cat sat on the mat and looked at the bird.",
    "A man is sitting on a roof.",
    "The quick brown fox jumps over the lazy dog.",
    "He starts pulling up roofing on a roof.",
]
PAIRS = [
    ContrastPair("0", "toxicity", TEXTS[0], TEXTS[1]),
    ContrastPair("1", "toxicity", TEXTS[2], TEXTS[3]),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny(request, tiny_model_dir):
    return load_model(tiny_model_dir(request.param), device="cpu", dtype="float32")


def encode(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor([tokenizer.encode(text, add_special_tokens=False)])


# ------------------------------------------------------------------------ the relative convention
def test_the_reference_norm_is_the_median_token_norm_without_the_first_position(tiny):
    model, tokenizer = tiny
    found = contrast_vectors(model, tokenizer, PAIRS, [1, 2])
    blocks = residual_blocks(model)
    norms: dict[int, list[torch.Tensor]] = {1: [], 2: []}
    for text in TEXTS:
        with torch.no_grad(), capture_residual(blocks) as states:
            model(input_ids=encode(tokenizer, text))
        for layer in (1, 2):
            norms[layer].append(states[layer][0, 1:].norm(dim=-1))
    for layer in (1, 2):
        expected = float(torch.cat(norms[layer]).median())
        assert found.reference_norms[layer] == pytest.approx(expected, rel=1e-5)
        scaled = found.scaled()[layer]
        assert float(scaled.norm()) == pytest.approx(expected, rel=1e-5)
        cosine = torch.nn.functional.cosine_similarity(scaled, found.directions[layer], dim=0)
        assert float(cosine) == pytest.approx(1.0, abs=1e-5)
    zero = relative_vector(torch.zeros(4), 10.0)
    assert float(zero.abs().max()) == 0.0  # no direction: nothing to scale


def test_the_steered_residual_moves_by_coefficient_times_reference_norm_except_at_position_0(
    tiny,
):
    model, tokenizer = tiny
    found = contrast_vectors(model, tokenizer, PAIRS, [2])
    ids = encode(tokenizer, TEXTS[0])
    blocks = residual_blocks(model)
    with torch.no_grad(), capture_residual(blocks) as plain:
        plain_logits = model(input_ids=ids).logits
    for coefficient in (0.5, 2.0, -1.0):
        steer = Steering(2, found.scaled()[2], coefficient)
        with torch.no_grad(), steer.apply(model), capture_residual(blocks) as steered:
            logits = model(input_ids=ids).logits
        moved = steered[2][0] - plain[2][0]
        assert float(moved[0].abs().max()) == 0.0  # the attention sink is not steered
        expected = abs(coefficient) * found.reference_norms[2]
        torch.testing.assert_close(
            moved[1:].norm(dim=-1), torch.full((ids.shape[1] - 1,), expected), rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(steered[1][0], plain[1][0])  # earlier layers untouched
        torch.testing.assert_close(logits[0, 0], plain_logits[0, 0])  # position 0 sees only itself
        assert not torch.allclose(logits[0, 1:], plain_logits[0, 1:])


def test_pooling_leaves_out_the_first_position_and_needs_a_second(tiny):
    model, tokenizer = tiny
    one_token = tokenizer.decode(encode(tokenizer, "The")[0, :1])
    with pytest.raises(ValueError, match="fewer than 2 token positions"):
        layer_stats(model, tokenizer, [TEXTS[0], one_token], [1])
    stats = layer_stats(model, tokenizer, TEXTS[:2], [1])
    lengths = [encode(tokenizer, t).shape[1] for t in TEXTS[:2]]
    assert stats.token_norms[0].numel() == sum(n - 1 for n in lengths)


# ------------------------------------------------------------------- positions, padding, the cache
def test_a_cached_step_is_steered_like_the_same_position_in_a_full_pass(tiny):
    model, tokenizer = tiny
    steer = Steering(1, contrast_vectors(model, tokenizer, PAIRS, [1]).scaled()[1], 1.0)
    ids = encode(tokenizer, TEXTS[2])
    with torch.no_grad(), steer.apply(model):
        full = model(input_ids=ids).logits[0, -1]
        head = model(input_ids=ids[:, :-1], use_cache=True)
        step = model(
            input_ids=ids[:, -1:],
            attention_mask=torch.ones_like(ids),
            use_cache=True,
            **{cache_argument(model): returned_cache(head)},
        ).logits[0, -1]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


def test_generation_steers_the_prompt_after_its_first_token_and_every_new_token(tiny):
    model, tokenizer = tiny
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(token_positions(args, kwargs)), with_kwargs=True
    )
    ids = encode(tokenizer, TEXTS[1])
    try:
        with torch.no_grad():
            model.generate(
                input_ids=ids.repeat(2, 1),
                attention_mask=torch.ones_like(ids.repeat(2, 1)),
                do_sample=False,
                max_new_tokens=3,
                min_new_tokens=3,
                pad_token_id=tokenizer.eos_token_id,
            )
    finally:
        handle.remove()
    n = ids.shape[1]
    assert seen[0].tolist()[-1] == list(range(n))  # the prefill: position 0 is the first token
    assert [p.flatten().unique().tolist() for p in seen[1:]] == [[n], [n + 1]]


def test_left_and_right_padded_batches_are_steered_like_single_texts(tiny):
    model, tokenizer = tiny
    steer = Steering(2, contrast_vectors(model, tokenizer, PAIRS, [2]).scaled()[2], 1.0)
    alone = text_nll(model, tokenizer, TEXTS, steering=steer, batch_size=1)
    padded = text_nll(model, tokenizer, TEXTS, steering=steer, batch_size=4)  # right padding
    np.testing.assert_allclose(padded.nll, alone.nll, rtol=1e-4)
    items = [
        Item("a", "The cat sat on the", [" mat", " roof of the house"], 0, {}),
        Item("b", "A man is sitting on a roof and", [" fox", " bird"], 0, {}),
    ]
    encoded, _ = encode_items(tokenizer, items, add_bos=False)
    pad = tokenizer.pad_token_id or 0
    with torch.no_grad(), steer.apply(model):
        together = score_batch(model, encoded, capture=False, pad_token_id=pad)  # left-padded
        single = [score_batch(model, [e], capture=False, pad_token_id=pad) for e in encoded]
    for row, result in enumerate(single):
        np.testing.assert_allclose(together.logliks[row], result.logliks[0], rtol=1e-4)


# ------------------------------------------------------------------------------- the English sets
def test_the_english_sets_load_with_their_source_and_licence():
    sets = english_sets()
    for path in (sets.attribute_sets, sets.prompts):
        assert sets.licence(path).startswith("MIT")
        assert sets.about[path.name]["source"].startswith("written for actspace")
    readme = (sets.attribute_sets.parent / "README.md").read_text()
    assert "written for actspace" in readme and "MIT" in readme
    pairs = load_contrast_pairs(sets.attribute_sets)
    assert {a: len(p) for a, p in pairs.items()} == {"toxicity": 80, "formality": 60}
    for attribute_pairs in pairs.values():
        assert len({p.id for p in attribute_pairs}) == len(attribute_pairs)
        assert all(p.positive != p.negative and " " in p.negative for p in attribute_pairs)
    prompts = [json.loads(line) for line in sets.prompts.read_text().splitlines()]
    assert len(prompts) == 50 and len({p["id"] for p in prompts}) == 50
    # Enough for the default study's splits: half the pairs make the vector, the held-out
    # toxicity negatives are the neutral texts.
    defaults = validate_schema({})["experiments"]["behavior_edit"]
    assert len(pairs["toxicity"]) // 2 >= 40 and len(prompts) >= defaults["n_neutral_texts"]
    # ... and they travel with the package.
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["actspace"]
    package = ROOT / "src" / "actspace"
    for path in sets.attribute_sets.parent.iterdir():
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), f"{relative} is not shipped"


def test_organisms_get_the_world_and_other_models_the_english_sets():
    assert resolve_builtin_sets("auto", "organism") == "world"
    assert resolve_builtin_sets("auto", "hub") == resolve_builtin_sets("auto", "local") == "english"
    assert resolve_builtin_sets("world", "hub") == "world"
    with pytest.raises(ValueError, match="unknown builtin_sets 'french'"):
        resolve_builtin_sets("french", "hub")
    organisms = resolve_config({})["experiments"]["behavior_edit"]
    assert organisms["attribute_sets"] == WORLD_FILES["attribute_sets"]
    assert organisms["prompts"] == WORLD_FILES["prompts"]
    models = {
        "tiny_gpt2": {"source": "organism", "family": "gpt2"},
        "tiny_neox": {"source": "organism", "family": "gpt_neox"},
        "real": {"source": "hub", "id": "gpt2"},
    }
    real = resolve_config({"models": models, "experiments": {"behavior_edit": {"model": "real"}}})[
        "experiments"
    ]["behavior_edit"]
    assert real["attribute_sets"] == str(english_sets().attribute_sets)
    assert real["prompts"] == str(english_sets().prompts)
    forced = resolve_config(
        {
            "models": models,
            "experiments": {"behavior_edit": {"model": "real", "builtin_sets": "world"}},
        }
    )["experiments"]["behavior_edit"]
    assert forced["attribute_sets"] == WORLD_FILES["attribute_sets"]


def test_a_real_model_run_by_hand_gets_the_english_sets(tmp_path, tiny_model_dir):
    behavior_edit = load_script("behavior_edit")
    params = {
        "attributes": ["toxicity"],
        "layers": [1],
        "coefficients": [1.0],
        "n_prompts": 4,
        "n_neutral_texts": 5,
        "side_task_items": 0,
        "max_new_tokens": 2,
        "samples_per_prompt": 1,
        "n_bootstrap": 100,
        "scorers": {"toxicity": {"kind": "lexicon"}},
        "seed": 0,
        "dtype": "float32",
        "device": "cpu",
    }
    out = tmp_path / "edit"
    behavior_edit.main(
        ["--params", json.dumps(params), "--model", str(tiny_model_dir("gpt2")),
         "--output-dir", str(out)]
    )  # fmt: skip
    results, config = read_json(out / "results.json"), read_json(out / "config.json")
    assert config["attribute_sets"] == str(english_sets().attribute_sets)
    assert all(i.startswith("toxicity-en-") for i in results["neutral_text_pair_ids"])
    assert len(results["neutral_text_pair_ids"]) == 5
    assert all(i.startswith("prompt-en-") for i in results["report_ids"])
    assert (
        results["coefficients"] == [1.0] and "reference_norms" in results["attributes"]["toxicity"]
    )
