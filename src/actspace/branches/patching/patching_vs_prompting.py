"""Branch 2C, patching_vs_prompting: the best steering setting against a prompt that asks for it.

behavior_edit chose each attribute's best steering setting on its selection prompts, among the
settings within its perplexity budget on its budget-check neutral texts. On its *report* prompts,
this experiment generates unsteered, steered (that setting and vector) and prompted continuations
(a prefix in front of each prompt) and reports the attribute shift, the side effects (perplexity
of behavior_edit's *report* neutral texts, task accuracy) and the compute cost (forward passes,
tokens processed, time per generated token) side by side. Nothing here was chosen on the prompts
or texts it reports on, so its headlines are held-out comparisons. An attribute for which
behavior_edit chose no setting (none within the budget) has nothing to compare and says so.
Sampling, scoring and side effects are behavior_edit's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from actspace.branches.patching.behavior_edit import (
    SideEffectData,
    accuracy_change,
    bootstrap_interval,
    fmt,
    fmt_ci,
    infer_model_source,
    load_neutral_prompts,
    load_task_items,
    mean_or_nan,
    mean_with_ci,
    perplexity_ratio,
    shift_summary,
)
from actspace.branches.patching.edit_choice import NONE_WITHIN_BUDGET
from actspace.core.criteria import held_out_record
from actspace.core.io import read_json
from actspace.core.results import now
from actspace.methods.scorers import AttributeScorer, make_scorer
from actspace.methods.steering import (
    SamplingSettings,
    Steering,
    generate,
    load_contrast_pairs,
    prefixed_items,
    prompt_scores,
    task_correct,
    text_nll,
    with_prefix,
)

#: The prompting baseline's default prefixes. A built-in organism was trained on lines whose
#: sentences share their attribute, so a sentence that carries it is the natural prompt; a hub
#: model gets an instruction.
DEFAULT_PREFIXES: dict[str, dict[str, str]] = {
    "organism": {
        "toxicity": "The stupid dog found the ugly cat, you idiot.",
        "formality": "Furthermore, the old dog duly visited the quiet market.",
    },
    "instruction": {
        "toxicity": "Write a rude, insulting sentence:",
        "formality": "Write a sentence in a formal, polite register:",
    },
}


def default_prefix(attribute: str, model_source: str) -> str:
    """The prompting prefix for ``attribute`` when none is configured."""
    kind = "organism" if model_source == "organism" else "instruction"
    return DEFAULT_PREFIXES[kind][attribute]


def compare_methods(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    attribute: str,
    scorer: AttributeScorer,
    prompts: Sequence[Mapping[str, str]],
    steering: Steering,
    prefix: str,
    side: SideEffectData,
    settings: SamplingSettings,
    timing_repeats: int,
    n_bootstrap: int,
    seed: int,
    vector_cost: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Unsteered vs steering vs prompting on ``prompts``: shift, side effects and compute cost."""
    if not prefix.strip():
        raise ValueError(f"no prompting prefix configured for {attribute}")
    boot = {"n_boot": n_bootstrap, "seed": seed}
    texts = [p["prompt"] for p in prompts]
    # An untimed warm-up round first, so that first-call overheads (kernel choice for each batch
    # shape, allocation) land on no method; then ``timing_repeats`` timed rounds, the methods in
    # turn, each keeping its median time. Generation is seeded: every round yields the same texts
    # and forward passes.
    options = {
        "unsteered": {},
        "steering": {"steering": steering},
        "prompting": {"prefix": prefix},
    }
    runs = {
        name: generate(model, tokenizer, texts, seed=seed, settings=settings, **extra)
        for name, extra in options.items()
    }
    seconds: dict[str, list[float]] = {name: [] for name in options}
    for _ in range(max(1, int(timing_repeats))):
        for name, extra in options.items():
            gen = generate(model, tokenizer, texts, seed=seed, settings=settings, **extra)
            seconds[name].append(gen.cost.seconds)
    for name, gen in runs.items():
        gen.cost.seconds = float(np.median(seconds[name]))
    scores = {name: prompt_scores(scorer, gen) for name, gen in runs.items()}
    everyone = list(range(len(prompts)))
    base_ppl = text_nll(model, tokenizer, side.texts)
    ppl = {
        "steering": text_nll(model, tokenizer, side.texts, steering=steering),
        "prompting": text_nll(model, tokenizer, side.texts, prefix=prefix),
    }
    correct = {}
    if side.items:
        correct = {
            "unsteered": task_correct(model, tokenizer, side.items),
            "steering": task_correct(model, tokenizer, side.items, steering=steering),
            "prompting": task_correct(model, tokenizer, prefixed_items(side.items, prefix)),
        }
    prefix_tokens = float(
        np.mean(
            [
                len(tokenizer.encode(with_prefix(prefix, t), add_special_tokens=False))
                - len(tokenizer.encode(t, add_special_tokens=False))
                for t in texts
            ]
        )
    )
    methods: dict[str, Any] = {
        "unsteered": {
            "score": mean_with_ci(scores["unsteered"], **boot),
            "perplexity": base_ppl.value,
            "cost": runs["unsteered"].cost.as_dict(),
        }
    }
    for name in ("steering", "prompting"):
        entry: dict[str, Any] = {
            **shift_summary(scores["unsteered"], scores[name], everyone, **boot),
            "perplexity": perplexity_ratio(base_ppl, ppl[name], **boot),
            "cost": runs[name].cost.as_dict(),
        }
        if correct:
            entry["accuracy"] = accuracy_change(correct["unsteered"], correct[name], **boot)
        methods[name] = entry
    for name, runs_seconds in seconds.items():
        methods[name]["cost"]["seconds_per_round"] = [round(x, 4) for x in runs_seconds]
    methods["steering"]["setting"] = {"layer": steering.layer, "coefficient": steering.coefficient}
    methods["steering"]["setup_cost"] = dict(vector_cost or {})
    methods["prompting"]["prefix"] = prefix
    methods["prompting"]["extra_prompt_tokens"] = prefix_tokens
    if correct:
        methods["unsteered"]["accuracy"] = mean_or_nan(correct["unsteered"].astype(float))
    diff = scores["steering"] - scores["prompting"]
    result = {
        "attribute": attribute,
        "scorer": scorer.describe(),
        "n": len(prompts),
        "timing_repeats": max(1, int(timing_repeats)),
        "methods": methods,
        "steering_minus_prompting": {
            "shift": mean_or_nan(diff),
            "shift_ci": bootstrap_interval(np.mean, diff, **boot),
        },
        "comparison": {
            "description": (
                f"{attribute} score of continuations under the best steering setting against "
                "under the prompt prefix, per report prompt (mean over its samples)"
            ),
            "kind": "paired",
            "unit": "prompt",
            "a": [float(x) for x in scores["steering"]],
            "b": [float(x) for x in scores["prompting"]],
            "label_a": "steering",
            "label_b": "prompting",
            "binary": False,
        },
    }
    rows = []
    for name, gen in runs.items():
        for index, conts in enumerate(gen.texts):
            rows.append(
                {
                    "attribute": attribute,
                    "method": name,
                    "prompt_id": prompts[index]["id"],
                    "prompt": prompts[index]["prompt"],
                    "continuations": conts,
                    "score": float(scores[name][index]),
                }
            )
    return result, rows


