"""Rule `train_organism`: train one built-in organism on the world's corpus; deterministic.

Writes --output-dir (results/models/{name}) atomically: the model and tokenizer as save_pretrained
writes them, and training.json with the training statistics. The workflow passes the organism's
resolved ``models.<name>`` section as ``--params`` (``--seed`` overrides its ``train_seed``); by
hand, for example::

    python scripts/train_organism.py --corpus results/world/corpus.txt \\
        --tokenizer results/world/tokenizer --output-dir results/models/tiny_gpt2 \\
        --params '{"family": "gpt2", "size": "default", "train_seed": 0, "train_steps": null}'
"""

from __future__ import annotations

from pathlib import Path

from actspace.core.cli import one_line_errors, step_params, step_parser
from actspace.core.progress import optional_progress
from actspace.world.organisms import read_corpus, train_organism

#: The keys of a ``models.<name>`` section that training reads.
REQUIRED = ("family", "size", "train_seed", "train_steps")


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__)
    parser.add_argument("--corpus", required=True, help="corpus.txt written by make_world")
    parser.add_argument("--tokenizer", required=True, help="the tokenizer folder")
    parser.add_argument("--batch-size", type=int, help="lines per step (default: the size's)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the size's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--progress-file", help="keep a progress file here (results/progress/...; for status.py)"
    )
    args = parser.parse_args(argv)
    with one_line_errors(OSError):
        params = step_params(args, required=REQUIRED)
        if "seed" in params:  # --seed by hand
            params["train_seed"] = params.pop("seed")
        step = f"train_organism {Path(args.output_dir).name}"
        with optional_progress(args.progress_file, step=step) as progress:
            lines = read_corpus(args.corpus)
            stats = train_organism(
                params["family"],
                lines,
                args.tokenizer,
                args.output_dir,
                train_seed=params["train_seed"],
                size=params["size"],
                train_steps=params["train_steps"],
                batch_size=args.batch_size,
                lr=args.lr,
                threads=args.threads,
                progress=progress,
            )
    print(
        f"{params['family']} ({stats['n_params']} parameters): {stats['steps']} steps, "
        f"final loss {stats['final_loss']:.3f}, {stats['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
