"""Rule `prepare_task`: materialise a multiple-choice task as ``{output-dir}/{task}.jsonl``.

The task is described by its configuration mapping (a ``tasks.<name>`` section, a built-in task
as the world's JSONL file), given with the seed of a subsample as ``--params``; ``--task`` names
the output file and ``--n-samples`` overrides the section's ``limit``. Examples::

    python scripts/prepare_task.py --task hellaswag --output-dir results/tasks --seed 42 \\
        --params '{"type": "hellaswag", "source": "local",
                   "path": "data/hellaswag_validation.jsonl.gz", "limit": 500, "subsample": true}'
    python scripts/prepare_task.py --task mmlu5 --output-dir results/tasks --seed 42 \\
        --params '{"type": "mmlu", "num_fewshot": 5}'
"""

from __future__ import annotations

from pathlib import Path

from actspace.core.cli import one_line_errors, step_params, step_parser
from actspace.core.io import write_jsonl
from actspace.lm.tasks import items_to_rows, load_task


def main(argv: list[str] | None = None) -> None:
    args = step_parser(__doc__).parse_args(argv)
    with one_line_errors():
        spec = step_params(args, required=("task", "type", "seed"))
        name, seed = spec.pop("task"), spec.pop("seed")
        if "n_samples" in spec:
            spec["limit"] = spec.pop("n_samples")
        items = load_task(spec, seed=seed)
    output = Path(args.output_dir) / f"{name}.jsonl"
    write_jsonl(output, items_to_rows(items))
    print(f"{name}: {len(items)} items -> {output}")


if __name__ == "__main__":
    main()