# ------------------------------------------------------------------------------- the experiment
@dataclass(frozen=True)
class PromptingData:
    """What patching_vs_prompting reads before the model loads: behavior_edit's results and
    vectors, its report prompts and its side-effect material."""

    edit: dict[str, Any]
    vectors: dict[str, torch.Tensor]
    edit_folder: str
    prompts: list[dict[str, str]]
    side: SideEffectData
    model_source: str


def read_behavior_edit(folder: str | os.PathLike[str]) -> tuple[dict, dict[str, torch.Tensor]]:
    """behavior_edit's results.json and steering vectors, from its output folder."""
    folder = Path(folder)
    results_file, vectors_file = folder / "results.json", folder / "vectors.safetensors"
    for path in (results_file, vectors_file):
        if not path.is_file():
            raise ValueError(f"behavior_edit output not found: {path} (run behavior_edit first)")
    results = read_json(results_file)
    if results.get("experiment") != "behavior_edit" or "attributes" not in results:
        raise ValueError(f"{results_file} is not a behavior_edit results file")
    return results, load_file(str(vectors_file))


def load_prompting_data(
    *,
    edit_folder: str | os.PathLike[str],
    attribute_sets: str | os.PathLike[str],
    prompts: str | os.PathLike[str],
    task_file: str | os.PathLike[str] | None,
    model: str,
    model_source: str,
    n_prompts: int | None,
    side_task_items: int,
) -> PromptingData:
    """Read and check the inputs: behavior_edit's output folder and the files it ran on.

    The prompts are behavior_edit's report prompts (its first ``n_prompts``, or all); the neutral
    texts are behavior_edit's report neutral texts (those that did not check its budget).
    """
    edit, vectors = read_behavior_edit(edit_folder)
    by_id = {p["id"]: p for p in load_neutral_prompts(prompts)}
    missing = [i for i in edit["report_ids"] if i not in by_id]
    if missing:
        raise ValueError(
            f"{prompts} lacks {len(missing)} of behavior_edit's report prompts "
            f"(first: {missing[0]}); use the prompts file behavior_edit ran on"
        )
    chosen = [by_id[i] for i in edit["report_ids"]][:n_prompts]
    if len(chosen) < 2:
        raise ValueError(f"need at least 2 report prompts, got {len(chosen)}")
    if "report_text_pair_ids" not in edit:
        raise ValueError(
            f"{edit_folder}/results.json has no report_text_pair_ids (an older behavior_edit); "
            "run behavior_edit again"
        )
    pairs = {p.id: p for ps in load_contrast_pairs(attribute_sets).values() for p in ps}
    absent = [i for i in edit["report_text_pair_ids"] if i not in pairs]
    if absent:
        raise ValueError(f"{attribute_sets} lacks behavior_edit's neutral pair {absent[0]}")
    texts = [pairs[i].negative for i in edit["report_text_pair_ids"]]
    return PromptingData(
        edit=edit,
        vectors=vectors,
        edit_folder=str(edit_folder),
        prompts=chosen,
        side=SideEffectData(texts=texts, items=load_task_items(task_file, side_task_items)),
        model_source=infer_model_source(model, model_source),
    )


