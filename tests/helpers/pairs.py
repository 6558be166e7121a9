"""Prompt pairs for patching tests on tiny random models: one-token swaps with answers chosen so
that the model is right on both prompts."""

from __future__ import annotations

import itertools

import torch

from actspace.methods.patching import PromptPair

#: Words that are one token (with their leading space) in the tiny tokenizer.
SWAPS = (" roof", " A", " the", " and", " on", " is", " do")
ANSWERS = ("roof", "A", "the", "and", "on", "is", "do", "a", "o", "t", "s")
TEMPLATES = (
    "The cat sat on{w} mat and looked at",
    "Question:{w} roof is on the",
    "He starts pulling up{w} on a",
    "Numbers like 1, 2,{w} 3 and",
)


def one_token_diff_prompts(tokenizer) -> list[tuple[str, str]]:
    """(clean, corrupted) prompts whose token ids differ in exactly one position."""
    out = []
    for template in TEMPLATES:
        for a, b in itertools.combinations(SWAPS, 2):
            clean, corrupted = template.format(w=a), template.format(w=b)
            x, y = tokenizer(clean)["input_ids"], tokenizer(corrupted)["input_ids"]
            if len(x) == len(y) and sum(i != j for i, j in zip(x, y, strict=True)) == 1:
                out.append((clean, corrupted))
    return out


def answered_pairs(model, tokenizer, n: int = 8) -> list[PromptPair]:
    """Prompt pairs with answers chosen so that the random model is right on both prompts."""
    answer_ids = {a: tokenizer(" " + a, add_special_tokens=False)["input_ids"][0] for a in ANSWERS}
    pairs = []
    for clean, corrupted in one_token_diff_prompts(tokenizer):
        with torch.no_grad():
            lc = model(torch.tensor([tokenizer(clean)["input_ids"]])).logits[0, -1]
            lr = model(torch.tensor([tokenizer(corrupted)["input_ids"]])).logits[0, -1]
        best = None
        for a, b in itertools.permutations(ANSWERS, 2):
            ia, ib = answer_ids[a], answer_ids[b]
            margin = min(float(lc[ia] - lc[ib]), float(lr[ib] - lr[ia]))
            if margin > 0 and (best is None or margin > best[0]):
                best = (margin, a, b)
        if best is not None:
            pid = f"p{len(pairs)}"
            pairs.append(PromptPair(pid, clean, corrupted, best[1], best[2], {}))
        if len(pairs) == n:
            break
    return pairs
