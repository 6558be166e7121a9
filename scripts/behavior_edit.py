"""Branch 2C behavior_edit: steer toward an attribute with a contrastive steering vector.

For each attribute, a mean-difference vector from the contrast sets is added at each layer with
each coefficient while the model continues neutral prompts; the attribute score of the
continuations is compared with unsteered generation, and the side effect is measured as the
perplexity of neutral text and the accuracy on a task (--task-file, its first side_task_items).
The best setting is chosen on the selection prompts among settings within the perplexity budget
on half the neutral texts; it is reported on the other prompts and the other half of the texts,
beside a random direction of the same norm (see actspace.branches.patching.edit_choice).
Its parameters are the keys of experiments.behavior_edit with the run's seed, the model reference
(and model_source) and the extraction's dtype and device, given as --params (the workflow passes
them); the common flags override them (--n-samples: n_prompts), and so do --attribute-sets and
--prompts. Without either, builtin_sets picks: the shipped real-English sets for any model but a
built-in organism (auto), whose world files must be passed. Coefficients are relative to the
residual stream's norm at the steered layer; vectors.safetensors holds the vectors coefficient 1
adds. Writes results.json, config.json, summary.md, vectors.safetensors and generations.jsonl to
--output-dir.
"""

from __future__ import annotations

import time
from pathlib import Path

from safetensors.torch import save_file

from actspace.branches.patching.behavior_edit import (
    builtin_files,
    edit_results,
    infer_model_source,
    load_edit_data,
    run_behavior_edit,
    summary_markdown,
)
from actspace.core.cli import model_path, one_line_errors, step_params, step_parser
from actspace.core.io import write_experiment, write_jsonl
from actspace.core.progress import optional_progress
from actspace.lm.models import ModelLoadError, load_model
from actspace.methods.steering import SamplingSettings

#: What --params must hold: experiments.behavior_edit's keys the step reads, and the extras.
REQUIRED = (
    "attributes",
    "attribute_sets",
    "prompts",
    "layers",
    "coefficients",
    "pooling",
    "n_vector_pairs",
    "n_prompts",
    "selection_fraction",
    "max_perplexity_ratio",
    "n_neutral_texts",
    "side_task_items",
    "max_new_tokens",
    "temperature",
    "top_k",
    "samples_per_prompt",
    "batch_size",
    "n_bootstrap",
    "scorers",
    "seed",
    "dtype",
    "device",
)


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__, section="experiments.behavior_edit")
    parser.add_argument("--attribute-sets", type=Path, help="contrast sets (attributes.jsonl)")
    parser.add_argument("--prompts", type=Path, help="neutral prompts (neutral_prompts.jsonl)")
    parser.add_argument("--task-file", type=Path, help="the side-effect task (JSONL)")
    parser.add_argument(
        "--progress-file", help="keep a progress file here (results/progress/...; for status.py)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with one_line_errors(ModelLoadError):
        params = step_params(args, required=REQUIRED)
        if "n_samples" in params:  # the common flag --n-samples sets this step's n_prompts
            params["n_prompts"] = params.pop("n_samples")
        if args.model is not None or "model_source" not in params:
            params["model_source"] = "auto"  # the workflow passes the configured model's source
        path, revision = model_path(params)
        source = infer_model_source(path, params["model_source"])
        shipped = builtin_files(params.get("builtin_sets", "auto"), source)
        for key in ("attribute_sets", "prompts"):
            if getattr(args, key) is not None:
                params[key] = str(getattr(args, key))
            params[key] = params[key] or (shipped or {}).get(key)
            if not params[key]:
                flag = "--" + key.replace("_", "-")
                raise ValueError(
                    f"no {key}: pass {flag} (the workflow passes the world's file to organisms)"
                )
        settings = SamplingSettings.from_section(params)
        data = load_edit_data(
            attribute_sets=params["attribute_sets"],
            prompts=params["prompts"],
            task_file=args.task_file,
            model=path,
            model_source=params["model_source"],
            attributes=params["attributes"],
            n_prompts=params["n_prompts"],
            n_vector_pairs=params["n_vector_pairs"],
            n_neutral_texts=params["n_neutral_texts"],
            side_task_items=params["side_task_items"],
            scorers=params["scorers"],
            seed=params["seed"],
            device=params["device"],
        )
        step = f"behavior_edit seed{params['seed']}"
        with optional_progress(args.progress_file, step=step) as progress:
            model, tokenizer = load_model(
                path, dtype=params["dtype"], device=params["device"], revision=revision
            )
            sweep, generations, vectors = run_behavior_edit(
                model,
                tokenizer,
                pairs=data.pairs,
                prompts=data.prompts,
                scorers=data.scorers,
                side=data.side,
                vector_pairs=data.vector_pairs,
                settings=settings,
                layers=params["layers"],
                coefficients=params["coefficients"],
                pooling=params["pooling"],
                selection_fraction=params["selection_fraction"],
                max_perplexity_ratio=params["max_perplexity_ratio"],
                n_bootstrap=params["n_bootstrap"],
                seed=params["seed"],
                progress=progress,
            )
    duration = round(time.perf_counter() - start, 3)
    results = edit_results(sweep, data, model=path, seed=params["seed"], duration_s=duration)
    layers = results["layers"]
    config = {
        "experiment": "behavior_edit",
        **params,
        "task_file": data.task_file,
        "layers": layers,
        "model_dtype": str(next(model.parameters()).dtype),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {f"{a}.layer{k}": v.contiguous() for a, vecs in vectors.items() for k, v in vecs.items()},
        str(args.output_dir / "vectors.safetensors"),
        metadata={
            "pooling": params["pooling"],
            "layers": ",".join(map(str, layers)),
            "convention": results["steering_convention"],
        },
    )
    write_jsonl(args.output_dir / "generations.jsonl", generations)
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    for head in results["headlines"]:
        best = results["attributes"][head["label"]]["best"]
        if best is None:
            print(f"behavior_edit {head['label']}: {head['note']}")
            continue
        report = best["report"]
        print(
            f"behavior_edit {head['label']}: best layer {best['layer']} x "
            f"{best['coefficient']:g}: shift {report['shift']:+.4f} CI {report['shift_ci']}, "
            f"report-text perplexity x{best['perplexity']['ratio']:.3f}, success {head['success']}"
        )


if __name__ == "__main__":
    main()