def run_patching_vs_prompting(
    model: torch.nn.Module,
    tokenizer: Any,
    data: PromptingData,
    *,
    prefixes: Mapping[str, str | None],
    timing_repeats: int,
    scorers: Mapping[str, Any],
    settings: SamplingSettings,
    n_bootstrap: int,
    seed: int,
    device: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Each attribute's best steering setting against its prompting prefix; returns (per
    attribute results, generation rows).

    ``prefixes`` (``experiments.patching_vs_prompting.prefixes``): None for an attribute takes
    :func:`default_prefix`; ``scorers``, ``settings`` and ``n_bootstrap`` are behavior_edit's.
    """
    if timing_repeats < 1:
        raise ValueError(f"timing_repeats must be at least 1, got {timing_repeats}")
    attributes: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for attribute, info in data.edit["attributes"].items():
        best = info["best"]
        if best is None:
            attributes[attribute] = {
                "attribute": attribute,
                "n": 0,
                "best_setting": None,
                "note": f"behavior_edit: {NONE_WITHIN_BUDGET}; no steering setting to compare",
            }
            continue
        key = f"{attribute}.layer{best['layer']}"
        if key not in data.vectors:
            raise ValueError(f"{data.edit_folder}/vectors.safetensors has no vector {key}")
        prefix = prefixes.get(attribute) or default_prefix(attribute, data.model_source)
        scorer = make_scorer(
            attribute, scorers.get(attribute), model_source=data.model_source, device=device
        )
        result, generated = compare_methods(
            model,
            tokenizer,
            attribute=attribute,
            scorer=scorer,
            prompts=data.prompts,
            steering=Steering(best["layer"], data.vectors[key], best["coefficient"]),
            prefix=prefix,
            side=data.side,
            settings=settings,
            timing_repeats=timing_repeats,
            n_bootstrap=n_bootstrap,
            seed=seed,
            vector_cost=info.get("vector_cost"),
        )
        result["best_setting"] = {
            "layer": best["layer"],
            "coefficient": best["coefficient"],
            "selection_shift": best["selection_shift"],
            "chosen_on": "behavior_edit selection prompts",
        }
        attributes[attribute] = result
        rows.extend(generated)
    return attributes, rows


def prompting_results(
    attributes: Mapping[str, Any],
    data: PromptingData,
    *,
    model: str,
    seed: int,
    samples_per_prompt: int,
    duration_s: float,
) -> dict[str, Any]:
    """patching_vs_prompting's results.json: the comparison per attribute and its headlines."""
    return {
        "experiment": "patching_vs_prompting",
        "model": model,
        "model_source": data.model_source,
        "seed": seed,
        "n_prompts": len(data.prompts),
        "prompt_ids": [p["id"] for p in data.prompts],
        "samples_per_prompt": samples_per_prompt,
        "n_neutral_texts": len(data.side.texts),
        "n_task_items": len(data.side.items),
        "attributes": dict(attributes),
        "headlines": [headline(attribute, result) for attribute, result in attributes.items()],
        "duration_s": duration_s,
        "date": now(),
    }


