"""2A cross_model_extended: every model pair x every layer pair, three alignment measures + nulls.

Reads one activation store per model (the same task and items) and writes results.json,
config.json, summary.md and figure_data.json (the layer-by-layer grids) to --output-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actspace.branches.cross_model.cross_model_extended import (
    run_cross_model_extended,
    summary_markdown,
)
from actspace.core.io import atomic_write_json, write_experiment
from actspace.core.store import open_named_stores
from actspace.methods.similarity import DEFAULT_ALPHAS


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
    parser.add_argument("--pooling", default="last", choices=("last", "mean"))
    parser.add_argument("--n-samples", type=int, default=None, help="items to use (default all)")
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--ridge-alpha", type=_alpha, default="auto", help="number, list or auto")
    parser.add_argument("--k", type=int, default=10, help="neighbours for mutual kNN alignment")
    parser.add_argument("--n-permutations", type=int, default=5)
    parser.add_argument("--n-outlier-dims", type=int, default=3)
    parser.add_argument("--layer-depth", type=float, default=0.5, help="depth of the pair heatmap")
    parser.add_argument(
        "--full-grid",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="every layer pair (default) or only the depth-aligned pairs",
    )
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", required=True, type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        named = open_named_stores(args.stores, args.model_names)
        if not 0.0 <= args.layer_depth <= 1.0:
            raise ValueError(f"--layer-depth must lie in [0, 1], got {args.layer_depth}")
        results, figure_data = run_cross_model_extended(
            named,
            pooling=args.pooling,
            n_samples=args.n_samples,
            test_fraction=args.test_fraction,
            ridge_alpha=args.ridge_alpha,
            k=args.k,
            n_permutations=args.n_permutations,
            n_outlier_dims=args.n_outlier_dims,
            layer_depth=args.layer_depth,
            full_grid=args.full_grid,
            n_bootstrap=args.n_bootstrap,
            seed=args.seed,
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    config = {
        "experiment": "cross_model_extended",
        "stores": {name: str(store.path) for name, store in named.items()},
        **{key: value for key, value in vars(args).items() if key not in ("stores", "output_dir")},
    }
    atomic_write_json(args.output_dir / "figure_data.json", figure_data)
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    print(
        f"cross_model_extended: {results['metric']} = {results['value']:.3f} "
        f"[{results['ci'][0]:.3f}, {results['ci'][1]:.3f}] over {len(results['pairs'])} pairs "
        f"in {results['duration_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
