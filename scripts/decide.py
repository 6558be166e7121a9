"""Rule `decision`: apply gate.force to the measured verdicts; write decision.json and .md."""

from __future__ import annotations

import argparse
import sys

from actspace.core.io import atomic_write_json, atomic_write_text, read_json
from actspace.gate.decision import decide, decision_markdown


def parse_force(text: str) -> dict[str, str | None]:
    """Parse ``pm1=PASS,pm3=FAIL`` (or an empty string) into a force mapping."""
    force: dict[str, str | None] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        force[key.strip()] = value.strip() or None
    return force


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--verdicts", required=True, help="the checkpoint's verdicts.json")
    parser.add_argument("--force", default="", help="forced verdicts, e.g. pm1=PASS,pm2=FAIL")
    parser.add_argument("--output-json", required=True)
    parser.add_argument("--output-md", required=True)
    args = parser.parse_args(argv)
    try:
        decision = decide(read_json(args.verdicts), parse_force(args.force))
    except (OSError, ValueError, KeyError) as error:
        sys.exit(f"error: {error}")
    atomic_write_json(args.output_json, decision)
    atomic_write_text(args.output_md, decision_markdown(decision))
    print("branches:", ", ".join(decision["branches"]))


if __name__ == "__main__":
    main()
