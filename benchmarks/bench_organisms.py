"""Benchmark the built-in organisms' training: wall time, CPU time and accuracy per organism.

Runs by hand (not in CI)::

    python benchmarks/bench_organisms.py               # both default organisms, 1 thread each
    python benchmarks/bench_organisms.py --families gpt2
    python benchmarks/bench_organisms.py --steps 750 --batch-size 128 --lr 4e-3

Trains each organism of the default study (config/config.yaml: world seed 42, families gpt2 and
gpt_neox with seeds 1 and 2) into a temporary folder and prints its training time and its accuracy
on each built-in task, with chance and the accuracy per bucket (frequent, rare, unseen) beside it.
``--steps``, ``--batch-size`` and ``--lr`` override the default size's training knobs, to try a
schedule before changing :data:`~actspace.world.organisms.TRAINING_DEFAULTS`. Goal: each organism
trains in at most 90 seconds on one CPU core, as the workflow trains them (both at once, one thread
each), which leaves the rest of the default study room within its 2 minutes
(``benchmarks/bench_study.py``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import transformers

from actspace.core.schema import validate_schema
from actspace.world.organisms import (
    ORGANISM_FAMILIES,
    _mc_accuracy,
    prepare_world,
    read_corpus,
    train_organism,
)
from actspace.world.synthetic import BUILTIN_TASKS, World

GOAL_SECONDS = 90.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(ORGANISM_FAMILIES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--world-seed", type=int, default=42)
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the size's)")
    parser.add_argument("--batch-size", type=int, help="lines per step (default: the size's)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the size's)")
    args = parser.parse_args(argv)
    section = validate_schema({})["world"]  # the study's world (the schema's defaults)
    world = World.generate(
        args.world_seed, n_entities=section["n_entities"], corpus_lines=section["corpus_lines"]
    )
    sizes = ("vocab_size", "n_prompt_pairs", "n_attribute_texts", "n_neutral_prompts")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare_world(root / "world", world, **{key: section[key] for key in sizes})
        lines = read_corpus(root / "world" / "corpus.txt")
        print(f"corpus: {len(lines)} lines; threads: {args.threads}; goal <= {GOAL_SECONDS:.0f} s")
        for seed, family in enumerate(args.families.split(","), start=1):
            start = time.perf_counter()
            stats = train_organism(
                family,
                lines,
                root / "world" / "tokenizer",
                root / family,
                train_seed=seed,
                size="default",
                train_steps=args.steps,
                batch_size=args.batch_size,
                lr=args.lr,
                threads=args.threads,
            )
            wall = time.perf_counter() - start
            model = transformers.AutoModelForCausalLM.from_pretrained(str(root / family)).eval()
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(root / family))
            accuracy = {
                task: _mc_accuracy(model, tokenizer, world.task_items(task))
                for task in BUILTIN_TASKS
            }
            verdict = "within goal" if wall <= GOAL_SECONDS else "OVER GOAL"
            print(
                f"{family}: wall {wall:.1f} s ({verdict}), cpu {stats['cpu_seconds']:.1f} s, "
                f"{stats['n_params']} parameters, {stats['steps']} steps of {stats['batch_size']} "
                f"lines (lr {stats['lr']:g}), final loss {stats['final_loss']:.3f}"
            )
            for task, result in accuracy.items():
                buckets = ", ".join(f"{b} {v['acc']:.2f}" for b, v in result["by_bucket"].items())
                print(
                    f"  {task}: accuracy {result['acc']:.3f} (chance {result['chance']:.2f}); "
                    f"{buckets}"
                )


if __name__ == "__main__":
    main()
