"""Branch 2B abstention: answer only when the correctness probe's P(correct) reaches a threshold.

Reads activation stores (folders results/activations/{model}/{task}); writes results.json,
config.json, summary.md and figure_data.json (risk-coverage curves) to --output-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actspace.abstention import run_abstention, summary_markdown
from actspace.error_prediction import open_stores, optional_int
from actspace.io import atomic_write_json, write_experiment


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stores", required=True, help="comma-separated store folders")
    parser.add_argument("--threshold", type=float, default=0.3, help="abstain below P(correct)")
    parser.add_argument("--layer", default="auto", help="probe layer, or auto")
    parser.add_argument("--pooling", default="last", help="pooled activations to probe")
    parser.add_argument("--n-samples", default="all", help="items per store (default all)")
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--Cs", type=int, default=10, help="penalties on the inner-CV grid")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--n-random", type=int, default=200, help="random abstainers drawn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", required=True, type=Path)
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
    config = {
        "experiment": results["experiment"],
        "stores": [str(s.store.path) for s in stores],
        "models": sorted({s.model for s in stores}),
        "tasks": sorted({s.task for s in stores}),
        **results["settings"],
        "seed": args.seed,
    }
    atomic_write_json(args.output_dir / "figure_data.json", figures)
    write_experiment(args.output_dir, results, config, summary_markdown(results))
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
