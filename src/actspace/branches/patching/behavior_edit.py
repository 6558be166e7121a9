"""Branch 2C, behavior_edit: steering toward an attribute, swept over layer x coefficient.

For each attribute (toxicity, formality), a mean-difference steering vector is made from part of
the contrast pairs (:mod:`actspace.methods.steering`) and added at each layer with each
coefficient while the model continues neutral prompts. Coefficients are relative to the residual
stream's typical norm at the steered layer (coefficient 1 adds a vector as long as a typical
token's residual stream there; ``actspace.methods.steering.CONVENTION``). The attribute score of
the continuations is compared with unsteered generation of the same prompts and seeds, and the
side effects are measured as the perplexity of neutral held-out sentences and the accuracy on a
task.

The prompts are split once (seeded) into *selection* prompts, which choose the best setting of
each attribute, and *report* prompts, on which every reported number is computed. The neutral
texts are split the same way into *budget-check* texts, on which a setting must keep perplexity
within the budget to be chosen, and *report* texts, whose perplexity is the side effect reported
(:mod:`actspace.branches.patching.edit_choice` chooses and states the criteria). At the chosen
setting a random direction of the same norm is generated too: the control that any push of that
size, not the attribute's direction, moved the score.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actspace.branches.patching.edit_choice import (
    NONE_WITHIN_BUDGET,
    budget_rule,
    least_damaging,
)
from actspace.branches.patching.edit_choice import (
    choose_best as choose_best,  # found here by the tests and the figures' tests
)
from actspace.branches.patching.edit_choice import headline as choice_headline
from actspace.branches.patching.edit_stats import (
    accuracy_change,
    mean_or_nan,
    mean_with_ci,
    perplexity_ratio,
    random_control,
    shift_summary,
    steering_comparison,
    text_subset,
)
from actspace.branches.patching.edit_stats import (
    bootstrap_interval as bootstrap_interval,  # found here by patching_vs_prompting
)
from actspace.branches.patching.edit_stats import (
    neutral_text_split as neutral_text_split,
)
from actspace.branches.patching.edit_stats import (
    split_indices as split_indices,  # found here by the tests
)
from actspace.core.io import read_jsonl
from actspace.core.progress import Progress
from actspace.core.results import now
from actspace.lm.models import residual_blocks
from actspace.lm.tasks import Item, rows_to_items
from actspace.methods.scorers import AttributeScorer, make_scorer
from actspace.methods.steering import (
    CONVENTION,
    ContrastPair,
    Cost,
    Generations,
    SamplingSettings,
    Steering,
    check_steering_layers,
    contrast_vectors,
    count_forward,
    default_steering_layers,
    generate,
    load_contrast_pairs,
    sample_scores,
    task_correct,
    text_nll,
)
from actspace.methods.steering_hook import random_direction
from actspace.methods.steering_sets import builtin_files as builtin_files
from actspace.world.attributes import ATTRIBUTES

MODEL_SOURCES = ("auto", "organism", "hub", "local")


def infer_model_source(model: str | os.PathLike[str], source: str = "auto") -> str:
    """``auto``: ``organism`` for a folder with the organisms' training.json, else local or hub."""
    if source not in MODEL_SOURCES:
        raise ValueError(f"unknown model source {source!r}; allowed: {', '.join(MODEL_SOURCES)}")
    if source != "auto":
        return source
    folder = Path(model)
    if (folder / "training.json").is_file():
        return "organism"
    return "local" if folder.is_dir() else "hub"