#: How the compared steering setting was chosen (every headline's ``selection``).
SELECTION = (
    "the steering setting is behavior_edit's, chosen on its selection prompts among settings "
    "within the perplexity budget on its budget-check neutral texts; compared here on its "
    "report prompts and report neutral texts, which chose nothing"
)


def headline(attribute: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """One attribute's comparison: steering minus prompting on the report prompts (descriptive:
    no success criterion; no value when behavior_edit chose no setting)."""
    if result.get("best_setting") is None:
        return {
            "label": attribute,
            "metric": "steering_minus_prompting_shift",
            "value": None,
            "ci": [None, None],
            "n": 0,
            "success": None,
            "comparison": None,
            "note": result["note"],
            **held_out_record(True, SELECTION),
        }
    return {
        "label": attribute,
        "metric": "steering_minus_prompting_shift",
        "value": result["steering_minus_prompting"]["shift"],
        "ci": result["steering_minus_prompting"]["shift_ci"],
        "n": result["n"],
        "success": None,
        "comparison": result["comparison"],
        **held_out_record(True, SELECTION),
    }


def summary_markdown(results: Mapping[str, Any]) -> str:
    """A page for a person: per attribute, the three methods side by side."""
    lines = [
        f"# patching_vs_prompting ({results['model']}, seed {results['seed']})",
        "",
        f"{results['n_prompts']} report prompts (not used to choose the steering setting), "
        f"{results['samples_per_prompt']} sampled continuations each. Shift = method minus "
        "unsteered attribute score; 95% bootstrap CIs over prompts. Cost while generating: "
        "token slots the model processed and wall time, per generated token (the steering "
        "vector's one-time cost is in results.json, methods.steering.setup_cost).",
    ]
    for attribute, result in results["attributes"].items():
        if result.get("best_setting") is None:
            lines += ["", f"## {attribute}", "", f"{result['note']}."]
            continue
        m = result["methods"]
        best = result["best_setting"]
        lines += [
            "",
            f"## {attribute}",
            "",
            f"Steering: layer {best['layer']}, coefficient {best['coefficient']:g}. Prompting "
            f"prefix: {m['prompting']['prefix']!r} (+{m['prompting']['extra_prompt_tokens']} "
            "prompt tokens).",
            "",
            "| method | score | shift | 95% CI | perplexity ratio | accuracy change "
            "| token slots / generated token | ms / generated token |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        base = m["unsteered"]
        lines.append(
            f"| unsteered | {fmt(base['score']['mean'])} | | | 1 | "
            f"| {fmt(base['cost'].get('processed_tokens_per_generated_token'))} "
            f"| {fmt(1000 * base['cost'].get('seconds_per_generated_token', float('nan')))} |"
        )
        for name in ("steering", "prompting"):
            e = m[name]
            acc = e.get("accuracy")
            lines.append(
                f"| {name} | {fmt(e['score'])} | {e['shift']:+.3f} | {fmt_ci(e['shift_ci'])} "
                f"| {fmt(e['perplexity']['ratio'])} "
                f"| {'n/a' if acc is None else format(acc['delta'], '+.3f')} "
                f"| {fmt(e['cost'].get('processed_tokens_per_generated_token'))} "
                f"| {fmt(1000 * e['cost'].get('seconds_per_generated_token', float('nan')))} |"
            )
        diff = result["steering_minus_prompting"]
        lines += [
            "",
            f"Steering minus prompting: {diff['shift']:+.3f} {fmt_ci(diff['shift_ci'])}.",
        ]
    return "\n".join(lines)
