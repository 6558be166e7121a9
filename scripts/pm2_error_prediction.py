"""PM2 error prediction: a linear probe on one layer predicts whether the model answered correctly,
decided against a probe on the model's output confidence alone (both verdicts are printed).

Reads one activation store (one model on one task; --store) and writes results.json, config.json
and summary.md to --output-dir. The parameters are the keys of premortems.pm2 and the study's
seed, passed as --params (the workflow does); by hand, --layers K sets the probed layer.
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
from actspace.core.store import ActivationStore
from actspace.premortems.pm2 import run_pm2, summary_markdown


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__, section="premortems.pm2")
    parser.add_argument("--store", required=True, help="activation store folder")
    args = parser.parse_args(argv)
    with one_line_errors():
        params = step_params(args, required=required_keywords(run_pm2))
        layers = params.pop("layers", None)
        if layers is not None:
            if len(layers) != 1:
                raise ValueError(f"PM2 probes one layer; --layers got {layers}")
            params["layer"] = layers[0]
        store = ActivationStore(args.store)
        results = run_pm2(store, **keyword_arguments(run_pm2, params))
    config = {"premortem": "pm2", "store": args.store, **params}
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    if results["value"] is None:
        print(
            f"pm2: no value ({results['reason']}) -> plan {results['plan_verdict']}, "
            f"controlled {results['controlled_verdict']}"
        )
        return
    test = results["controlled"]
    print(
        f"pm2 {results['metric']} = {results['value']:.3f} "
        f"[{results['ci'][0]:.3f}, {results['ci'][1]:.3f}] at layer {results['layer']} "
        f"-> plan {results['plan_verdict']}; control {results['control']['value']:.3f}, "
        f"{test['statistic']} {test['value']:.3f} [{test['ci'][0]:.3f}, {test['ci'][1]:.3f}] "
        f"-> controlled {results['controlled_verdict']}"
    )


if __name__ == "__main__":
    main()