# ----------------------------------------------------------------------------------- the data
def load_neutral_prompts(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read ``neutral_prompts.jsonl`` (rows ``{id, prompt}``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"neutral prompts file not found: {path}")
    rows = read_jsonl(path)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{path}: row {number} needs string fields 'id' and 'prompt'")
        if not row["prompt"].strip():
            raise ValueError(f"{path}: row {number} has an empty prompt")
    if not rows:
        raise ValueError(f"{path} holds no prompts")
    return [{"id": row["id"], "prompt": row["prompt"]} for row in rows]


def load_task_items(path: str | os.PathLike[str] | None, n_items: int) -> list[Item]:
    """The first ``n_items`` items of a task JSONL file (none without a file or with 0)."""
    if path is None or n_items <= 0:
        return []
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file not found: {path}")
    return rows_to_items(read_jsonl(path), source=str(path))[:n_items]


# --------------------------------------------------------------------------- the experiment core
@dataclass(frozen=True)
class SideEffectData:
    """The neutral material side effects are measured on."""

    texts: list[str]
    items: list[Item] = field(default_factory=list)


def neutral_texts(
    pairs: Mapping[str, Sequence[ContrastPair]], held_out: Mapping[str, Sequence[int]], n: int
) -> list[str]:
    """Neutral sentences for perplexity: the attribute-free side of held-out toxicity pairs."""
    if "toxicity" not in pairs:
        raise ValueError("the attribute sets need toxicity pairs (their negatives are neutral)")
    texts = [pairs["toxicity"][i].negative for i in held_out["toxicity"]]
    if len(texts) < 4:
        raise ValueError(
            f"{len(texts)} held-out neutral texts, fewer than 4 (2 check the perplexity budget, "
            "2 report it); add attribute pairs"
        )
    return texts[:n]


def vector_split(
    n_pairs: int, n_vector_pairs: int | None, seed: int
) -> tuple[list[int], list[int]]:
    """Indices of the pairs that make the vector and of the held-out pairs (at least 2 each)."""
    if n_pairs < 4:
        raise ValueError(f"need at least 4 contrast pairs per attribute, got {n_pairs}")
    order = [int(i) for i in np.random.default_rng(seed).permutation(n_pairs)]
    k = n_pairs // 2 if n_vector_pairs is None else min(int(n_vector_pairs), n_pairs - 2)
    if k < 2:
        raise ValueError(f"n_vector_pairs must be at least 2, got {n_vector_pairs}")
    return sorted(order[:k]), sorted(order[k:])


def run_behavior_edit(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    pairs: Mapping[str, Sequence[ContrastPair]],
    prompts: Sequence[Mapping[str, str]],
    scorers: Mapping[str, AttributeScorer],
    side: SideEffectData,
    vector_pairs: Mapping[str, Sequence[int]],
    settings: SamplingSettings,
    layers: Sequence[int] | None,
    coefficients: Sequence[float],
    pooling: str,
    selection_fraction: float,
    max_perplexity_ratio: float | None,
    n_bootstrap: int,
    seed: int,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, dict[int, torch.Tensor]]]:
    """Sweep steering layer x coefficient per attribute; returns (results, generations, vectors).

    The vectors returned are those coefficient 1 adds (reference norm x unit mean difference, per
    attribute and layer), so that ``Steering(layer, vector, coefficient)`` repeats a setting.
    ``layers`` None: three spread over the blocks (:func:`default_steering_layers`). The best
    setting of an attribute is the largest mean shift on the *selection* prompts among settings
    within ``max_perplexity_ratio`` on the *budget-check* neutral texts (none when no setting is;
    :func:`~actspace.branches.patching.edit_choice.choose_best`); every reported number is on the
    *report* prompts and *report* neutral texts. ``progress`` (a
    :class:`~actspace.core.progress.Progress`) counts generation settings: the unsteered baseline,
    each attribute x layer x coefficient and each attribute's random-direction control.
    """
    n_blocks = len(residual_blocks(model))
    layers = check_steering_layers(
        default_steering_layers(n_blocks) if layers is None else layers, n_blocks
    )
    if max_perplexity_ratio is not None:
        max_perplexity_ratio = float(max_perplexity_ratio)
    coefficients = [float(c) for c in coefficients]
    if not coefficients:
        raise ValueError("no steering coefficients given")
    selection, report = split_indices(len(prompts), selection_fraction, seed)
    texts = neutral_text_split(len(side.texts), seed)
    prompt_texts = [p["prompt"] for p in prompts]
    split_of = {i: "selection" for i in selection} | {i: "report" for i in report}
    boot = {"n_boot": n_bootstrap, "seed": seed}
    if progress is not None:
        progress.set_total(1 + len(scorers) * (len(layers) * len(coefficients) + 1))

    base_nll = text_nll(model, tokenizer, side.texts)
    base_correct = task_correct(model, tokenizer, side.items) if side.items else None
    base_gen = generate(model, tokenizer, prompt_texts, seed=seed, settings=settings)
    if progress is not None:
        progress.update(checkpoint="unsteered baseline")
    generation_rows: list[dict[str, Any]] = []
    vectors: dict[str, dict[int, torch.Tensor]] = {}
    results: dict[str, Any] = {}
    total = Cost()
    _add_cost(total, base_gen.cost)

    def side_effects(steer: Steering) -> dict[str, Any]:
        nll = text_nll(model, tokenizer, side.texts, steering=steer)
        out = {
            half: perplexity_ratio(text_subset(base_nll, idx), text_subset(nll, idx), **boot)
            for half, idx in (("perplexity", texts.report), ("budget_perplexity", texts.budget))
        }
        if base_correct is not None:
            steered = task_correct(model, tokenizer, side.items, steering=steer)
            out["accuracy"] = accuracy_change(base_correct, steered, **boot)
        return out

    for attribute, scorer in scorers.items():
        chosen = [pairs[attribute][i] for i in vector_pairs[attribute]]
        with count_forward(model) as vector_cost:
            found = contrast_vectors(model, tokenizer, chosen, layers, pooling=pooling)
        vecs = found.scaled()
        vectors[attribute] = vecs
        per_sample = sample_scores(scorer, base_gen)
        base_scores = np.asarray([float(np.mean(s)) for s in per_sample])
        record = _Recorder(generation_rows, attribute, prompts, split_of)
        record(None, 0.0, "none", base_gen, per_sample)
        grid = []
        all_scores: dict[tuple[int, float], np.ndarray] = {}
        for layer in layers:
            for coefficient in coefficients:
                steer = Steering(layer, vecs[layer], coefficient)
                gen = generate(
                    model, tokenizer, prompt_texts, seed=seed, settings=settings, steering=steer
                )
                _add_cost(total, gen.cost)
                per_sample = sample_scores(scorer, gen)
                scores = np.asarray([float(np.mean(s)) for s in per_sample])
                all_scores[(layer, coefficient)] = scores
                record(layer, coefficient, "contrast", gen, per_sample)
                grid.append(
                    {
                        "layer": layer,
                        "coefficient": coefficient,
                        "report": shift_summary(base_scores, scores, report, **boot),
                        "selection": shift_summary(base_scores, scores, selection, **boot),
                        **side_effects(steer),
                        "generation_cost": gen.cost.as_dict(),
                    }
                )
                if progress is not None:
                    progress.update(checkpoint=f"{attribute} layer {layer} x {coefficient:g}")
        best = choose_best(grid, max_perplexity_ratio)
        if best is not None:
            steered = all_scores[(best["layer"], best["coefficient"])]
            direction = random_direction(vecs[best["layer"]], seed)
            steer = Steering(best["layer"], direction, best["coefficient"])
            gen = generate(
                model, tokenizer, prompt_texts, seed=seed, settings=settings, steering=steer
            )
            _add_cost(total, gen.cost)
            per_sample = sample_scores(scorer, gen)
            record(best["layer"], best["coefficient"], "random", gen, per_sample)
            random_scores = np.asarray([float(np.mean(s)) for s in per_sample])
            best["random_direction"] = random_control(
                base_scores, steered, random_scores, report, **boot
            )
            best["comparison"] = steering_comparison(
                attribute, best, steered[report], base_scores[report]
            )
        if progress is not None:
            progress.update(checkpoint=f"{attribute} random direction")
        results[attribute] = {
            "scorer": scorer.describe(),
            "n_vector_pairs": len(chosen),
            "direction_norms": {str(k): float(v.norm()) for k, v in found.directions.items()},
            "reference_norms": {str(k): v for k, v in found.reference_norms.items()},
            "vector_cost": vector_cost.as_dict(),
            "baseline": {
                "report": mean_with_ci(base_scores[report], **boot),
                "selection": mean_with_ci(base_scores[selection], **boot),
            },
            "grid": grid,
            "best": best,
            "within_perplexity_budget": best is not None,
            "least_damaging": None if best is not None else least_damaging(grid),
        }
    summary = {
        "attributes": results,
        "layers": layers,
        "coefficients": coefficients,
        "steering_convention": CONVENTION,
        "n_prompts": len(prompts),
        "n_selection": len(selection),
        "n_report": len(report),
        "selection_ids": [prompts[i]["id"] for i in selection],
        "report_ids": [prompts[i]["id"] for i in report],
        "samples_per_prompt": settings.samples_per_prompt,
        "max_perplexity_ratio": max_perplexity_ratio,
        "budget_rule": budget_rule(max_perplexity_ratio),
        "side_effect": {
            "n_neutral_texts": len(side.texts),
            "n_budget_texts": len(texts.budget),
            "n_report_texts": len(texts.report),
            "budget_text_indices": texts.budget,
            "report_text_indices": texts.report,
            "baseline_perplexity": text_subset(base_nll, texts.report).value,
            "budget_baseline_perplexity": text_subset(base_nll, texts.budget).value,
            "n_task_items": len(side.items),
            "baseline_accuracy": None
            if base_correct is None
            else mean_or_nan(base_correct.astype(float)),
        },
        "baseline_generation_cost": base_gen.cost.as_dict(),
        "forward_passes": total.forward_passes,
        "generated_tokens": total.generated_tokens,
    }
    return summary, generation_rows, vectors


