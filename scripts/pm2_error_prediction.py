"""PM2 error prediction: a linear probe on one layer predicts whether the model answered correctly.

Reads one activation store (one model on one task) and writes results.json, config.json and
summary.md to --output-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actspace.core.io import write_experiment
from actspace.core.store import ActivationStore
from actspace.premortems.pm12 import run_pm2, summary_markdown


def _layer(text: str) -> int | None:
    """A layer index (0 = embeddings) or ``auto`` (chosen on a validation split)."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layer must be a layer index or 'auto', got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--layer must be 0 or more, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True, type=Path, help="activation store folder")
    parser.add_argument("--layer", type=_layer, default="auto", help="layer index or auto")
    parser.add_argument("--pooling", default="last", help="pooled activations to probe")
    parser.add_argument("--n-samples", type=int, default=None, help="items to use (default all)")
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--threshold", type=float, default=0.55)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", required=True, type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        store = ActivationStore(args.store)
        results = run_pm2(
            store,
            layer=args.layer,
            pooling=args.pooling,
            test_fraction=args.test_fraction,
            val_fraction=args.val_fraction,
            cv_folds=args.cv_folds,
            n_bootstrap=args.n_bootstrap,
            seed=args.seed,
            threshold=args.threshold,
            n_samples=args.n_samples,
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    config = {
        "premortem": "pm2",
        "store": str(args.store),
        "model": store.meta.get("model"),
        "task": store.meta.get("task"),
        "layer": "auto" if args.layer is None else args.layer,
        "pooling": args.pooling,
        "n_samples": args.n_samples,
        "test_fraction": args.test_fraction,
        "val_fraction": args.val_fraction,
        "cv_folds": args.cv_folds,
        "n_bootstrap": args.n_bootstrap,
        "threshold": args.threshold,
        "seed": args.seed,
    }
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    print(
        f"pm2 {results['metric']} = {results['value']:.3f} "
        f"[{results['ci'][0]:.3f}, {results['ci'][1]:.3f}] at layer {results['layer']} "
        f"-> {results['verdict']}"
    )


if __name__ == "__main__":
    main()
