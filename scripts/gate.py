"""Checkpoint `gate`: record the measured pre-mortem verdicts in results/gate/verdicts.json.

One flag per pre-mortem of the plan (``--pm1 results.json`` ...), from :mod:`actspace.plan`. Both
verdicts of each (plan and controlled) are recorded, with the control; which one decides is
``gate.criterion``'s choice, made by the decision step, so the checkpoint never depends on it.
"""

from __future__ import annotations

import argparse
import sys

from actspace import plan
from actspace.core.io import atomic_write_json, read_json
from actspace.gate.decision import measured_verdicts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for pm in plan.PREMORTEMS:
        parser.add_argument(f"--{pm.name}", required=True, help=f"{pm.title}: its results.json")
    parser.add_argument("--output", required=True, help="verdicts.json to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        results = {pm: read_json(getattr(args, pm)) for pm in plan.PREMORTEM_NAMES}
        record = measured_verdicts(results)
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")
    atomic_write_json(args.output, record)
    print(
        ", ".join(
            f"{pm}: plan {info['plan_verdict']}, controlled {info['controlled_verdict']}"
            for pm, info in record.items()
        )
    )


if __name__ == "__main__":
    main()
