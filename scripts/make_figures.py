"""Phase 3 figures: draw every figure whose inputs exist under --results-dir.

Reads results/gate/decision.json and the experiments' results.json and figure_data.json (seeds
from their seed{N} folders); writes <name>.png, <name>.pdf and the manifest figures.json to
--output-dir. Figures of branches that did not run are not drawn. --params is the configuration's
analysis.figures section (dpi, font_size, width_in; the schema's defaults for what it leaves out).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from actspace.analysis.figures import Style, draw_all
from actspace.core.cli import json_object, one_line_errors, step_params, step_parser
from actspace.plan import RESULTS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = step_parser(__doc__, section="analysis.figures")
    parser.add_argument(
        "--results-dir", type=Path, default=Path(RESULTS), help="the study's results folder"
    )
    # the flag the workflow passed before --params; the same JSON object
    parser.add_argument("--style-json", type=json_object, dest="params", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with one_line_errors():
        style = Style.from_overrides(step_params(args))
        manifest = draw_all(args.results_dir, args.output_dir, style)
    for entry in manifest:
        files = ", ".join(entry[fmt] for fmt in style.formats if entry.get(fmt))
        print(f"{entry['name']}: {files}")
    if not manifest:
        print(f"no figure: no input found under {args.results_dir}")


if __name__ == "__main__":
    main()
