"""results/summary.md: what ran and why, the headline numbers, and where each output is."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from actspace.analysis.summary import study_summary
from actspace.core.io import atomic_write_text, read_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--statistics", required=True, type=Path)
    parser.add_argument("--figures-manifest", default=None, type=Path)
    parser.add_argument(
        "--outputs-json", default="{}", help="a JSON object: output label -> path, in order"
    )
    parser.add_argument("--output", default="results/summary.md", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        outputs = json.loads(args.outputs_json)
        if not isinstance(outputs, dict):
            raise ValueError("--outputs-json must be a JSON object")
        figures = read_json(args.figures_manifest) if args.figures_manifest else []
        text = study_summary(read_json(args.statistics), outputs=outputs, figures=figures)
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")
    atomic_write_text(args.output, text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
