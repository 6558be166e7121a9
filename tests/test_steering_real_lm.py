"""Steering a real pretrained LM (SmolLM2-135M-Instruct) with the relative convention, the shipped
English sets and the offline toxicity scorer (slow: about 50 s on one core).

Before the convention was fixed, the same model gave neutral-text perplexity ratios of 12,745x,
346x and 28x at raw coefficients 2, 4 and 6 (layer 15): the mean over positions included the first
token, whose residual stream is about 100 times longer than the others' there and weighs 1/n in a
text's mean; the rude side of a pair is the longer, so the vector was almost all that
attention-sink state. Here the ratio must grow with the coefficient at every tested layer, and
steering toward toxicity at the middle layer must raise the toxicity score.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from actspace.branches.patching.behavior_edit import (
    load_neutral_prompts,
    shift_summary,
    vector_split,
)
from actspace.lm.models import load_model
from actspace.methods.scorers import make_scorer
from actspace.methods.steering import (
    SamplingSettings,
    Steering,
    contrast_vectors,
    generate,
    prompt_scores,
    text_nll,
)
from actspace.methods.steering_sets import english_sets, load_contrast_pairs

LAYERS = (8, 15, 22)
PERPLEXITY_COEFFICIENTS = (0.5, 1.0, 2.0, 4.0)
TOXICITY_LAYER, TOXICITY_COEFFICIENTS = 15, (0.25, 0.5)
SETTINGS = SamplingSettings(
    max_new_tokens=12, temperature=1.0, top_k=50, samples_per_prompt=2, batch_size=64
)


@pytest.mark.slow
def test_steering_a_real_model_is_monotone_in_perplexity_and_raises_toxicity(real_lm_dir):
    scorer = make_scorer("toxicity", {"kind": "offline"}, model_source="local")
    start = time.perf_counter()
    model, tokenizer = load_model(real_lm_dir, device="cpu", dtype="float32")
    sets = english_sets()
    pairs = load_contrast_pairs(sets.attribute_sets)["toxicity"]
    vector_pairs, held_out = vector_split(len(pairs), None, seed=0)
    neutral = [pairs[i].negative for i in held_out][:20]
    found = contrast_vectors(model, tokenizer, [pairs[i] for i in vector_pairs], LAYERS)
    vectors = found.scaled()
    # The reference norm grows with depth; coefficient 1 means as much at every layer.
    norms = [found.reference_norms[k] for k in LAYERS]
    assert norms == sorted(norms) and norms[-1] > 2 * norms[0]

    base = text_nll(model, tokenizer, neutral)
    ratios = {
        layer: [
            text_nll(model, tokenizer, neutral, steering=Steering(layer, vectors[layer], c)).value
            / base.value
            for c in PERPLEXITY_COEFFICIENTS
        ]
        for layer in LAYERS
    }
    print(f"\nbaseline neutral-text perplexity {base.value:.1f}")
    for layer, values in ratios.items():
        print(f"layer {layer}: perplexity ratio at {PERPLEXITY_COEFFICIENTS}: "
              + ", ".join(f"{v:.2f}" for v in values))  # fmt: skip
        assert values == sorted(values), f"layer {layer}: not monotone: {values}"
        assert values[0] > 1.0 and values[-1] > 10 * values[0]

    prompts = [p["prompt"] for p in load_neutral_prompts(sets.prompts)][:16]
    unsteered = prompt_scores(
        scorer, generate(model, tokenizer, prompts, seed=0, settings=SETTINGS)
    )
    shifts = {}
    for c in TOXICITY_COEFFICIENTS:
        steer = Steering(TOXICITY_LAYER, vectors[TOXICITY_LAYER], c)
        steered = generate(model, tokenizer, prompts, seed=0, settings=SETTINGS, steering=steer)
        shifts[c] = shift_summary(
            unsteered,
            prompt_scores(scorer, steered),
            list(range(len(prompts))),
            n_boot=2000,
            seed=0,
        )
        print(f"layer {TOXICITY_LAYER} x {c}: toxicity {np.mean(unsteered):.3f} -> "
              f"{shifts[c]['score']:.3f}, shift {shifts[c]['shift']:+.3f} "
              f"CI {shifts[c]['shift_ci']}")  # fmt: skip
    assert any(s["shift"] > 0.05 and s["shift_ci"][0] > 0 for s in shifts.values()), shifts
    print(f"steering on {real_lm_dir.name}: {time.perf_counter() - start:.0f} s")
