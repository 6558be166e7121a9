"""2A activation_transfer: inject a source model's mapped activation into a target model.

Reads the source's and the target's activation stores (same task, same items), the task file
(--task) and the target model (model_ref in --params, or --model); writes results.json,
config.json and summary.md to --output-dir. Its parameters are the keys of
experiments.activation_transfer with the run's seed, the target's model reference and the
extraction's dtype and device, given as --params (the workflow passes them); the common flags
override them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from actspace.branches.cross_model.activation_transfer import EXPERIMENT, run_activation_transfer
from actspace.branches.cross_model.transfer_report import summary_markdown
from actspace.core import criteria
from actspace.core.cli import (
    keyword_arguments,
    model_path,
    one_line_errors,
    required_keywords,
    step_params,
    step_parser,
)
from actspace.core.io import read_jsonl, write_experiment
from actspace.core.store import ActivationStore
from actspace.lm.models import ModelLoadError, load_model
from actspace.lm.tasks import rows_to_items

#: What the script itself reads from --params, besides the library's keywords.
OWN_KEYS = ("task", "dtype", "device")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = step_parser(__doc__, section="experiments.activation_transfer")
    parser.add_argument("--source-store", required=True, type=Path)
    parser.add_argument("--target-store", required=True, type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with one_line_errors(ModelLoadError, OSError):
        params = step_params(
            args, required=(*OWN_KEYS, *required_keywords(run_activation_transfer))
        )
        path, revision = model_path(params)
        source = ActivationStore(args.source_store)
        target = ActivationStore(args.target_store)
        task = Path(params["task"])
        items = rows_to_items(read_jsonl(task), source=str(task))
        model, tokenizer = load_model(
            path, dtype=params["dtype"], device=params["device"], revision=revision
        )
        results = run_activation_transfer(
            source,
            target,
            model,
            tokenizer,
            items,
            **keyword_arguments(run_activation_transfer, params),
        )
    config = {
        "experiment": EXPERIMENT,
        "source_store": str(args.source_store),
        "target_store": str(args.target_store),
        **params,
    }
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    if results["value"] is None:
        print(f"{EXPERIMENT}: not measured ({results['reason']})")
        return
    print(
        f"{EXPERIMENT} {results['source']} -> {results['target']}: gain "
        f"{results['value']:+.1f} points [{results['ci'][0]:+.1f}, {results['ci'][1]:+.1f}] "
        f"-> {'success' if results['success'] else 'no transfer'}"
        + "".join(f"; failed {c['name']}" for c in criteria.failed(results["criteria"]))
    )


if __name__ == "__main__":
    main()
