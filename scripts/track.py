"""Log the study's experiments to Weights & Biases (only when tracking.wandb is configured).

The workflow passes the resolved ``tracking.wandb`` section (project, entity, group, mode) with the
study's ``seed`` as ``--params``. Writes --output (tracking.json: the runs logged, their metrics and
figures).
"""

from __future__ import annotations

from pathlib import Path

from actspace.analysis.tracking import track_study
from actspace.core.cli import one_line_errors, step_params, step_parser
from actspace.core.io import atomic_write_json, read_json

SETTINGS = ("project", "entity", "group", "mode", "seed")


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__.splitlines()[0], output_dir=False)
    parser.add_argument("--statistics", required=True, type=Path)
    parser.add_argument("--figures-dir", required=True, type=Path)
    parser.add_argument("--config-json", required=True, type=Path, help="the resolved config")
    parser.add_argument("--run-dir", default=None, type=Path, help="where wandb keeps its files")
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    with one_line_errors(OSError):
        params = step_params(args, required=SETTINGS)
        logged = track_study(
            read_json(args.statistics),
            read_json(args.figures_dir / "figures.json"),
            args.figures_dir,
            **{key: params[key] for key in SETTINGS},
            run_dir=args.run_dir,
            study_config=read_json(args.config_json),
        )
    summary = {"project": params["project"], "mode": params["mode"], "runs": logged}
    atomic_write_json(args.output, summary)
    print(f"logged {len(logged)} runs to W&B project {params['project']}")


if __name__ == "__main__":
    main()
