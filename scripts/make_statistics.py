"""Phase 3 statistics: effect sizes, CIs, p-values (Holm-corrected) and the summary table.

Only held-out tests form the Holm family (statistics.json's ``holm`` block lists it and the tests
kept out, with the reason). Writes statistics.json and summary_table.md to --output-dir from the
decision and the results.json of every experiment that ran. The workflow passes the resolved
``analysis.statistics`` section with the study's ``seed`` and ``primary_seed`` as ``--params``.
"""

from __future__ import annotations

from pathlib import Path

from actspace.analysis.statistics import build_statistics
from actspace.analysis.summary import summary_table
from actspace.core.cli import one_line_errors, step_params, step_parser
from actspace.core.io import atomic_write_json, atomic_write_text, read_json

SETTINGS = ("n_bootstrap", "n_permutations", "alpha", "seed")


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__.splitlines()[0], section="analysis.statistics")
    parser.add_argument("--decision", required=True, type=Path, help="results/gate/decision.json")
    parser.add_argument(
        "--results", nargs="*", default=[], type=Path, help="the experiments' results.json files"
    )
    args = parser.parse_args(argv)
    with one_line_errors(KeyError):
        params = step_params(args, required=SETTINGS)
        missing = [str(p) for p in [args.decision, *args.results] if not p.is_file()]
        if missing:
            raise ValueError(f"input not found: {', '.join(missing)}")
        statistics = build_statistics(
            read_json(args.decision),
            args.results,
            **{key: params[key] for key in SETTINGS},
            primary_seed=params.get("primary_seed"),
        )
    atomic_write_json(args.output_dir / "statistics.json", statistics)
    atomic_write_text(args.output_dir / "summary_table.md", summary_table(statistics))
    for entry in statistics["comparisons"]:
        family = f"Holm p {entry['p_holm']}"
        if not entry["in_holm_family"]:
            family = f"raw p {entry['p_value']} ({entry['excluded_from_family']})"
        print(f"{entry['id']}: {entry['metric']} = {entry['value']}, {family}")


if __name__ == "__main__":
    main()