def _add_cost(total: Cost, cost: Cost) -> None:
    total.forward_passes += cost.forward_passes
    total.generated_tokens += cost.generated_tokens


@dataclass
class _Recorder:
    """Appends one attribute's generation rows (``vector``: none, contrast or random)."""

    rows: list[dict[str, Any]]
    attribute: str
    prompts: Sequence[Mapping[str, str]]
    split_of: Mapping[int, str]

    def __call__(
        self,
        layer: int | None,
        coefficient: float,
        vector: str,
        gen: Generations,
        scores: Sequence[Sequence[float]],
    ) -> None:
        for index, texts in enumerate(gen.texts):
            self.rows.append(
                {
                    "attribute": self.attribute,
                    "layer": layer,
                    "coefficient": coefficient,
                    "vector": vector,
                    "prompt_id": self.prompts[index]["id"],
                    "split": self.split_of[index],
                    "prompt": self.prompts[index]["prompt"],
                    "continuations": texts,
                    "scores": list(scores[index]),
                }
            )


# ------------------------------------------------------------------------------- the experiment
@dataclass(frozen=True)
class EditData:
    """What behavior_edit reads before the model loads, checked: the contrast pairs, the prompts,
    each attribute's split of its pairs (vector, held out), the side-effect material and the
    scorers."""

    attributes: list[str]
    pairs: dict[str, list[ContrastPair]]
    prompts: list[dict[str, str]]
    split: dict[str, tuple[list[int], list[int]]]
    side: SideEffectData
    scorers: dict[str, AttributeScorer]
    model_source: str
    task_file: str | None

    @property
    def vector_pairs(self) -> dict[str, list[int]]:
        """The indices of each steered attribute's pairs that make its vector."""
        return {a: self.split[a][0] for a in self.attributes}


