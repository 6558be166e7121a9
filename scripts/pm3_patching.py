"""Pre-mortem PM3: activation patching on clean/corrupted prompt pairs.

Writes results.json, config.json, summary.md (and per_pair.jsonl, the per-pair logit differences)
to --output-dir.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from actspace.core.io import write_experiment, write_jsonl
from actspace.core.progress import optional_progress
from actspace.lm.models import ModelLoadError, load_model
from actspace.methods.patching import POSITIONS, load_prompt_pairs, run_pm3, summary_markdown


def parse_layers(text: str | None) -> list[int] | None:
    """``"0,3,6"`` -> ``[0, 3, 6]``; None or empty -> None (every layer)."""
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--layers must be comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="local model folder or hub id")
    parser.add_argument("--pairs", default="results/tasks/prompt_pairs.jsonl", type=Path)
    parser.add_argument("--position", choices=POSITIONS, default="diff")
    parser.add_argument(
        "--n-samples", type=int, default=None, help="use the first N pairs (default: all)"
    )
    parser.add_argument("--layers", default=None, help="comma-separated; default 0..L")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--selection-fraction", type=float, default=0.5)
    parser.add_argument("--max-batch", type=int, default=None, help="rows per patched forward")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output-dir", default="results/pre_mortems/pm3_patching", type=Path)
    parser.add_argument(
        "--progress-file", help="keep a progress file here (results/progress/...; for status.py)"
    )
    return parser


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    layers = parse_layers(args.layers)
    if args.n_samples is not None and args.n_samples < 1:
        raise ValueError(f"--n-samples must be positive, got {args.n_samples}")
    pairs = load_prompt_pairs(args.pairs)
    if args.n_samples is not None:
        pairs = pairs[: args.n_samples]
    with optional_progress(args.progress_file, step="pm3_patching") as progress:
        model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
        results = run_pm3(
            model,
            tokenizer,
            pairs,
            position=args.position,
            layers=layers,
            n_bootstrap=args.n_bootstrap,
            seed=args.seed,
            threshold=args.threshold,
            selection_fraction=args.selection_fraction,
            max_batch=args.max_batch,
            progress=progress,
        )
    per_pair = results.pop("per_pair")
    results["model"] = args.model
    results["duration_s"] = round(time.perf_counter() - start, 3)
    config = {
        "model": args.model,
        "pairs": str(args.pairs),
        "position": args.position,
        "n_samples": args.n_samples,
        "layers": layers,
        "seed": args.seed,
        "threshold": args.threshold,
        "n_bootstrap": args.n_bootstrap,
        "selection_fraction": args.selection_fraction,
        "max_batch": args.max_batch,
        "dtype": args.dtype,
        "device": args.device,
        "model_dtype": str(next(model.parameters()).dtype),
    }
    write_jsonl(args.output_dir / "per_pair.jsonl", per_pair)
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    print(
        f"pm3: change rate {results['value']:.3f} at layer {results['chosen_layer']} "
        f"(n = {results['n']}), CI {results['ci']}, {results['verdict']}"
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, ModelLoadError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
