"""Rule `make_world`: generate the synthetic world, its corpus, tokenizer, tasks and prompt sets.

Writes under --output-dir (results/world): world.json, corpus.txt, corpus_marks.jsonl, tokenizer/,
tasks/{facts,arithmetic}.jsonl, prompt_pairs.jsonl, attributes.jsonl, neutral_prompts.jsonl.
Schemas: see the docstring of actspace.world.synthetic.
"""

from __future__ import annotations

import argparse
import json
import sys

from actspace.world.organisms import prepare_world
from actspace.world.synthetic import World

#: Keys of --world-json that are not world parameters, with the prepare_world argument they set.
_OUTPUT_KEYS = {
    "vocab_size": "vocab_size",
    "n_prompt_pairs": "n_pairs",
    "n_attribute_texts": "n_attribute",
    "n_neutral_prompts": "n_prompts",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", required=True, help="the world folder (results/world)")
    parser.add_argument("--seed", type=int, default=None, help="world seed (overrides the JSON)")
    parser.add_argument(
        "--world-json",
        default="{}",
        help="world settings as JSON: seed, vocab_size, n_prompt_pairs, "
        "n_attribute_texts, n_neutral_prompts and any actspace.world.synthetic.WorldParams field",
    )
    parser.add_argument("--n-entities", type=int, default=None)
    parser.add_argument("--corpus-lines", type=int, default=None)
    parser.add_argument("--vocab-size", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        settings = json.loads(args.world_json)
        if not isinstance(settings, dict):
            raise ValueError("--world-json must be a JSON object")
        for key, value in (
            ("seed", args.seed),
            ("n_entities", args.n_entities),
            ("corpus_lines", args.corpus_lines),
            ("vocab_size", args.vocab_size),
        ):
            if value is not None:
                settings[key] = value
        seed = int(settings.pop("seed", 0))
        outputs = {_OUTPUT_KEYS[k]: settings.pop(k) for k in list(settings) if k in _OUTPUT_KEYS}
        world = World.generate(seed, **settings)
        paths = prepare_world(args.output_dir, world, **outputs)
    except (ValueError, TypeError) as error:
        sys.exit(f"error: {error}")
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
