"""Branch 2B abstention: answer only when the correctness probe's P(correct) reaches a threshold.

Reads activation stores (--stores: folders results/activations/{model}/{task}) and the
experiments.abstention section (--params); writes results.json, config.json, summary.md and
figure_data.json (risk-coverage curves) to --output-dir.
"""

from __future__ import annotations

from actspace.branches.error_prediction.abstention import run_abstention
from actspace.branches.error_prediction.abstention_report import summary_markdown
from actspace.branches.error_prediction.steps import fmt, run_settings, write_store_experiment
from actspace.core import criteria
from actspace.core.cli import one_line_errors, step_parser
from actspace.core.store import open_stores


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__, section="experiments.abstention")
    parser.add_argument("--stores", required=True, help="comma-separated store folders")
    args = parser.parse_args(argv)
    with one_line_errors():
        settings = run_settings(run_abstention, args)
        stores = open_stores(args.stores)
        results, figures = run_abstention(stores, **settings)
    write_store_experiment(
        args.output_dir,
        results,
        stores,
        seed=settings["seed"],
        figures=figures,
        summary=summary_markdown(results),
    )
    for r in results["stores"]:
        if "skipped" in r:
            print(f"{r['model']}/{r['task']}: skipped ({r['skipped']})")
            continue
        p, m = r["probe"], r["matched_coverage"]
        print(
            f"{r['model']}/{r['task']}: coverage {fmt(p['coverage'])}, effective accuracy "
            f"{fmt(p['effective_accuracy'])} vs plain {fmt(p['plain_accuracy'])} and vs "
            f"confidence {fmt(m['confidence'])} at the same coverage -> {r['verdict']}"
            + "".join(f"; failed {c['name']}" for c in criteria.failed(r["criteria"]))
        )


if __name__ == "__main__":
    main()
