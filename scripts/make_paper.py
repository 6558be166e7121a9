"""Phase 4 paper: the abstract and LaTeX draft for the venue the strongest result selects.

Reads the statistics, the figure manifest, the resolved configuration (JSON) and the summary table
(default: summary_table.md beside the statistics); writes abstract.txt, draft.tex,
related_work.bib, figures/ and paper.json to --output-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actspace.analysis.paper import write_paper


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--statistics", required=True, type=Path, help="statistics.json")
    parser.add_argument(
        "--figures-manifest", type=Path, default=None, help="figures.json (default: no figures)"
    )
    parser.add_argument("--config-json", required=True, type=Path, help="resolved configuration")
    parser.add_argument(
        "--summary-table", type=Path, default=None, help="default: beside the statistics"
    )
    parser.add_argument(
        "--templates", type=Path, default=None, help="default: the package's templates"
    )
    parser.add_argument(
        "--bib", type=Path, default=None, help="default: the package's related_work.bib"
    )
    parser.add_argument("--output-dir", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        summary = write_paper(
            args.statistics,
            args.figures_manifest,
            args.config_json,
            args.templates,
            args.bib,
            args.output_dir,
            summary_table_path=args.summary_table,
        )
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    lead = summary["strongest_comparison"]
    if summary["any_success"]:
        what = f"strongest held-out result {lead}"
    elif lead is not None:
        what = f"no held-out success; closest negative result {lead}"
    else:
        what = "no held-out test had a criterion; no result leads"
    print(
        f"{what} (line of work {summary['branch']}): {summary['venue']} "
        f"(alternative {summary['alternative_venue']}) -> {args.output_dir / 'draft.tex'}"
    )


if __name__ == "__main__":
    main()
