"""Branch 2B abstention: answer only when the correctness probe's P(correct) reaches a threshold.

Reads activation stores (folders results/activations/{model}/{task}); writes results.json,
config.json, summary.md and figure_data.json (risk-coverage curves) to --output-dir.
"""

from __future__ import annotations

import argparse
import sys

from actspace.branches.error_prediction.abstention import run_abstention, summary_markdown
from actspace.branches.error_prediction.error_prediction_extended import (
    add_store_arguments,
    open_stores,
    optional_int,
    write_store_experiment,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add_store_arguments(parser)
    parser.add_argument("--threshold", type=float, default=0.3, help="abstain below P(correct)")
    parser.add_argument("--layer", default="auto", help="probe layer, or auto")
    parser.add_argument("--n-random", type=int, default=200, help="random abstainers drawn")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        layer = optional_int(args.layer)
        n_samples = optional_int(args.n_samples)
        stores = open_stores(args.stores)
        results, figures = run_abstention(
            stores,
            threshold=args.threshold,
            layer=layer,
            pooling=args.pooling,
            n_samples=n_samples,
            test_fraction=args.test_fraction,
            cv_folds=args.cv_folds,
            Cs=args.Cs,
            n_bootstrap=args.n_bootstrap,
            n_random=args.n_random,
            seed=args.seed,
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    write_store_experiment(
        args.output_dir,
        results,
        stores,
        seed=args.seed,
        figures=figures,
        summary=summary_markdown(results),
    )
    for r in results["stores"]:
        if "skipped" in r:
            print(f"{r['model']}/{r['task']}: skipped ({r['skipped']})")
            continue
        p = r["probe"]
        print(
            f"{r['model']}/{r['task']}: coverage {p['coverage']:.3f}, effective accuracy "
            f"{p['effective_accuracy']:.3f} vs plain {p['plain_accuracy']:.3f} "
            f"-> {p['gain_verdict']}"
        )


if __name__ == "__main__":
    main()
