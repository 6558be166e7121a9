"""Branch 2B unsupervised_error: Contrast-Consistent Search for the model's errors, no labels.

Reads activation stores (--stores: folders results/activations/{model}/{task}) and the
experiments.unsupervised_error section (--params); writes results.json, config.json, summary.md
and figure_data.json (curves over layers) to --output-dir.
"""

from __future__ import annotations

from actspace.branches.error_prediction.steps import fmt, run_settings, write_store_experiment
from actspace.branches.error_prediction.unsupervised_error import run_unsupervised_error
from actspace.branches.error_prediction.unsupervised_report import figure_data, summary_markdown
from actspace.core.cli import one_line_errors, step_parser
from actspace.core.store import open_stores


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__, section="experiments.unsupervised_error")
    parser.add_argument("--stores", required=True, help="comma-separated store folders")
    args = parser.parse_args(argv)
    with one_line_errors():
        settings = run_settings(run_unsupervised_error, args)
        stores = open_stores(args.stores)
        results = run_unsupervised_error(stores, **settings)
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
        h = r["selected"]
        failed = ", ".join(h["failed_criteria"]) or "none"
        print(
            f"{r['model']}/{r['task']}: layer {h['layer']} CCS {h['ccs_balanced_accuracy']:.3f}, "
            f"supervised {h['supervised_balanced_accuracy']:.3f}, ratio {fmt(h['ratio'])} "
            f"-> {h['verdict']} (failed: {failed})"
        )


if __name__ == "__main__":
    main()
