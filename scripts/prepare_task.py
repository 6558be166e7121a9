"""Materialise a multiple-choice task as ``{output-dir}/{task}.jsonl`` (one item a line).

The task is described by its configuration mapping, given whole with ``--spec-json`` or by flags
(flags override keys of ``--spec-json``). Examples::

    python scripts/prepare_task.py --task hellaswag --type hellaswag --source local \\
        --path data/hellaswag_validation.jsonl.gz --limit 500 --subsample --seed 42
    python scripts/prepare_task.py --task mmlu5 \\
        --spec-json '{"type": "mmlu", "num_fewshot": 5}' --output-dir results/tasks
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from actspace.core.io import write_jsonl
from actspace.lm.tasks import TASK_TYPES, items_to_rows, load_task


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="task name (the output file's name)")
    parser.add_argument("--spec-json", help="the task's configuration mapping, as JSON")
    parser.add_argument("--type", choices=TASK_TYPES, help="task type")
    parser.add_argument("--source", choices=("hub", "local"), help="where the data come from")
    parser.add_argument("--path", help="local data file (.json, .jsonl, optionally .gz)")
    parser.add_argument("--dev-path", help="local MMLU dev file for few-shot examples")
    parser.add_argument("--hub-id", help="hub data set id")
    parser.add_argument("--hub-config", help="hub data set configuration")
    parser.add_argument("--split", help="data set split")
    parser.add_argument("--builtin", help="built-in task name")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples (mmlu)")
    parser.add_argument("--limit", type=int, help="number of items")
    parser.add_argument(
        "--subsample",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a seeded random subset of --limit items instead of the first ones",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsample")
    parser.add_argument("--output-dir", default="results/tasks", help="folder of {task}.jsonl")
    return parser.parse_args(argv)


def build_spec(args: argparse.Namespace) -> dict:
    """The task specification: ``--spec-json`` with the flags given on top."""
    spec: dict = {}
    if args.spec_json:
        try:
            spec = json.loads(args.spec_json)
        except json.JSONDecodeError as error:
            raise ValueError(f"--spec-json is not valid JSON ({error.msg})") from None
        if not isinstance(spec, dict):
            raise ValueError("--spec-json must be a JSON object")
    flags = {
        "type": args.type,
        "source": args.source,
        "path": args.path,
        "dev_path": args.dev_path,
        "hub_id": args.hub_id,
        "hub_config": args.hub_config,
        "split": args.split,
        "builtin": args.builtin,
        "num_fewshot": args.num_fewshot,
        "limit": args.limit,
        "subsample": args.subsample,
    }
    spec.update({key: value for key, value in flags.items() if value is not None})
    if "type" not in spec:
        raise ValueError("give the task type with --type or in --spec-json")
    return spec


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        items = load_task(build_spec(args), seed=args.seed)
    except ValueError as error:
        sys.exit(f"error: {error}")
    output = Path(args.output_dir) / f"{args.task}.jsonl"
    write_jsonl(output, items_to_rows(items))
    print(f"{args.task}: {len(items)} items -> {output}")


if __name__ == "__main__":
    main()
