"""A branch headline's success: the plan's criterion AND the experiment's controls, each recorded.

Every branch experiment with a success criterion lists the parts of it under ``criteria`` in its
results.json (one entry per part, see :func:`criterion`), and sets ``success`` from them with
:func:`success`. The summary and the paper then say which part failed (:func:`failed`), instead of
a bare "did not succeed". ``held_out`` on a headline (see :func:`held_out_record`) says whether the
unit it tests was chosen on other units than those it is tested on; only held-out tests enter the
Holm family of Phase 3 statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: The kinds of criterion: the plan's own rule, or a control the result must beat.
KINDS = ("plan", "control")


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def interval_above(ci: Sequence[float | None] | None, bound: float) -> bool | None:
    """True when the interval's lower end lies above ``bound``; None when there is no interval."""
    if ci is None or len(ci) != 2 or not _finite(ci[0]):
        return None
    return bool(float(ci[0]) > bound)


def criterion(
    name: str,
    *,
    kind: str,
    rule: str,
    value: float | None,
    ci: Sequence[float | None] | None,
    bound: float,
    passed: bool | None = None,
) -> dict[str, Any]:
    """One part of a success criterion, as ``criteria`` in results.json records it.

    ``name`` is a short identifier (``beats_shuffled_control``); ``rule`` says in words what must
    hold (``"the paired interval of transfer minus shuffled lies above 0"``); ``bound`` is the
    number the rule compares with. ``passed`` defaults to "the interval's lower end lies above
    ``bound``" (:func:`interval_above`); pass it explicitly for any other rule (a point estimate
    against a minimum, for example). None means it could not be measured.
    """
    if kind not in KINDS:
        raise ValueError(f"criterion kind must be one of {', '.join(KINDS)}, got {kind!r}")
    low, high = (list(ci) + [None, None])[:2] if ci is not None else (None, None)
    return {
        "name": name,
        "kind": kind,
        "rule": rule,
        "value": float(value) if _finite(value) else None,
        "ci": [float(low) if _finite(low) else None, float(high) if _finite(high) else None],
        "bound": float(bound),
        "passed": interval_above([low, high], bound) if passed is None else bool(passed),
    }


def success(criteria: Iterable[Mapping[str, Any]]) -> bool | None:
    """The headline's success: False when any part failed, None when a part (or every part) could
    not be measured, else True."""
    parts = [c.get("passed") for c in criteria]
    if not parts:
        return None
    if any(p is False for p in parts):
        return False
    if any(p is None for p in parts):
        return None
    return True


def failed(criteria: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The parts that failed, in the order the experiment lists them."""
    return [dict(c) for c in criteria or () if c.get("passed") is False]


def held_out_record(held_out: bool, selection: str) -> dict[str, Any]:
    """A headline's ``held_out`` and ``selection`` keys.

    ``held_out`` is True when whatever was chosen from the data (a layer, a cell, a setting) was
    chosen on other units than the test's; ``selection`` says in one sentence how it was chosen.
    A test whose units chose it is not a pre-registered test and stays out of the Holm family.
    """
    return {"held_out": bool(held_out), "selection": selection}
