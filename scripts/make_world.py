"""Rule `make_world`: generate the synthetic world, its corpus, tokenizer, tasks and prompt sets.

Writes under --output-dir (results/world): world.json, corpus.txt, corpus_marks.jsonl, tokenizer/,
tasks/{facts,arithmetic}.jsonl, prompt_pairs.jsonl, attributes.jsonl, neutral_prompts.jsonl.
Schemas: see the docstring of actspace.world.synthetic. The workflow passes the resolved
``world:`` section as ``--params`` (``--seed`` overrides its seed); by hand, for example::

    python scripts/make_world.py --output-dir results/world --params '{"seed": 42,
        "n_entities": 72, "corpus_lines": 16000, "vocab_size": 1024, "n_prompt_pairs": 100,
        "n_attribute_texts": 200, "n_neutral_prompts": 50}'
"""

from __future__ import annotations

from actspace.core.cli import one_line_errors, step_params, step_parser
from actspace.world.organisms import make_world

#: The ``world:`` keys that size what is written; the others are fields of WorldParams.
REQUIRED = ("seed", "vocab_size", "n_prompt_pairs", "n_attribute_texts", "n_neutral_prompts")


def main(argv: list[str] | None = None) -> None:
    args = step_parser(__doc__, section="world").parse_args(argv)
    with one_line_errors(TypeError):
        params = step_params(args, required=REQUIRED)
        paths = make_world(args.output_dir, **params)
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
