"""Print where the study stands: each job as done, running (progress, ETA), failed (log) or pending.

Examples::

    python scripts/status.py                      # once, for config/config.yaml
    python scripts/status.py --watch 10           # refresh every 10 s until Ctrl-C
    python scripts/status.py --configfile config/paper.yaml
    python scripts/status.py --config 'gate={"force": {"pm2": "PASS"}}'

Reads ``snakemake --summary`` and ``snakemake -n`` (neither runs a job or takes the lock, so it
works beside a running study), Snakemake's incomplete markers and the progress files the long steps
write under results/progress/. Not a rule of the workflow.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from actspace.monitor.dry_run import StatusError
from actspace.monitor.status import study_status, watch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--directory", "-d", type=Path, default=Path("."), help="the workflow's folder (default .)"
    )
    parser.add_argument(
        "--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until Ctrl-C"
    )
    parser.add_argument(
        "--count", type=int, metavar="N", help="with --watch: stop after N refreshes"
    )
    parser.add_argument(
        "--config",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="passed to snakemake --config (as for the run you are watching)",
    )
    parser.add_argument("--configfile", nargs="+", default=[], help="passed to snakemake")
    args = parser.parse_args(argv)
    if args.watch is not None and args.watch <= 0:
        parser.error(f"--watch must be a positive number of seconds, got {args.watch:g}")
    if args.count is not None and args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    extra = [*(["--configfile", *args.configfile] if args.configfile else [])]
    extra += ["--config", *args.config] if args.config else []
    if not (args.directory / "Snakefile").is_file():
        sys.exit(f"error: no Snakefile in {args.directory} (use --directory)")

    def once() -> str:
        return study_status(args.directory, extra)

    try:
        if args.watch is None:
            print(once())
            return 0
        return watch(once, args.watch, iterations=args.count)
    except StatusError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:  # Ctrl-C while snakemake was being asked
        return 0
    except BrokenPipeError:  # piped into head, say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the flush at exit
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
