"""Branch 2C patching_vs_prompting: the best steering setting against a prompt that asks for it.

Reads behavior_edit's output folder (--behavior-edit: its best setting per attribute, chosen on
the selection prompts, and its steering vectors) and, on behavior_edit's *report* prompts,
generates unsteered, steered and prompted (a prefix in front of each prompt) continuations; the
perplexity side effect is on behavior_edit's report neutral texts (not those that checked its
budget), so nothing it reports chose the setting.
Reports attribute shift, side effects (neutral-text perplexity, task accuracy) and compute cost
(forward passes, tokens processed, time per generated token) side by side. Its parameters are the
keys of experiments.patching_vs_prompting, with experiments.behavior_edit under ``behavior_edit``
(sampling, scorers, side effects), the run's seed, the model reference (and model_source) and the
extraction's dtype and device, given as --params (the workflow passes them); the common flags
override them (--n-samples: n_prompts), and so do --attribute-sets and --prompts. Writes
results.json, config.json, summary.md and generations.jsonl to --output-dir.
"""

from __future__ import annotations

import time
from pathlib import Path

from actspace.branches.patching.patching_vs_prompting import (
    load_prompting_data,
    prompting_results,
    run_patching_vs_prompting,
    summary_markdown,
)
from actspace.core.cli import (
    model_path,
    one_line_errors,
    schema_defaults,
    step_params,
    step_parser,
)
from actspace.core.io import write_experiment, write_jsonl
from actspace.lm.models import ModelLoadError, load_model
from actspace.methods.steering import SamplingSettings

#: What --params must hold: experiments.patching_vs_prompting's keys, behavior_edit's section
#: and the extras.
REQUIRED = ("prefixes", "n_prompts", "timing_repeats", "behavior_edit", "seed", "dtype", "device")


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__, section="experiments.patching_vs_prompting")
    parser.add_argument(
        "--behavior-edit",
        required=True,
        type=Path,
        help="behavior_edit's output folder (results.json, vectors.safetensors)",
    )
    parser.add_argument("--attribute-sets", type=Path, help="contrast sets (attributes.jsonl)")
    parser.add_argument("--prompts", type=Path, help="neutral prompts (neutral_prompts.jsonl)")
    parser.add_argument("--task-file", type=Path, help="the side-effect task (JSONL)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with one_line_errors(ModelLoadError):
        params = step_params(args, required=tuple(k for k in REQUIRED if k != "behavior_edit"))
        params.setdefault("behavior_edit", schema_defaults("experiments.behavior_edit"))
        if "n_samples" in params:  # the common flag --n-samples sets this step's n_prompts
            params["n_prompts"] = params.pop("n_samples")
        edit = params["behavior_edit"]
        files = {key: str(getattr(args, key) or edit[key]) for key in ("attribute_sets", "prompts")}
        if args.model is not None or "model_source" not in params:
            params["model_source"] = "auto"  # the workflow passes the configured model's source
        path, revision = model_path(params)
        settings = SamplingSettings.from_section(edit)
        data = load_prompting_data(
            edit_folder=args.behavior_edit,
            attribute_sets=files["attribute_sets"],
            prompts=files["prompts"],
            task_file=args.task_file,
            model=path,
            model_source=params["model_source"],
            n_prompts=params["n_prompts"],
            side_task_items=edit["side_task_items"],
        )
        model, tokenizer = load_model(
            path, dtype=params["dtype"], device=params["device"], revision=revision
        )
        attributes, rows = run_patching_vs_prompting(
            model,
            tokenizer,
            data,
            prefixes=params["prefixes"],
            timing_repeats=params["timing_repeats"],
            scorers=edit["scorers"],
            settings=settings,
            n_bootstrap=edit["n_bootstrap"],
            seed=params["seed"],
            device=params["device"],
        )
    results = prompting_results(
        attributes,
        data,
        model=path,
        seed=params["seed"],
        samples_per_prompt=settings.samples_per_prompt,
        duration_s=round(time.perf_counter() - start, 3),
    )
    config = {
        "experiment": "patching_vs_prompting",
        **params,
        **files,
        "behavior_edit_folder": str(args.behavior_edit),
        "task_file": None if args.task_file is None else str(args.task_file),
        "prefixes": {
            a: r["methods"]["prompting"]["prefix"] for a, r in attributes.items() if "methods" in r
        },
        "model_dtype": str(next(model.parameters()).dtype),
    }
    write_jsonl(args.output_dir / "generations.jsonl", rows)
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    for attribute, result in attributes.items():
        if "methods" not in result:
            print(f"patching_vs_prompting {attribute}: {result['note']}")
            continue
        methods = result["methods"]
        print(
            f"patching_vs_prompting {attribute}: steering shift "
            f"{methods['steering']['shift']:+.4f}, prompting shift "
            f"{methods['prompting']['shift']:+.4f}"
        )


if __name__ == "__main__":
    main()