def load_edit_data(
    *,
    attribute_sets: str | os.PathLike[str],
    prompts: str | os.PathLike[str],
    task_file: str | os.PathLike[str] | None,
    model: str,
    model_source: str,
    attributes: Sequence[str],
    n_prompts: int | None,
    n_vector_pairs: int | None,
    n_neutral_texts: int,
    side_task_items: int,
    scorers: Mapping[str, Any],
    seed: int,
    device: str,
) -> EditData:
    """Read and check behavior_edit's inputs (the keys of ``experiments.behavior_edit``).

    ``model`` is the model's folder or hub id (``model_source`` ``auto`` infers organism, local or
    hub from it); ``scorers`` holds each attribute's scorer specification.
    """
    attributes = list(attributes)
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown or not attributes:
        raise ValueError(f"attributes: {unknown or 'none'} not allowed (allowed: {ATTRIBUTES})")
    pairs = load_contrast_pairs(attribute_sets)
    missing = [a for a in attributes if a not in pairs]
    if missing:
        raise ValueError(f"{attribute_sets} has no contrast pairs for {', '.join(missing)}")
    prompt_rows = load_neutral_prompts(prompts)
    if n_prompts is not None:
        if n_prompts < 2:
            raise ValueError(f"n_prompts must be at least 2, got {n_prompts}")
        prompt_rows = prompt_rows[:n_prompts]
    split = {a: vector_split(len(pairs[a]), n_vector_pairs, seed) for a in pairs}
    texts = neutral_texts(pairs, {a: s[1] for a, s in split.items()}, n_neutral_texts)
    items = load_task_items(task_file, side_task_items)
    source = infer_model_source(model, model_source)
    return EditData(
        attributes=attributes,
        pairs=pairs,
        prompts=prompt_rows,
        split=split,
        side=SideEffectData(texts=texts, items=items),
        scorers={
            a: make_scorer(a, scorers.get(a), model_source=source, device=device)
            for a in attributes
        },
        model_source=source,
        task_file=None if task_file is None else str(task_file),
    )


def edit_results(
    sweep: Mapping[str, Any], data: EditData, *, model: str, seed: int, duration_s: float
) -> dict[str, Any]:
    """behavior_edit's results.json: the sweep of :func:`run_behavior_edit`, which pairs made the
    vectors and the neutral texts (all, and each half: budget check and report), and one headline
    per attribute."""
    toxicity_held_out = data.split["toxicity"][1][: len(data.side.texts)]
    text_ids = [data.pairs["toxicity"][i].id for i in toxicity_held_out]
    side = sweep["side_effect"]
    return {
        "experiment": "behavior_edit",
        "model": model,
        "model_source": data.model_source,
        "seed": seed,
        **sweep,
        "neutral_text_pair_ids": text_ids,
        "budget_text_pair_ids": [text_ids[i] for i in side["budget_text_indices"]],
        "report_text_pair_ids": [text_ids[i] for i in side["report_text_indices"]],
        "vector_pair_ids": {
            a: [data.pairs[a][i].id for i in data.split[a][0]] for a in data.attributes
        },
        "task_file": data.task_file,
        "n_task_items": len(data.side.items),
        "duration_s": duration_s,
        "date": now(),
        "headlines": [
            headline(a, sweep["attributes"][a], sweep["max_perplexity_ratio"])
            for a in data.attributes
        ],
    }


