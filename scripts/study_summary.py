"""results/summary.md: what ran and why, the headline numbers, and where each output is."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actspace.analysis.summary import study_summary
from actspace.core.io import atomic_write_text, read_json

#: How a person regenerates the HTML report (listed last among the outputs).
REPORT_COMMAND = "snakemake --report results/report.html"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--statistics", required=True, type=Path, help="statistics.json")
    parser.add_argument("--summary-table", required=True, type=Path, help="summary_table.md")
    parser.add_argument("--decision", required=True, type=Path, help="the gate's decision.md")
    parser.add_argument("--figures", required=True, type=Path, help="the figures folder")
    parser.add_argument(
        "--paper", nargs="?", type=Path, help="the paper draft (not on the abort path)"
    )
    parser.add_argument(
        "--negative-results", nargs="?", type=Path, help="the abort report (only on that path)"
    )
    parser.add_argument("--output", required=True, type=Path)
    return parser.parse_args(argv)


def outputs(args: argparse.Namespace) -> dict[str, str]:
    """Where each output is, in the order the summary lists them."""
    listed = {
        "decision": args.decision,
        "statistics": args.statistics,
        "summary_table": args.summary_table,
        "figures": args.figures,
        "paper_draft": args.paper,
        "negative_results": args.negative_results,
    }
    return {
        **{label: str(path) for label, path in listed.items() if path is not None},
        "report": REPORT_COMMAND,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        figures = read_json(args.figures / "figures.json")
        text = study_summary(read_json(args.statistics), outputs=outputs(args), figures=figures)
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")
    atomic_write_text(args.output, text)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
