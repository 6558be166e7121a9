"""Branch 2C patching_vs_prompting: the best steering setting against a prompt that asks for it.

Reads behavior_edit's results (its best setting per attribute, chosen on the selection prompts, and
its steering vectors) and, on behavior_edit's *report* prompts, generates unsteered, steered and
prompted (a configured prefix in front of each prompt) continuations. Reports attribute shift,
side effects (neutral-text perplexity, task accuracy) and compute cost (forward passes, tokens
processed, time per generated token) side by side. Writes results.json, config.json, summary.md
and generations.jsonl to --output-dir.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

from actspace.branches.patching.behavior_edit import (
    MODEL_SOURCES,
    SamplingSettings,
    SideEffectData,
    Steering,
    compare_methods,
    default_prefix,
    infer_model_source,
    load_contrast_pairs,
    load_neutral_prompts,
    load_task_items,
)
from actspace.core.io import read_json, write_experiment, write_jsonl
from actspace.lm.models import ModelLoadError, load_model
from actspace.methods.scorers import make_scorer


def parse_json_object(text: str, flag: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag} is not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local model folder or hub id")
    parser.add_argument("--model-source", choices=MODEL_SOURCES, default="auto")
    parser.add_argument("--revision", default=None, help="hub revision of the model")
    parser.add_argument(
        "--behavior-edit",
        type=Path,
        default=Path("results/experiments/behavior_edit"),
        help="behavior_edit's output folder (results.json, vectors.safetensors)",
    )
    parser.add_argument(
        "--attribute-sets", type=Path, default=Path("results/world/attributes.jsonl")
    )
    parser.add_argument("--prompts", type=Path, default=Path("results/world/neutral_prompts.jsonl"))
    parser.add_argument("--task-file", type=Path, default=None, help="side-effect task (JSONL)")
    parser.add_argument("--n-task-items", type=int, default=100)
    parser.add_argument("--prefixes-json", default="{}", help="per attribute: a prefix or null")
    parser.add_argument("--scorers-json", default="{}", help="as behavior_edit's")
    parser.add_argument("--n-samples", type=int, default=None, help="cap on report prompts")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument(
        "--timing-repeats", type=int, default=3, help="runs per method; median time is kept"
    )
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output-dir", type=Path, default=Path("results/experiments/patching_vs_prompting")
    )
    return parser


def _behavior_edit(folder: Path) -> tuple[dict, dict]:
    results_file, vectors_file = folder / "results.json", folder / "vectors.safetensors"
    for path in (results_file, vectors_file):
        if not path.is_file():
            raise ValueError(f"behavior_edit output not found: {path} (run behavior_edit first)")
    results = read_json(results_file)
    if results.get("experiment") != "behavior_edit" or "attributes" not in results:
        raise ValueError(f"{results_file} is not a behavior_edit results file")
    return results, load_file(str(vectors_file))


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    edit, vectors = _behavior_edit(args.behavior_edit)
    prefixes = parse_json_object(args.prefixes_json, "--prefixes-json")
    scorer_specs = parse_json_object(args.scorers_json, "--scorers-json")
    if args.timing_repeats < 1:
        raise ValueError(f"--timing-repeats must be at least 1, got {args.timing_repeats}")
    settings = SamplingSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        samples_per_prompt=args.samples_per_prompt,
        batch_size=args.batch_size,
    )
    by_id = {p["id"]: p for p in load_neutral_prompts(args.prompts)}
    missing = [i for i in edit["report_ids"] if i not in by_id]
    if missing:
        raise ValueError(
            f"{args.prompts} lacks {len(missing)} of behavior_edit's report prompts "
            f"(first: {missing[0]}); use the prompts file behavior_edit ran on"
        )
    prompts = [by_id[i] for i in edit["report_ids"]][: args.n_samples]
    if len(prompts) < 2:
        raise ValueError(f"need at least 2 report prompts, got {len(prompts)}")
    pairs = {p.id: p for ps in load_contrast_pairs(args.attribute_sets).values() for p in ps}
    absent = [i for i in edit["neutral_text_pair_ids"] if i not in pairs]
    if absent:
        raise ValueError(f"{args.attribute_sets} lacks behavior_edit's neutral pair {absent[0]}")
    texts = [pairs[i].negative for i in edit["neutral_text_pair_ids"]]
    side = SideEffectData(texts=texts, items=load_task_items(args.task_file, args.n_task_items))
    source = infer_model_source(args.model, args.model_source)
    model, tokenizer = load_model(
        args.model, dtype=args.dtype, device=args.device, revision=args.revision
    )

    attributes: dict = {}
    rows: list[dict] = []
    for attribute, info in edit["attributes"].items():
        best = info["best"]
        key = f"{attribute}.layer{best['layer']}"
        if key not in vectors:
            raise ValueError(f"{args.behavior_edit}/vectors.safetensors has no vector {key}")
        prefix = prefixes.get(attribute) or default_prefix(attribute, source)
        scorer = make_scorer(
            attribute, scorer_specs.get(attribute), model_source=source, device=args.device
        )
        result, generated = compare_methods(
            model,
            tokenizer,
            attribute=attribute,
            scorer=scorer,
            prompts=prompts,
            steering=Steering(best["layer"], vectors[key], best["coefficient"]),
            prefix=prefix,
            side=side,
            settings=settings,
            seed=args.seed,
            n_bootstrap=args.n_bootstrap,
            vector_cost=info.get("vector_cost"),
            timing_repeats=args.timing_repeats,
        )
        result["best_setting"] = {
            "layer": best["layer"],
            "coefficient": best["coefficient"],
            "selection_shift": best["selection_shift"],
            "chosen_on": "behavior_edit selection prompts",
        }
        attributes[attribute] = result
        rows.extend(generated)

    results = {
        "experiment": "patching_vs_prompting",
        "model": args.model,
        "model_source": source,
        "seed": args.seed,
        "n_prompts": len(prompts),
        "prompt_ids": [p["id"] for p in prompts],
        "samples_per_prompt": settings.samples_per_prompt,
        "n_neutral_texts": len(side.texts),
        "n_task_items": len(side.items),
        "attributes": attributes,
        "headlines": [
            {
                "label": attribute,
                "metric": "steering_minus_prompting_shift",
                "value": result["steering_minus_prompting"]["shift"],
                "ci": result["steering_minus_prompting"]["shift_ci"],
                "n": result["n"],
                "success": None,
                "comparison": result["comparison"],
            }
            for attribute, result in attributes.items()
        ],
        "duration_s": round(time.perf_counter() - start, 3),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    config = {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "prefixes": {a: r["methods"]["prompting"]["prefix"] for a, r in attributes.items()},
        "scorers": scorer_specs,
        "model_dtype": str(next(model.parameters()).dtype),
    }
    write_jsonl(args.output_dir / "generations.jsonl", rows)
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    for attribute, result in attributes.items():
        methods = result["methods"]
        print(
            f"patching_vs_prompting {attribute}: steering shift "
            f"{methods['steering']['shift']:+.4f}, prompting shift "
            f"{methods['prompting']['shift']:+.4f}"
        )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fmt_ci(ci: list) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def summary_markdown(results: dict) -> str:
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
            f"| unsteered | {_fmt(base['score']['mean'])} | | | 1 | "
            f"| {_fmt(base['cost'].get('processed_tokens_per_generated_token'))} "
            f"| {_fmt(1000 * base['cost'].get('seconds_per_generated_token', float('nan')))} |"
        )
        for name in ("steering", "prompting"):
            e = m[name]
            acc = e.get("accuracy")
            lines.append(
                f"| {name} | {_fmt(e['score'])} | {e['shift']:+.3f} | {_fmt_ci(e['shift_ci'])} "
                f"| {_fmt(e['perplexity']['ratio'])} "
                f"| {'n/a' if acc is None else format(acc['delta'], '+.3f')} "
                f"| {_fmt(e['cost'].get('processed_tokens_per_generated_token'))} "
                f"| {_fmt(1000 * e['cost'].get('seconds_per_generated_token', float('nan')))} |"
            )
        diff = result["steering_minus_prompting"]
        lines += [
            "",
            f"Steering minus prompting: {diff['shift']:+.3f} {_fmt_ci(diff['shift_ci'])}.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, ModelLoadError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
