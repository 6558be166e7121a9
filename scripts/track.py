"""Log the study's experiments to Weights & Biases (only when tracking.wandb is configured).

Writes --output (tracking.json: the runs logged, their metrics and figures).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actspace.analysis.tracking import track_study
from actspace.core.io import atomic_write_json, read_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statistics", required=True, type=Path)
    parser.add_argument("--figures-dir", required=True, type=Path)
    parser.add_argument("--config-json", required=True, type=Path, help="the resolved config")
    parser.add_argument("--project", required=True)
    parser.add_argument("--entity", default=None)
    parser.add_argument("--group", default=None)
    parser.add_argument("--mode", default=None, choices=("online", "offline", "disabled"))
    parser.add_argument("--run-dir", default=None, type=Path, help="where wandb keeps its files")
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        logged = track_study(
            read_json(args.statistics),
            read_json(args.figures_dir / "figures.json"),
            args.figures_dir,
            project=args.project,
            entity=args.entity,
            group=args.group,
            mode=args.mode,
            run_dir=args.run_dir,
            study_config=read_json(args.config_json),
        )
    except (OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    atomic_write_json(args.output, {"project": args.project, "mode": args.mode, "runs": logged})
    print(f"logged {len(logged)} runs to W&B project {args.project}")


if __name__ == "__main__":
    main()
