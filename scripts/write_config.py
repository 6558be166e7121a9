"""Write the resolved configuration (as Snakemake holds it, defaults filled in) to a JSON file."""

from __future__ import annotations

import argparse
import json
import sys

from actspace.core.io import atomic_write_json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config-json", required=True, help="the configuration as JSON text")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    try:
        config = json.loads(args.config_json)
    except json.JSONDecodeError as error:
        sys.exit(f"error: --config-json is not valid JSON ({error.msg})")
    atomic_write_json(args.output, config)


if __name__ == "__main__":
    main()
