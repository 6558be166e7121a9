"""Branch 2B error_prediction_extended: PM2's correctness probe at every layer of every store.

Reads activation stores (--stores: folders results/activations/{model}/{task}) and the
experiments.error_prediction_extended section (--params); writes results.json, config.json,
summary.md and figure_data.json (curves, reliability data, transfer matrices) to --output-dir.
"""

from __future__ import annotations

from actspace.branches.error_prediction.error_prediction_extended import (
    figure_data,
    run_error_prediction_extended,
)
from actspace.branches.error_prediction.extended_report import summary_markdown
from actspace.branches.error_prediction.steps import run_settings, write_store_experiment
from actspace.core.cli import one_line_errors, step_parser
from actspace.core.store import open_stores


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__, section="experiments.error_prediction_extended")
    parser.add_argument("--stores", required=True, help="comma-separated store folders")
    args = parser.parse_args(argv)
    with one_line_errors():
        settings = run_settings(run_error_prediction_extended, args)
        stores = open_stores(args.stores)
        results = run_error_prediction_extended(stores, **settings)
    write_store_experiment(
        args.output_dir,
        results,
        stores,
        seed=settings["seed"],
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
