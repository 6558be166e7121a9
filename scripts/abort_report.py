"""Rule `abort_report` (Phase X): write results/negative_results.md from the decision."""

from __future__ import annotations

import argparse
import sys

from actspace.core.io import atomic_write_text, read_json
from actspace.gate.abort import negative_results_markdown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decision", required=True, help="results/gate/decision.json")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    try:
        decision = read_json(args.decision)
        if not decision["abort"]:
            sys.exit(
                "error: the decision schedules branches "
                + ", ".join(decision["branches"])
                + "; the negative-results report is written only on the abort path"
            )
        text = negative_results_markdown(decision)
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")
    atomic_write_text(args.output, text)


if __name__ == "__main__":
    main()
