"""2A activation_transfer: inject a source model's mapped activation into a target model.

Reads the source's and the target's activation stores (same task, same items), the task file and
the target model; writes results.json, config.json and summary.md to --output-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actspace.branches.cross_model.activation_transfer import (
    run_activation_transfer,
    summary_markdown,
)
from actspace.core.io import read_jsonl, write_experiment
from actspace.core.store import ActivationStore
from actspace.lm.models import ModelLoadError, load_model
from actspace.lm.tasks import rows_to_items
from actspace.methods.similarity import DEFAULT_ALPHAS


def _alpha(text: str) -> float | tuple[float, ...]:
    """A fixed ridge penalty, a comma-separated grid, or ``auto`` (the default grid)."""
    if text == "auto":
        return DEFAULT_ALPHAS
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--ridge-alpha must be a number, a comma-separated list or 'auto', got {text!r}"
        ) from None
    if any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"--ridge-alpha values must be positive, got {text!r}")
    return values[0] if len(values) == 1 else values


def _layer(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a layer is an integer or 'auto', got {text!r}") from None


def _coefficients(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--coefficients must be comma-separated numbers, got {text!r}"
        ) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source-store", required=True, type=Path)
    parser.add_argument("--target-store", required=True, type=Path)
    parser.add_argument("--model", required=True, help="the target model: folder or hub id")
    parser.add_argument("--revision", default=None, help="hub revision of the target model")
    parser.add_argument("--task", required=True, type=Path, help="task JSONL (results/tasks/...)")
    parser.add_argument("--source-name", default="source")
    parser.add_argument("--target-name", default="target")
    parser.add_argument("--source-layer", type=_layer, default="auto")
    parser.add_argument("--target-layer", type=_layer, default="auto")
    parser.add_argument("--layer-depth", type=float, default=0.5, help="relative depth for auto")
    parser.add_argument("--mode", choices=("blend", "replace"), default="blend")
    parser.add_argument("--coefficients", type=_coefficients, default=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--metric", choices=("acc", "acc_norm"), default="acc")
    parser.add_argument("--n-samples", type=int, default=None, help="items to use (default all)")
    parser.add_argument("--test-fraction", type=float, default=0.4)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--ridge-alpha", type=_alpha, default="auto", help="number, list or auto")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--min-gain", type=float, default=2.0, help="success bar, in points")
    parser.add_argument("--batch-size", type=int, default=8, help="items per forward pass")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", required=True, type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if not 0.0 <= args.layer_depth <= 1.0:
            raise ValueError(f"--layer-depth must lie in [0, 1], got {args.layer_depth}")
        source = ActivationStore(args.source_store)
        target = ActivationStore(args.target_store)
        items = rows_to_items(read_jsonl(args.task), source=str(args.task))
        model, tokenizer = load_model(
            args.model, dtype=args.dtype, device=args.device, revision=args.revision
        )
        results = run_activation_transfer(
            source,
            target,
            model,
            tokenizer,
            items,
            source_layer=args.source_layer,
            target_layer=args.target_layer,
            layer_depth=args.layer_depth,
            mode=args.mode,
            coefficients=args.coefficients,
            metric=args.metric,
            n_samples=args.n_samples,
            test_fraction=args.test_fraction,
            val_fraction=args.val_fraction,
            ridge_alpha=args.ridge_alpha,
            n_bootstrap=args.n_bootstrap,
            min_gain=args.min_gain,
            batch_size=args.batch_size,
            seed=args.seed,
            names=(args.source_name, args.target_name),
        )
    except (ValueError, ModelLoadError, OSError) as error:
        sys.exit(f"error: {error}")
    config = {
        "experiment": "activation_transfer",
        **{key: value for key, value in vars(args).items() if key != "output_dir"},
    }
    write_experiment(args.output_dir, results, config, summary_markdown(results))
    print(
        f"activation_transfer {args.source_name} -> {args.target_name}: gain "
        f"{results['value']:+.1f} points [{results['ci'][0]:+.1f}, {results['ci'][1]:+.1f}] "
        f"-> {'success' if results['success'] else 'no transfer'}"
    )


if __name__ == "__main__":
    main()
