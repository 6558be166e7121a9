"""Checkpoint `gate`: record the measured pre-mortem verdicts in results/gate/verdicts.json."""

from __future__ import annotations

import argparse
import sys

from actspace.core.io import atomic_write_json, read_json
from actspace.gate.decision import measured_verdicts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pm1", required=True, help="PM1 results.json")
    parser.add_argument("--pm2", required=True, help="PM2 results.json")
    parser.add_argument("--pm3", required=True, help="PM3 results.json")
    parser.add_argument("--output", required=True, help="verdicts.json to write")
    args = parser.parse_args(argv)
    try:
        results = {pm: read_json(getattr(args, pm)) for pm in ("pm1", "pm2", "pm3")}
        record = measured_verdicts(results)
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")
    atomic_write_json(args.output, record)
    print(", ".join(f"{pm}: {info['verdict']}" for pm, info in record.items()))


if __name__ == "__main__":
    main()
