"""PM1 cross-model similarity: held-out correlation after a ridge projection between models.

Reads one activation store per model (the same task and items) and writes results.json,
config.json and summary.md to --output-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actspace.core.io import write_experiment
from actspace.core.store import open_named_stores
from actspace.methods.similarity import DEFAULT_ALPHAS
from actspace.premortems.pm12 import run_pm1, summary_markdown


def _alpha(text: str) -> float | tuple[float, ...]:
    """A fixed ridge penalty, a comma-separated grid, or ``auto`` (the default grid)."""
    if text == "auto":
        return DEFAULT_ALPHAS
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--ridge-alpha must be a number, a comma-separated list or 'auto', got {text!r}"
        ) from None
    if any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"--ridge-alpha values must be positive, got {text!r}")
    return values[0] if len(values) == 1 else values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stores", required=True, help="comma-separated activation store folders")
    parser.add_argument(
        "--model-names", help="comma-separated names, one per store (default: meta.json model)"
    )
    parser.add_argument("--layer-depth", type=float, default=0.5, help="relative depth in [0, 1]")
    parser.add_argument("--pooling", default="last", help="pooled activations to compare")
    parser.add_argument("--n-samples", type=int, default=None, help="items to use (default all)")
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--ridge-alpha", type=_alpha, default="auto", help="number, list or auto")
    parser.add_argument("--n-permutations", type=int, default=5)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", required=True, type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        named = open_named_stores(args.stores, args.model_names)
        results = run_pm1(
            named,
            layer_depth=args.layer_depth,
            pooling=args.pooling,
            test_fraction=args.test_fraction,
            ridge_alpha=args.ridge_alpha,
            n_permutations=args.n_permutations,
            n_bootstrap=args.n_bootstrap,
            seed=args.seed,
            threshold=args.threshold,
            n_samples=args.n_samples,
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    config = {
        "premortem": "pm1",
        "stores": {name: str(store.path) for name, store in named.items()},
        "layer_depth": args.layer_depth,
        "pooling": args.pooling,
        "n_samples": args.n_samples,
        "test_fraction": args.test_fraction,
        "ridge_alpha": args.ridge_alpha,
        "n_permutations": args.n_permutations,
        "n_bootstrap": args.n_bootstrap,
        "threshold": args.threshold,
        "seed": args.seed,
    }
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    print(
        f"pm1 {results['metric']} = {results['value']:.3f} "
        f"[{results['ci'][0]:.3f}, {results['ci'][1]:.3f}] -> {results['verdict']}"
    )


if __name__ == "__main__":
    main()
