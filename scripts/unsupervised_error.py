"""Branch 2B unsupervised_error: Contrast-Consistent Search for the model's errors, no labels.

Reads activation stores (folders results/activations/{model}/{task}); writes results.json,
config.json, summary.md and figure_data.json (curves over layers) to --output-dir.
"""

from __future__ import annotations

import argparse
import sys

from actspace.branches.error_prediction.error_prediction_extended import (
    add_store_arguments,
    open_stores,
    optional_int,
    optional_layers,
    write_store_experiment,
)
from actspace.branches.error_prediction.unsupervised_error import (
    figure_data,
    run_unsupervised_error,
    summary_markdown,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add_store_arguments(parser)
    parser.add_argument("--layer", default="auto", help="headline layer, or auto")
    parser.add_argument("--layers", default="all", help="layers of the curve, or all")
    parser.add_argument("--n-restarts", type=int, default=10)
    parser.add_argument("--n-epochs", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--n-random", type=int, default=100, help="random-direction baselines")
    parser.add_argument("--success-ratio", type=float, default=0.8)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        layer = optional_int(args.layer)
        layers = optional_layers(args.layers)
        n_samples = optional_int(args.n_samples)
        stores = open_stores(args.stores)
        results = run_unsupervised_error(
            stores,
            layer=layer,
            layers=layers,
            pooling=args.pooling,
            n_samples=n_samples,
            test_fraction=args.test_fraction,
            n_restarts=args.n_restarts,
            n_epochs=args.n_epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
            n_random=args.n_random,
            cv_folds=args.cv_folds,
            Cs=args.Cs,
            n_bootstrap=args.n_bootstrap,
            success_ratio=args.success_ratio,
            seed=args.seed,
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    write_store_experiment(
        args.output_dir,
        results,
        stores,
        seed=args.seed,
        figures=figure_data(results),
        summary=summary_markdown(results),
    )
    for r in results["stores"]:
        if "skipped" in r:
            print(f"{r['model']}/{r['task']}: skipped ({r['skipped']})")
            continue
        h = r["selected"]
        print(
            f"{r['model']}/{r['task']}: layer {h['layer']} CCS {h['ccs_balanced_accuracy']:.3f}, "
            f"supervised {h['supervised_balanced_accuracy']:.3f}, ratio {h['ratio']:.3f} "
            f"-> {h['ratio_verdict']}"
        )


if __name__ == "__main__":
    main()