def headline(attribute: str, result: Mapping[str, Any], max_ratio: float | None) -> dict[str, Any]:
    """The attribute's main result: the report-prompt shift at the chosen setting, with the
    plan's criterion and its controls (:func:`~actspace.branches.patching.edit_choice.headline`)."""
    return choice_headline(attribute, result, max_ratio)


def _chosen_line(info: Mapping[str, Any], results: Mapping[str, Any]) -> str:
    """The chosen setting with its report shift and controls, or why none was chosen."""
    best = info["best"]
    if best is None:
        least = info["least_damaging"]
        return (
            f"Nothing chosen: {NONE_WITHIN_BUDGET} ({results['budget_rule']}). Least damaging, "
            f"for information only: layer {least['layer']}, coefficient "
            f"{least['coefficient']:g} (budget-check perplexity ratio "
            f"{fmt(least['budget_perplexity']['ratio'])})."
        )
    random = best["random_direction"]
    return (
        f"Best (chosen on the selection prompts and budget-check texts): layer {best['layer']}, "
        f"coefficient {best['coefficient']:g}: shift {best['report']['shift']:+.3f} "
        f"{fmt_ci(best['report']['shift_ci'])}, report-text perplexity ratio "
        f"{fmt(best['perplexity']['ratio'])} {fmt_ci(best['perplexity']['ratio_ci'])}; a random "
        f"direction of the same norm shifts it {random['shift']['shift']:+.3f}, steering minus "
        f"random {random['steered_minus_random']:+.3f} "
        f"{fmt_ci(random['steered_minus_random_ci'])}."
    )


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a summary table ("n/a" for none)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def fmt_ci(ci: Sequence[float | None]) -> str:
    """An interval for a summary table."""
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def summary_markdown(results: Mapping[str, Any]) -> str:
    """A page for a person: per attribute, the grid and the chosen setting."""
    side = results["side_effect"]
    lines = [
        f"# behavior_edit: steering toward an attribute ({results['model']}, "
        f"seed {results['seed']})",
        "",
        f"{results['n_prompts']} neutral prompts: {results['n_selection']} select the best "
        f"setting, {results['n_report']} report it; {results['samples_per_prompt']} sampled "
        "continuations each. Shift = steered minus unsteered attribute score on the same "
        "prompts and seeds; 95% bootstrap CIs over prompts. Side effects: perplexity of "
        f"neutral held-out sentences, {side['n_budget_texts']} of which check the budget "
        f"({results['budget_rule']}) and {side['n_report_texts']} report it (baseline "
        f"{fmt(side['baseline_perplexity'])}), and task accuracy (baseline "
        f"{fmt(side['baseline_accuracy'])}, {side['n_task_items']} items).",
        "",
        f"Coefficients are relative to the residual stream: {results['steering_convention']}.",
    ]
    for attribute, info in results["attributes"].items():
        base = info["baseline"]["report"]
        lines += [
            "",
            f"## {attribute} (scorer: {info['scorer']['kind']})",
            "",
            f"Unsteered score {fmt(base['mean'])} {fmt_ci(base['ci'])}. Reference norms by layer: "
            + ", ".join(f"{k}: {v:.1f}" for k, v in info["reference_norms"].items())
            + ".",
            "",
            "| layer | coefficient | score | shift | 95% CI | perplexity ratio (budget check) "
            "| perplexity ratio (report) | accuracy change |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for g in info["grid"]:
            acc = g.get("accuracy")
            lines.append(
                f"| {g['layer']} | {g['coefficient']:g} | {fmt(g['report']['score'])} "
                f"| {g['report']['shift']:+.3f} | {fmt_ci(g['report']['shift_ci'])} "
                f"| {fmt(g['budget_perplexity']['ratio'])} "
                f"{fmt_ci(g['budget_perplexity']['ratio_ci'])} "
                f"| {fmt(g['perplexity']['ratio'])} {fmt_ci(g['perplexity']['ratio_ci'])} "
                f"| {'n/a' if acc is None else format(acc['delta'], '+.3f')} |"
            )
        lines += ["", _chosen_line(info, results)]
    return "\n".join(lines)
