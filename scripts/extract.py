"""Score a task's items with a model in one pass each and write the activation store.

Example::

    python scripts/extract.py --model results/models/organism_a --model-name organism_a \\
        --task results/tasks/facts.jsonl --task-name facts \\
        --output-dir results/activations/organism_a/facts

A killed run started again with the same arguments resumes at the first unfinished shard.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from actspace.core.io import read_jsonl
from actspace.core.progress import optional_progress
from actspace.core.store import ActivationStore
from actspace.lm.extraction import (
    POOLINGS,
    STORAGE_DTYPES,
    ExtractionOutOfMemory,
    extract_store,
)
from actspace.lm.models import DEVICES, DTYPES, ModelLoadError, load_model
from actspace.lm.scoring import aggregate
from actspace.lm.tasks import rows_to_items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder or Hugging Face hub id")
    parser.add_argument("--model-name", help="name recorded in meta.json (default: --model)")
    parser.add_argument("--revision", help="hub revision of --model")
    parser.add_argument("--task", required=True, help="task JSONL (results/tasks/{task}.jsonl)")
    parser.add_argument("--task-name", help="name recorded in meta.json (default: file stem)")
    parser.add_argument(
        "--poolings", default=",".join(POOLINGS), help=f"comma-separated of {', '.join(POOLINGS)}"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="items per forward pass")
    parser.add_argument("--shard-size", type=int, default=256, help="items per resumable shard")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="compute dtype")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)}")
    parser.add_argument(
        "--storage-dtype",
        default="auto",
        choices=("auto", *STORAGE_DTYPES),
        help="activation dtype on disk (auto: float16 on GPU, float32 on CPU)",
    )
    parser.add_argument(
        "--n-samples", "--limit", dest="n_samples", type=int, help="only the first N items"
    )
    parser.add_argument("--max-length", type=int, help="longest input (default: the model's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--progress-file", help="keep a progress file here (results/progress/...; for status.py)"
    )
    parser.add_argument("--output-dir", required=True, help="the store folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        task = Path(args.task)
        if not task.is_file():
            raise ValueError(f"task file {task} not found")
        if args.n_samples is not None and args.n_samples < 1:
            raise ValueError(f"--n-samples must be at least 1, got {args.n_samples}")
        poolings = [p.strip() for p in args.poolings.split(",") if p.strip()]
        items = rows_to_items(read_jsonl(task), source=str(task))
        if args.n_samples is not None:
            items = items[: args.n_samples]
        model_name = args.model_name or args.model
        task_name = args.task_name or task.name.removesuffix(".jsonl")
        with optional_progress(
            args.progress_file, len(items), step=f"extract {model_name}/{task_name}"
        ) as progress_file:
            model, tokenizer = load_model(
                args.model, dtype=args.dtype, device=args.device, revision=args.revision
            )
            meta = extract_store(
                model,
                tokenizer,
                items,
                args.output_dir,
                poolings=poolings,
                batch_size=args.batch_size,
                storage_dtype=args.storage_dtype,
                shard_size=args.shard_size,
                model_name=model_name,
                task_name=task_name,
                progress=not args.no_progress,
                max_length=args.max_length,
                progress_file=progress_file,
            )
        metrics = aggregate(ActivationStore(args.output_dir).scores())
    except (ValueError, ModelLoadError, ExtractionOutOfMemory) as error:
        sys.exit(f"error: {error}")
    timings = meta["timings"]
    print(
        f"{meta['model']} x {meta['task']}: {meta['n_items']} items, acc {metrics['acc']:.4f}, "
        f"acc_norm {metrics['acc_norm']:.4f}, {meta['forward_passes']} forward passes, "
        f"{timings['items_per_s']:.1f} items/s, peak {timings['peak_memory_mb']:.0f} MB "
        f"-> {args.output_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
