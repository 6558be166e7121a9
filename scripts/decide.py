"""Rule `decision`: apply gate.criterion and gate.force to the measured verdicts; write
decision.json and decision.md.

The workflow passes the resolved ``gate`` section as ``--params``; by hand, ``--criterion plan``
overrides its ``criterion`` and ``--force pm1=PASS,pm3=FAIL`` its ``force``. A key missing from
``--params`` takes the schema's default.
"""

from __future__ import annotations

import argparse

from actspace.core.cli import json_object, one_line_errors, schema_defaults
from actspace.core.io import atomic_write_json, atomic_write_text
from actspace.gate.decision import CRITERIA, decide, decision_markdown, read_verdicts


def parse_force(text: str) -> dict[str, str | None]:
    """Parse ``pm1=PASS,pm3=FAIL`` (or an empty string) into a force mapping."""
    force: dict[str, str | None] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        force[key.strip()] = value.strip() or None
    return force


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", type=json_object, default={}, help="the resolved gate section as JSON"
    )
    parser.add_argument("--criterion", choices=CRITERIA, default=None, help="which verdict decides")
    parser.add_argument(
        "--force", type=parse_force, default=None, help="forced verdicts, e.g. pm1=PASS,pm2=FAIL"
    )
    parser.add_argument("--verdicts", required=True, help="the checkpoint's verdicts.json")
    parser.add_argument("--output-json", required=True)
    parser.add_argument("--output-md", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    gate = {**schema_defaults("gate"), **args.params}
    force = args.force if args.force is not None else gate["force"]
    criterion = args.criterion if args.criterion is not None else gate["criterion"]
    with one_line_errors(OSError, KeyError):
        decision = decide(read_verdicts(args.verdicts), force, criterion)
    atomic_write_json(args.output_json, decision)
    atomic_write_text(args.output_md, decision_markdown(decision))
    print(f"criterion {criterion}; branches:", ", ".join(decision["branches"]))


if __name__ == "__main__":
    main()
