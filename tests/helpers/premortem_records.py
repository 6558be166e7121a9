"""Pre-mortem records (results.json) in the contract's shape, built by the pre-mortems' own
``premortems.common.headline``, for the tests of the gate and of what is written from it.

A record's plan verdict follows from its interval and threshold (headline applies the plan's
rule); its controlled verdict from the controlled comparison (passed when its interval lies above
its bound). So a test names what it wants by numbers, and the verdicts are the contract's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from actspace.core.io import to_json
from actspace.premortems.common import (
    control_record,
    controlled_test,
    headline,
    no_value_headline,
)

#: Offsets that put an interval above, across or below a threshold (the plan verdict).
PLAN = {"PASS": (0.05, 0.15), "INCONCLUSIVE": (-0.05, 0.05), "FAIL": (-0.15, -0.05)}


def _json(record: dict[str, Any]) -> dict[str, Any]:
    """As written to results.json (NaN becomes null)."""
    return json.loads(to_json(record))


def record(
    pm: str,
    value: float,
    ci: Sequence[float],
    threshold: float = 0.3,
    *,
    control: tuple[float, Sequence[float]] | None = None,
    comparison: tuple[float, Sequence[float], float] | None = None,
    n: int = 100,
) -> dict[str, Any]:
    """A measured record: ``control`` is (value, ci), ``comparison`` (value, ci, bound); both
    default to a control that the metric beats by 0.1 (CI [0.05, 0.15] against bound 0)."""
    control = control if control is not None else (value - 0.1, (ci[0] - 0.1, ci[1] - 0.1))
    comparison = comparison if comparison is not None else (0.1, (0.05, 0.15), 0.0)
    return _json(
        headline(
            pm,
            value=value,
            ci=tuple(ci),
            ci_level=0.95,
            threshold=threshold,
            n=n,
            started=time.perf_counter(),
            date="2025-01-01T00:00:00",
            description=f"{pm}'s metric",
            control=control_record("trivial", "what a trivial explanation gives", *control),
            controlled=controlled_test("metric - control", *comparison),
        )
    )


def verdicts_record(
    pm: str, plan: str, beats_control: bool = True, threshold: float = 0.3, n: int = 100
) -> dict[str, Any]:
    """A record whose plan verdict is ``plan`` and whose comparison with the control passes
    (``beats_control``) or not: the controlled verdict is then the contract's."""
    low, high = (round(threshold + offset, 6) for offset in PLAN[plan])
    value = round((low + high) / 2, 6)
    comparison = (0.1, (0.05, 0.15), 0.0) if beats_control else (0.01, (-0.03, 0.05), 0.0)
    control = round(value - comparison[0], 6)
    return record(
        pm,
        value,
        (low, high),
        threshold,
        control=(control, (round(control - 0.05, 6), round(control + 0.05, 6))),
        comparison=comparison,
        n=n,
    )


def no_value_record(pm: str, reason: str, threshold: float = 0.5) -> dict[str, Any]:
    """A pre-mortem that measured nothing: both verdicts INCONCLUSIVE, with its reason."""
    return _json(
        no_value_headline(
            pm,
            reason=reason,
            threshold=threshold,
            ci_level=0.95,
            started=time.perf_counter(),
            date="2025-01-01T00:00:00",
            description=f"{pm}'s metric",
        )
    )


def verdicts_file(plan: dict[str, str], controlled: dict[str, str]) -> dict[str, Any]:
    """The checkpoint's verdicts.json for these verdicts (through gate.measured_verdicts)."""
    from actspace.gate.decision import measured_verdicts

    results = {
        pm: verdicts_record(pm, plan[pm], beats_control=controlled[pm] == "PASS") for pm in plan
    }
    return measured_verdicts(results)
