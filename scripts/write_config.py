"""Write the resolved configuration (as Snakemake holds it, defaults filled in) to a JSON file."""

from __future__ import annotations

import argparse

from actspace.core.cli import json_object, one_line_errors
from actspace.core.io import atomic_write_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--config-json", required=True, type=json_object, help="the configuration as JSON text"
    )
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    with one_line_errors(OSError):
        atomic_write_json(args.output, args.config_json)


if __name__ == "__main__":
    main()
