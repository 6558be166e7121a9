"""Branch 2C behavior_edit: steer toward an attribute with a contrastive steering vector.

For each attribute, a mean-difference vector from the contrast sets is added at each layer with
each coefficient while the model continues neutral prompts; the attribute score of the
continuations is compared with unsteered generation, and the side effect is measured as the
perplexity of neutral text and the accuracy on a task. Writes results.json, config.json,
summary.md, vectors.safetensors and generations.jsonl to --output-dir.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from safetensors.torch import save_file

from actspace.branches.patching.behavior_edit import (
    MODEL_SOURCES,
    POOLINGS,
    SamplingSettings,
    SideEffectData,
    check_layers,
    default_layers,
    infer_model_source,
    load_contrast_pairs,
    load_neutral_prompts,
    load_task_items,
    neutral_texts,
    run_behavior_edit,
    vector_split,
)
from actspace.core.io import write_experiment, write_jsonl
from actspace.core.progress import optional_progress
from actspace.lm.models import ModelLoadError, load_model, num_layers
from actspace.methods.scorers import make_scorer
from actspace.world.attributes import ATTRIBUTES


def parse_ints(text: str | None, flag: str) -> list[int] | None:
    """``"1,2,3"`` -> ``[1, 2, 3]``; None or empty -> None."""
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers, got {text!r}") from None


def parse_floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} is empty")
    return values


def parse_json_object(text: str, flag: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"{flag} is not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object")
    return value


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags behavior_edit and patching_vs_prompting share."""
    parser.add_argument("--model", required=True, help="local model folder or hub id")
    parser.add_argument("--model-source", choices=MODEL_SOURCES, default="auto")
    parser.add_argument("--revision", default=None, help="hub revision of the model")
    parser.add_argument(
        "--attribute-sets", type=Path, default=Path("results/world/attributes.jsonl")
    )
    parser.add_argument("--prompts", type=Path, default=Path("results/world/neutral_prompts.jsonl"))
    parser.add_argument("--task-file", type=Path, default=None, help="side-effect task (JSONL)")
    parser.add_argument("--n-task-items", type=int, default=100)
    parser.add_argument(
        "--scorers-json", default="{}", help="per attribute: {kind, classifier, ...}"
    )
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--attributes", default=",".join(ATTRIBUTES))
    parser.add_argument("--layers", default=None, help="comma-separated, 1..L; default: 3 spread")
    parser.add_argument("--coefficients", default="2,4,6", help="use --coefficients=-4,4")
    parser.add_argument("--pooling", choices=POOLINGS, default="mean")
    parser.add_argument("--n-vector-pairs", type=int, default=None, help="default: half")
    parser.add_argument("--n-samples", type=int, default=None, help="number of prompts")
    parser.add_argument("--n-neutral-texts", type=int, default=50)
    parser.add_argument("--selection-fraction", type=float, default=0.5)
    parser.add_argument("--max-perplexity-ratio", type=float, default=None)
    parser.add_argument(
        "--output-dir", type=Path, default=Path("results/experiments/behavior_edit")
    )
    parser.add_argument(
        "--progress-file", help="keep a progress file here (results/progress/...; for status.py)"
    )
    return parser


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    attributes = [a.strip() for a in args.attributes.split(",") if a.strip()]
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown or not attributes:
        raise ValueError(f"--attributes: {unknown or 'none'} not allowed (allowed: {ATTRIBUTES})")
    coefficients = parse_floats(args.coefficients, "--coefficients")
    scorer_specs = parse_json_object(args.scorers_json, "--scorers-json")
    settings = SamplingSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        samples_per_prompt=args.samples_per_prompt,
        batch_size=args.batch_size,
    )
    pairs = load_contrast_pairs(args.attribute_sets)
    missing = [a for a in attributes if a not in pairs]
    if missing:
        raise ValueError(f"{args.attribute_sets} has no contrast pairs for {', '.join(missing)}")
    prompts = load_neutral_prompts(args.prompts)
    if args.n_samples is not None:
        if args.n_samples < 2:
            raise ValueError(f"--n-samples must be at least 2, got {args.n_samples}")
        prompts = prompts[: args.n_samples]
    split = {a: vector_split(len(pairs[a]), args.n_vector_pairs, args.seed) for a in pairs}
    texts = neutral_texts(pairs, {a: s[1] for a, s in split.items()}, args.n_neutral_texts)
    items = load_task_items(args.task_file, args.n_task_items)
    source = infer_model_source(args.model, args.model_source)
    scorers = {
        a: make_scorer(a, scorer_specs.get(a), model_source=source, device=args.device)
        for a in attributes
    }
    with optional_progress(args.progress_file, step=f"behavior_edit seed{args.seed}") as progress:
        model, tokenizer = load_model(
            args.model, dtype=args.dtype, device=args.device, revision=args.revision
        )
        n_blocks = num_layers(model)
        layers = check_layers(
            parse_ints(args.layers, "--layers") or default_layers(n_blocks), n_blocks
        )
        results, generations, vectors = run_behavior_edit(
            model,
            tokenizer,
            pairs=pairs,
            prompts=prompts,
            scorers=scorers,
            layers=layers,
            coefficients=coefficients,
            side=SideEffectData(texts=texts, items=items),
            vector_pairs={a: split[a][0] for a in attributes},
            settings=settings,
            pooling=args.pooling,
            seed=args.seed,
            selection_fraction=args.selection_fraction,
            max_perplexity_ratio=args.max_perplexity_ratio,
            n_bootstrap=args.n_bootstrap,
            progress=progress,
        )
    toxicity_held_out = split["toxicity"][1][: len(texts)]
    results = {
        "experiment": "behavior_edit",
        "model": args.model,
        "model_source": source,
        "seed": args.seed,
        **results,
        "neutral_text_pair_ids": [pairs["toxicity"][i].id for i in toxicity_held_out],
        "vector_pair_ids": {a: [pairs[a][i].id for i in split[a][0]] for a in attributes},
        "task_file": None if args.task_file is None else str(args.task_file),
        "n_task_items": len(items),
        "duration_s": round(time.perf_counter() - start, 3),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "headlines": [
            headline(attribute, results["attributes"][attribute]) for attribute in attributes
        ],
    }
    config = {
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "attributes": attributes,
        "layers": layers,
        "coefficients": coefficients,
        "scorers": scorer_specs,
        "model_dtype": str(next(model.parameters()).dtype),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {f"{a}.layer{k}": v.contiguous() for a, vecs in vectors.items() for k, v in vecs.items()},
        str(args.output_dir / "vectors.safetensors"),
        metadata={"pooling": args.pooling, "layers": ",".join(map(str, layers))},
    )
    write_jsonl(args.output_dir / "generations.jsonl", generations)
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    for attribute in attributes:
        best = results["attributes"][attribute]["best"]
        report = best["report"]
        print(
            f"behavior_edit {attribute}: best layer {best['layer']} x {best['coefficient']:g}: "
            f"shift {report['shift']:+.4f} CI {report['shift_ci']}, "
            f"perplexity x{best['perplexity']['ratio']:.3f}"
        )


