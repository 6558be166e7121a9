"""2A cross_model_extended: every model pair x every layer pair, three alignment measures + nulls.

Reads one activation store per model (the same task and items) and writes results.json,
config.json, summary.md and figure_data.json (the layer-by-layer grids) to --output-dir. Its
parameters are the keys of experiments.cross_model_extended and the study's seed, given as
--params (the workflow passes the resolved section); --n-samples and --seed override them.
"""

from __future__ import annotations

import argparse

from actspace.branches.cross_model.cross_model_extended import (
    EXPERIMENT,
    run_cross_model_extended,
    summary_markdown,
)
from actspace.core.cli import (
    keyword_arguments,
    one_line_errors,
    required_keywords,
    step_params,
    step_parser,
)
from actspace.core.io import atomic_write_json, write_experiment
from actspace.core.store import open_named_stores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = step_parser(__doc__, section="experiments.cross_model_extended")
    parser.add_argument("--stores", required=True, help="comma-separated activation store folders")
    parser.add_argument(
        "--model-names",
        help="comma-separated names, one per store (default: the models in --params, else each "
        "store's meta.json model)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with one_line_errors():
        params = step_params(args, required=required_keywords(run_cross_model_extended))
        names = args.model_names or ",".join(params.get("models") or ())
        named = open_named_stores(args.stores, names or None)
        results, figure_data = run_cross_model_extended(
            named, **keyword_arguments(run_cross_model_extended, params)
        )
    config = {
        "experiment": EXPERIMENT,
        "stores": {name: str(store.path) for name, store in named.items()},
        **params,
    }
    atomic_write_json(args.output_dir / "figure_data.json", figure_data)
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    if results["value"] is None:
        print(f"{EXPERIMENT}: not measured ({results['reason']})")
        return
    print(
        f"{EXPERIMENT}: {results['metric']} = {results['value']:.3f} "
        f"[{results['ci'][0]:.3f}, {results['ci'][1]:.3f}] over {len(results['pairs'])} pairs "
        f"in {results['duration_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
