"""Branch 2B error_prediction_extended: PM2's correctness probe at every layer of every store.

Reads activation stores (folders results/activations/{model}/{task}); writes results.json,
config.json, summary.md and figure_data.json (curves, reliability data, transfer matrices) to
--output-dir.
"""

from __future__ import annotations

import argparse
import sys

from actspace.branches.error_prediction.error_prediction_extended import (
    add_store_arguments,
    figure_data,
    open_stores,
    optional_int,
    optional_layers,
    run_error_prediction_extended,
    summary_markdown,
    write_store_experiment,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add_store_arguments(parser)
    parser.add_argument("--layers", default="all", help="comma-separated layers, or all")
    parser.add_argument("--n-bins", type=int, default=10, help="reliability-diagram bins")
    parser.add_argument("--group-key", default="bucket", help="metadata key to group items by")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        layers = optional_layers(args.layers)
        n_samples = optional_int(args.n_samples)
        stores = open_stores(args.stores)
        results = run_error_prediction_extended(
            stores,
            layers=layers,
            pooling=args.pooling,
            n_samples=n_samples,
            test_fraction=args.test_fraction,
            cv_folds=args.cv_folds,
            Cs=args.Cs,
            n_bootstrap=args.n_bootstrap,
            n_bins=args.n_bins,
            group_key=args.group_key or None,
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
        sel = r["selected"]
        print(
            f"{r['model']}/{r['task']}: layer {r['selected_layer']} balanced accuracy "
            f"{sel['balanced_accuracy']:.3f} [{sel['ci'][0]:.3f}, {sel['ci'][1]:.3f}], "
            f"confidence {r['baselines']['confidence']['balanced_accuracy']:.3f}"
        )


if __name__ == "__main__":
    main()
