"""Branch 2C patching_layers: denoising and noising at every layer and position of prompt pairs.

Reads the prompt pairs (--pairs) and patches the model (model_ref in --params, or --model). Its
parameters are the keys of experiments.patching_layers with the study's seed and the extraction's
dtype and device, given as --params (the workflow passes them); the common flags override them
(--n-samples: n_pairs). The strongest cell is chosen on a selection part of the usable pairs and
reported on the held-out part (grouped by entity, split as PM3's). Writes results.json,
config.json, summary.md, figure_data.json (heatmaps and by-layer curves) and per_pair.jsonl
(every cell's logit difference per pair, its group and its part) to --output-dir.
"""

from __future__ import annotations

from pathlib import Path

from actspace.branches.patching.patching_layers import (
    figure_data,
    run_layer_position_sweep,
    summary_markdown,
)
from actspace.core.cli import (
    model_path,
    one_line_errors,
    schema_defaults,
    step_params,
    step_parser,
)
from actspace.core.io import atomic_write_json, write_experiment, write_jsonl
from actspace.core.progress import optional_progress
from actspace.lm.models import ModelLoadError, load_model
from actspace.methods.patching import load_prompt_pairs

#: What --params must hold: experiments.patching_layers' keys the step reads, and the extras.
REQUIRED = (
    "n_pairs",
    "layers",
    "max_batch",
    "selection_fraction",
    "n_bootstrap",
    "seed",
    "dtype",
    "device",
)


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__, section="experiments.patching_layers")
    parser.add_argument("--pairs", required=True, type=Path, help="prompt_pairs.jsonl")
    parser.add_argument(
        "--progress-file", help="keep a progress file here (results/progress/...; for status.py)"
    )
    args = parser.parse_args(argv)
    with one_line_errors(ModelLoadError):
        params = step_params(args, required=REQUIRED)
        if "n_samples" in params:  # the common flag --n-samples sets this step's n_pairs
            params["n_pairs"] = params.pop("n_samples")
        if params["selection_fraction"] is None:  # run by hand: PM3's, as the workflow resolves
            params["selection_fraction"] = schema_defaults("premortems.pm3")["selection_fraction"]
        path, revision = model_path(params)
        pairs = load_prompt_pairs(args.pairs, n_pairs=params["n_pairs"], seed=params["seed"])
        with optional_progress(args.progress_file, step="patching_layers") as progress:
            model, tokenizer = load_model(
                path, dtype=params["dtype"], device=params["device"], revision=revision
            )
            results, per_pair = run_layer_position_sweep(
                model,
                tokenizer,
                pairs,
                layers=params["layers"],
                max_batch=params["max_batch"],
                n_bootstrap=params["n_bootstrap"],
                seed=params["seed"],
                selection_fraction=params["selection_fraction"],
                progress=progress,
            )
    results["model"] = path
    config = {
        "experiment": "patching_layers",
        **params,
        "pairs": str(args.pairs),
        "model_dtype": str(next(model.parameters()).dtype),
    }
    write_jsonl(args.output_dir / "per_pair.jsonl", per_pair)
    atomic_write_json(args.output_dir / "figure_data.json", figure_data(results))
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    print(
        f"patching_layers: {results['n_usable']} usable pairs, strongest layer "
        f"{results.get('strongest_layer')} (chosen on the selection pairs), held-out change rate "
        f"{results['value']} CI {results['ci']} (n = {results['n']})"
    )


if __name__ == "__main__":
    main()
