"""Rule `extract`: score a task's items with a model, one pass each, into the activation store.

The workflow passes the resolved ``extract:`` section and the model reference as ``--params``;
by hand, give the same keys (``poolings``, ``batch_size``, ``shard_size``, ``storage_dtype``,
``layers``, ``truncation``, ``dtype``, ``device``) in ``--params`` and the model with ``--model``
(keys left out take the schema's defaults), for example::

    python scripts/extract.py --model results/models/tiny_gpt2 \\
        --task results/tasks/facts.jsonl --output-dir results/activations/tiny_gpt2/facts \\
        --params '{"poolings": ["last", "mean"], "batch_size": 16, "shard_size": 256,
                   "storage_dtype": "auto"}' --dtype auto --device auto

A killed run started again with the same arguments resumes at the first unfinished shard. A task
with single-choice items is refused before the model is loaded; items longer than the model's
window are cut (a warning line) or refused (``truncation: refuse``), and the summary line counts
them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from actspace.core.cli import model_path, one_line_errors, step_params, step_parser
from actspace.core.io import read_jsonl
from actspace.core.progress import optional_progress
from actspace.core.store import ActivationStore
from actspace.lm.extraction import check_choices, extract_store
from actspace.lm.memory import ExtractionOutOfMemory
from actspace.lm.models import ModelLoadError, load_model
from actspace.lm.scoring import aggregate
from actspace.lm.tasks import rows_to_items

#: What extraction reads from ``--params`` (the ``extract:`` section, the task file, the model).
REQUIRED = (
    "model_ref",
    "task",
    "poolings",
    "batch_size",
    "shard_size",
    "storage_dtype",
    "layers",
    "truncation",
    "dtype",
    "device",
)


def main(argv: list[str] | None = None) -> int:
    parser = step_parser(__doc__, section="extract")
    parser.add_argument("--model-name", help="name recorded in meta.json (default: the model's)")
    parser.add_argument("--task-name", help="name recorded in meta.json (default: file stem)")
    parser.add_argument("--max-length", type=int, help="longest input (default: the model's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--progress-file", help="keep a progress file here (results/progress/...; for status.py)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with one_line_errors(ModelLoadError, ExtractionOutOfMemory):
        params = step_params(args, required=REQUIRED)
        task = Path(params["task"])
        if not task.is_file():
            raise ValueError(f"task file {task} not found")
        n_samples = params.get("n_samples")
        if n_samples is not None and n_samples < 1:
            raise ValueError(f"--n-samples must be at least 1, got {n_samples}")
        items = rows_to_items(read_jsonl(task), source=str(task))
        if n_samples is not None:
            items = items[:n_samples]
        path, revision = model_path(params)
        model_name = args.model_name or params["model_ref"].get("name") or path
        task_name = args.task_name or task.name.removesuffix(".jsonl")
        check_choices(items, task_name)
        with optional_progress(
            args.progress_file, len(items), step=f"extract {model_name}/{task_name}"
        ) as progress_file:
            model, tokenizer = load_model(
                path, dtype=params["dtype"], device=params["device"], revision=revision
            )
            meta = extract_store(
                model,
                tokenizer,
                items,
                args.output_dir,
                poolings=params["poolings"],
                batch_size=params["batch_size"],
                storage_dtype=params["storage_dtype"],
                shard_size=params["shard_size"],
                truncation=params["truncation"],
                layers=params["layers"],
                model_name=model_name,
                task_name=task_name,
                progress=not args.no_progress,
                max_length=args.max_length,
                progress_file=progress_file,
            )
        metrics = aggregate(ActivationStore(args.output_dir).scores())
    timings = meta["timings"]
    print(
        f"{meta['model']} x {meta['task']}: {meta['n_items']} items, acc {metrics['acc']:.4f}, "
        f"acc_norm {metrics['acc_norm']:.4f}, {meta['n_truncated']} contexts truncated, "
        f"{meta['forward_passes']} forward passes, "
        f"{timings['items_per_s']:.1f} items/s, peak {timings['peak_memory_mb']:.0f} MB "
        f"-> {args.output_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
