"""Rule `train_organism`: train one built-in organism on the world's corpus; deterministic.

Writes --output-dir (results/models/{name}) atomically: the model and tokenizer as save_pretrained
writes them, and training.json with the training statistics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actspace.core.progress import optional_progress
from actspace.world.organisms import ORGANISM_FAMILIES, ORGANISM_SIZES, read_corpus, train_organism


def _steps(text: str) -> int | None:
    return None if text == "default" else int(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--family", required=True, choices=ORGANISM_FAMILIES)
    parser.add_argument("--size", default="default", choices=ORGANISM_SIZES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=_steps, default=None, help="an integer or 'default'")
    parser.add_argument("--batch-size", type=int, default=None, help="lines per step")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--corpus", required=True, help="corpus.txt written by make_world")
    parser.add_argument("--tokenizer", required=True, help="the tokenizer folder")
    parser.add_argument("--output-dir", required=True, help="the model folder to write")
    parser.add_argument(
        "--progress-file", help="keep a progress file here (results/progress/...; for status.py)"
    )
    args = parser.parse_args(argv)
    try:
        step = f"train_organism {Path(args.output_dir).name}"
        with optional_progress(args.progress_file, step=step) as progress:
            lines = read_corpus(args.corpus)
            stats = train_organism(
                args.family,
                lines,
                args.tokenizer,
                args.output_dir,
                seed=args.seed,
                size=args.size,
                steps=args.steps,
                batch_size=args.batch_size,
                lr=args.lr,
                threads=args.threads,
                progress=progress,
            )
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(
        f"{args.family} ({stats['n_params']} parameters): {stats['steps']} steps, "
        f"final loss {stats['final_loss']:.3f}, {stats['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