def headline(attribute: str, result: dict) -> dict:
    """The attribute's main result: the report-prompt shift at the best setting; success means
    its CI lies above zero (steering raised the score on prompts it was not chosen on)."""
    best = result["best"]
    shift, ci = best["report"]["shift"], best["report"]["shift_ci"]
    return {
        "label": attribute,
        "metric": "attribute_shift_at_best_setting",
        "value": shift,
        "ci": ci,
        "n": best["report"]["n"],
        "success": bool(ci[0] is not None and ci[0] > 0),
        "success_rule": "the report prompts' shift has a 95% CI above 0",
        "setting": {"layer": best["layer"], "coefficient": best["coefficient"]},
        "comparison": best["comparison"],
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _fmt_ci(ci: list) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def summary_markdown(results: dict) -> str:
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
        f"neutral held-out sentences (baseline {_fmt(side['baseline_perplexity'])}) and task "
        f"accuracy (baseline {_fmt(side['baseline_accuracy'])}, {side['n_task_items']} items).",
    ]
    for attribute, info in results["attributes"].items():
        base = info["baseline"]["report"]
        lines += [
            "",
            f"## {attribute} (scorer: {info['scorer']['kind']})",
            "",
            f"Unsteered score {_fmt(base['mean'])} {_fmt_ci(base['ci'])}.",
            "",
            "| layer | coefficient | score | shift | 95% CI | perplexity ratio | accuracy change |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for g in info["grid"]:
            acc = g.get("accuracy")
            lines.append(
                f"| {g['layer']} | {g['coefficient']:g} | {_fmt(g['report']['score'])} "
                f"| {g['report']['shift']:+.3f} | {_fmt_ci(g['report']['shift_ci'])} "
                f"| {_fmt(g['perplexity']['ratio'])} "
                f"| {'n/a' if acc is None else format(acc['delta'], '+.3f')} |"
            )
        best = info["best"]
        budget = "" if best["within_perplexity_budget"] else " (no setting met the budget)"
        lines += [
            "",
            f"Best (chosen on the selection prompts): layer {best['layer']}, coefficient "
            f"{best['coefficient']:g}: shift {best['report']['shift']:+.3f} "
            f"{_fmt_ci(best['report']['shift_ci'])}{budget}.",
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
