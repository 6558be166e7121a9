"""PM1 cross-model similarity: held-out correlation after a ridge projection between models.

Reads one activation store per model (the same task and items; --stores) and writes results.json,
config.json and summary.md to --output-dir. The parameters are the keys of premortems.pm1 and
the study's seed, passed as --params (the workflow does); the models are named after
premortems.pm1.models, --model-names, or each store's meta.json, in that order.
"""

from __future__ import annotations

from actspace.core.cli import (
    keyword_arguments,
    one_line_errors,
    required_keywords,
    step_params,
    step_parser,
)
from actspace.core.io import write_experiment
from actspace.core.store import open_named_stores
from actspace.premortems.pm1 import run_pm1, summary_markdown


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__, section="premortems.pm1")
    parser.add_argument("--stores", required=True, help="comma-separated activation store folders")
    parser.add_argument("--model-names", help="comma-separated names, one per store")
    args = parser.parse_args(argv)
    with one_line_errors():
        params = step_params(args, required=required_keywords(run_pm1))
        names = args.model_names or ",".join(params.get("models") or [])
        named = open_named_stores(args.stores, names or None)
        results = run_pm1(named, **keyword_arguments(run_pm1, params))
    config = {
        "premortem": "pm1",
        "stores": {name: str(store.path) for name, store in named.items()},
        **params,
    }
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    if results["value"] is None:
        print(
            f"pm1: no value ({results['reason']}) -> plan {results['plan_verdict']}, "
            f"controlled {results['controlled_verdict']}"
        )
        return
    control, test = results["control"], results["controlled"]
    print(
        f"pm1 {results['metric']} = {results['value']:.3f} "
        f"[{results['ci'][0]:.3f}, {results['ci'][1]:.3f}] -> plan {results['plan_verdict']}; "
        f"control {control['value']:.3f}, difference {test['value']:.3f} "
        f"[{test['ci'][0]:.3f}, {test['ci'][1]:.3f}] -> controlled "
        f"{results['controlled_verdict']}"
    )


if __name__ == "__main__":
    main()
