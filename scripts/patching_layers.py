"""Branch 2C patching_layers: denoising and noising at every layer and position of prompt pairs.

Writes results.json, config.json, summary.md, figure_data.json (heatmaps and by-layer curves) and
per_pair.jsonl (every cell's logit difference per pair) to --output-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actspace.branches.error_prediction.error_prediction_extended import (
    optional_int,
    optional_layers,
)
from actspace.branches.patching.patching_layers import (
    figure_data,
    run_patching_layers_sweep,
    summary_markdown,
)
from actspace.core.io import atomic_write_json, write_experiment, write_jsonl
from actspace.core.progress import optional_progress
from actspace.lm.models import ModelLoadError, load_model
from actspace.methods.patching import load_prompt_pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local model folder or hub id")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--pairs", required=True, type=Path, help="prompt_pairs.jsonl")
    parser.add_argument("--n-samples", default="all", help="use the first N pairs (default all)")
    parser.add_argument("--layers", default="all", help="comma-separated, or all (0..L)")
    parser.add_argument("--max-batch", type=int, default=256, help="patched rows per forward")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument(
        "--progress-file", help="keep a progress file here (results/progress/...; for status.py)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        n_samples = optional_int(args.n_samples)
        layers = optional_layers(args.layers)
        if args.max_batch < 1:
            raise ValueError(f"--max-batch must be positive, got {args.max_batch}")
        pairs = load_prompt_pairs(args.pairs)[:n_samples]
        with optional_progress(args.progress_file, step="patching_layers") as progress:
            model, tokenizer = load_model(
                args.model, dtype=args.dtype, device=args.device, revision=args.revision
            )
            results, per_pair = run_patching_layers_sweep(
                model,
                tokenizer,
                pairs,
                layers=layers,
                max_batch=args.max_batch,
                n_bootstrap=args.n_bootstrap,
                seed=args.seed,
                progress=progress,
            )
    except (ValueError, ModelLoadError) as error:
        sys.exit(f"error: {error}")
    results["model"] = args.model
    config = {
        "experiment": "patching_layers",
        "model": args.model,
        "revision": args.revision,
        "pairs": str(args.pairs),
        "n_samples": n_samples,
        "layers": layers,
        "max_batch": args.max_batch,
        "n_bootstrap": args.n_bootstrap,
        "seed": args.seed,
        "dtype": args.dtype,
        "device": args.device,
        "model_dtype": str(next(model.parameters()).dtype),
    }
    write_jsonl(args.output_dir / "per_pair.jsonl", per_pair)
    atomic_write_json(args.output_dir / "figure_data.json", figure_data(results))
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    print(
        f"patching_layers: {results['n_usable']} usable pairs, strongest layer "
        f"{results.get('strongest_layer')}"
    )


if __name__ == "__main__":
    main()
