"""Phase 3 figures: draw every figure whose inputs exist under --results-dir.

Reads results/gate/decision.json and the experiments' results.json and figure_data.json (seeds
from their seed{N} folders); writes <name>.png, <name>.pdf and the manifest figures.json to
--output-dir. Figures of branches that did not run are not drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from actspace.analysis.figures import Style, draw_all


def parse_style(text: str | None) -> Style:
    """A :class:`Style` from a JSON object of overrides (``{"dpi": 300}``); None: the default."""
    if not text:
        return Style()
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--style-json is not valid JSON ({error.msg})") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"--style-json must be a JSON object, got {text!r}")
    return Style.from_overrides(overrides)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument(
        "--style-json", default=None, help='Style overrides, e.g. {"dpi": 300, "width_in": 3.25}'
    )
    parser.add_argument("--output-dir", type=Path, default=Path("results/analysis/figures"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        style = parse_style(args.style_json)
        manifest = draw_all(args.results_dir, args.output_dir, style)
    except ValueError as error:
        sys.exit(f"error: {error}")
    for entry in manifest:
        files = ", ".join(entry[fmt] for fmt in style.formats if entry.get(fmt))
        print(f"{entry['name']}: {files}")
    if not manifest:
        print(f"no figure: no input found under {args.results_dir}")


if __name__ == "__main__":
    main()
