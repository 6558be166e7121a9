"""behavior_edit's statistics: means and shifts with bootstrap intervals, perplexity ratios and
accuracy changes, all paired over the same prompts or texts; the seeded splits of its prompts
(selection, report) and neutral texts (budget check, report); the random-direction control."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actspace.core.resampling import bootstrap_ci
from actspace.methods.steering import Perplexity


# ------------------------------------------------------------------------------------ statistics
def mean_or_nan(values: np.ndarray) -> float:
    """The mean, or NaN for no values."""
    return float(np.mean(values)) if len(values) else float("nan")


def bootstrap_interval(
    statistic: Callable[..., float], *arrays: np.ndarray, n_boot: int, seed: int
) -> list:
    """The bootstrap 95% interval of ``statistic`` (NaNs when an array has fewer than 2 values)."""
    if any(len(a) < 2 for a in arrays):
        return [float("nan"), float("nan")]
    low, high = bootstrap_ci(statistic, *arrays, n_resamples=n_boot, seed=seed)
    return [low, high]


def mean_with_ci(values: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean and its bootstrap 95% interval."""
    values = np.asarray(values, dtype=float)
    return {
        "mean": mean_or_nan(values),
        "ci": bootstrap_interval(np.mean, values, n_boot=n_boot, seed=seed),
    }


def perplexity_ratio(
    base: Perplexity, other: Perplexity, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Perplexity with and without an intervention, their ratio and its paired bootstrap CI.

    Both are per-token perplexities over the same texts (resampled together); the token counts
    may differ slightly where a prefix changes how a text's first word is split.
    """
    if len(base.nll) != len(other.nll):
        raise ValueError("perplexities to compare must cover the same texts")

    def ratio(b: np.ndarray, bt: np.ndarray, o: np.ndarray, ot: np.ndarray, axis: int = -1):
        log_other = o.sum(axis=axis) / ot.sum(axis=axis)
        return np.exp(log_other - b.sum(axis=axis) / bt.sum(axis=axis))

    return {
        "perplexity": other.value,
        "baseline_perplexity": base.value,
        "ratio": other.value / base.value,
        "ratio_ci": bootstrap_interval(
            ratio, base.nll, base.tokens, other.nll, other.tokens, n_boot=n_boot, seed=seed
        ),
    }


def accuracy_change(
    base: np.ndarray, other: np.ndarray, *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Accuracy with and without an intervention and the paired CI of the difference."""
    diff = other.astype(float) - base.astype(float)
    return {
        "accuracy": mean_or_nan(other.astype(float)),
        "baseline_accuracy": mean_or_nan(base.astype(float)),
        "delta": mean_or_nan(diff),
        "delta_ci": bootstrap_interval(np.mean, diff, n_boot=n_boot, seed=seed),
    }


def shift_summary(
    base: np.ndarray, other: np.ndarray, index: Sequence[int], *, n_boot: int, seed: int
) -> dict[str, Any]:
    """Score and shift (other - base) over the prompts in ``index``, with paired CIs."""
    index = list(index)
    diff = other[index] - base[index]
    return {
        "score": mean_or_nan(other[index]),
        "score_ci": bootstrap_interval(np.mean, other[index], n_boot=n_boot, seed=seed),
        "shift": mean_or_nan(diff),
        "shift_ci": bootstrap_interval(np.mean, diff, n_boot=n_boot, seed=seed),
        "n": len(index),
    }


def text_subset(perplexity: Perplexity, index: Sequence[int]) -> Perplexity:
    """The per-text NLLs and token counts of the texts in ``index``."""
    index = list(index)
    return Perplexity(perplexity.nll[index], perplexity.tokens[index])


# ------------------------------------------------------------------------------------- the splits
def split_indices(n: int, selection_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of ``range(n)`` into (selection, report) index lists, both non-empty."""
    if n < 2:
        raise ValueError(f"need at least 2 prompts to split into selection and report, got {n}")
    if not 0.0 < selection_fraction < 1.0:
        raise ValueError(f"selection_fraction must lie in (0, 1), got {selection_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    k = min(max(1, round(n * selection_fraction)), n - 1)
    return sorted(int(i) for i in order[:k]), sorted(int(i) for i in order[k:])


@dataclass(frozen=True)
class TextSplit:
    """Indices of the neutral texts that check the budget and of those that report the side
    effect (disjoint, seeded)."""

    budget: list[int]
    report: list[int]


def neutral_text_split(n: int, seed: int) -> TextSplit:
    """Half the neutral texts check the perplexity budget, the other half report it (seeded)."""
    if n < 4:
        raise ValueError(
            f"need at least 4 neutral texts (2 to check the perplexity budget, 2 to report it), "
            f"got {n}; raise n_neutral_texts or add attribute pairs"
        )
    budget, report = split_indices(n, 0.5, seed)
    return TextSplit(budget=budget, report=report)


def random_control(
    base: np.ndarray,
    steered: np.ndarray,
    random: np.ndarray,
    report: Sequence[int],
    *,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """The random direction's shift on the report prompts and the steering vector's paired
    advantage over it (steered minus random, per prompt)."""
    diff = steered[list(report)] - random[list(report)]
    return {
        "shift": shift_summary(base, random, report, n_boot=n_boot, seed=seed),
        "steered_minus_random": mean_or_nan(diff),
        "steered_minus_random_ci": bootstrap_interval(np.mean, diff, n_boot=n_boot, seed=seed),
        "rule": "a seeded Gaussian direction scaled to the steering vector's norm, added at the "
        "chosen layer with the chosen coefficient",
    }


def steering_comparison(
    attribute: str, best: Mapping[str, Any], steered: np.ndarray, unsteered: np.ndarray
) -> dict[str, Any]:
    """The plan's comparison at the chosen setting, per report prompt (for Phase 3)."""
    return {
        "description": (
            f"{attribute} score of continuations steered at layer {best['layer']} with "
            f"coefficient {best['coefficient']:g} against unsteered continuations, per "
            "report prompt (mean over its samples)"
        ),
        "kind": "paired",
        "unit": "prompt",
        "a": [float(x) for x in steered],
        "b": [float(x) for x in unsteered],
        "label_a": "steered",
        "label_b": "unsteered",
        "binary": False,
    }
