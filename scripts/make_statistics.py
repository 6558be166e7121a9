"""Phase 3 statistics: effect sizes, CIs, p-values (Holm-corrected) and the summary table.

Writes statistics.json and summary_table.md to --output-dir from the decision and the results.json
of every experiment that ran.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actspace.analysis.statistics import build_statistics
from actspace.analysis.summary import summary_table
from actspace.core.io import atomic_write_json, atomic_write_text, read_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decision", required=True, type=Path, help="results/gate/decision.json")
    parser.add_argument(
        "--results", default="", help="comma-separated experiment results.json files"
    )
    parser.add_argument("--primary-seed", type=int, default=None)
    parser.add_argument("--n-bootstrap", type=int, default=2000)
    parser.add_argument("--n-permutations", type=int, default=9999)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="results/analysis", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    files = [Path(p) for p in args.results.split(",") if p.strip()]
    try:
        missing = [str(p) for p in [args.decision, *files] if not p.is_file()]
        if missing:
            raise ValueError(f"input not found: {', '.join(missing)}")
        statistics = build_statistics(
            read_json(args.decision),
            files,
            primary_seed=args.primary_seed,
            n_bootstrap=args.n_bootstrap,
            n_permutations=args.n_permutations,
            seed=args.seed,
            alpha=args.alpha,
        )
    except (ValueError, KeyError) as error:
        sys.exit(f"error: {error}")
    atomic_write_json(args.output_dir / "statistics.json", statistics)
    atomic_write_text(args.output_dir / "summary_table.md", summary_table(statistics))
    for entry in statistics["comparisons"]:
        print(f"{entry['id']}: {entry['metric']} = {entry['value']}, Holm p {entry['p_holm']}")


if __name__ == "__main__":
    main()
