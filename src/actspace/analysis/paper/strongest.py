"""The strongest result: which comparison the paper leads with, and so its line of work and venue.

The rule is fixed before the results are in (:data:`STRONGEST_RULE`); the venues are the plan's
(:attr:`actspace.plan.Branch.venues`: the target first, then the alternative). Only held-out tests
can lead: a result whose units chose what it tests would lead by its own selection. The summary
(:mod:`actspace.analysis.summary`) leads with the same result, so the paper and the summary agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from actspace import plan

#: The branches a paper can lead with: those with venues (not the abort branch).
PAPER_BRANCHES: tuple[plan.Branch, ...] = tuple(b for b in plan.BRANCHES if b.venues)

STRONGEST_RULE = (
    "The paper leads with the strongest held-out result that met its criteria: among the "
    "comparisons whose success criterion (the plan's rule and every control) held and whose test "
    "was held out (what it tests was chosen on other units than those it is tested on), the one "
    "with the smallest Holm-corrected p-value (ties: the larger absolute effect size, then the "
    "comparison id; a missing Holm-corrected p-value ranks after every present one). A "
    "comparison that is not held out never leads, whatever its p-value or outcome. If no "
    "held-out comparison met its criteria, the draft says that no line of work met its criteria "
    "and reports the closest held-out comparison as a negative result: among the held-out "
    "comparisons that failed their criteria, a measured one before one with no value, then the "
    "one with the fewest failed parts (ties: the "
    "smallest Holm-corrected p-value, the larger absolute effect size, then the id), with the "
    "failed parts named. If no held-out comparison has a success criterion, no result leads and "
    "the first line of work the gate ran selects the venue. The line of work "
    f"({', '.join(b.name for b in PAPER_BRANCHES)}) of the result that leads selects the venue: "
    + ", ".join(f"{b.venues[0]} (alternative {b.venues[1]}) for {b.name}" for b in PAPER_BRANCHES)
    + "."
)


def experiment_branch(experiment: str | None) -> str | None:
    """The branch of a plan experiment; None for a name the plan does not know."""
    return plan.experiment_branch(experiment) if experiment in plan.EXPERIMENT_NAMES else None


def _branch_of(comparison: Mapping[str, Any]) -> str:
    branch = comparison.get("branch") or experiment_branch(comparison.get("experiment"))
    allowed = [b.name for b in PAPER_BRANCHES]
    if branch not in allowed:
        raise ValueError(
            f"comparison {comparison.get('id')!r} has no known branch "
            f"(got {branch!r}; allowed: {', '.join(allowed)})"
        )
    return branch


def _abs_effect(comparison: Mapping[str, Any]) -> float:
    effect = comparison.get("effect_size") or {}
    value = effect.get("value") if isinstance(effect, Mapping) else None
    if value is None or not math.isfinite(float(value)):
        return -math.inf
    return abs(float(value))


def _strength_key(comparison: Mapping[str, Any]) -> tuple[bool, float, float, str]:
    p = comparison.get("p_holm")
    missing = p is None or not math.isfinite(float(p))
    return (missing, 0.0 if missing else float(p), -_abs_effect(comparison), str(comparison["id"]))


def failed_parts(comparison: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The failed parts of a comparison's criteria (full dicts), in the experiment's order.

    A failed comparison that records no parts gets one: its success rule as a whole, so that the
    failure is always named.
    """
    parts = [dict(c) for c in comparison.get("criteria") or [] if c.get("passed") is False]
    if parts or comparison.get("success") is not False:
        return parts
    return [
        {
            "name": "success_criterion",
            "kind": "plan",
            "rule": comparison.get("success_rule") or "the experiment's success criterion",
            "value": comparison.get("value"),
            "ci": comparison.get("ci"),
            "bound": None,
            "passed": False,
        }
    ]


def _closeness_key(comparison: Mapping[str, Any]) -> tuple[bool, int, bool, float, float, str]:
    """A measured failure comes before one with no value (e.g. a steering attribute whose every
    setting broke the budget, so nothing was measured), then the fewest failed parts."""
    unmeasured = comparison.get("value") is None
    return (unmeasured, len(failed_parts(comparison)), *_strength_key(comparison))


def is_held_out(comparison: Mapping[str, Any]) -> bool:
    """Whether a comparison's test was held out; a missing ``held_out`` counts as not held out."""
    return comparison.get("held_out") is True


def _fallback_branch(statistics: Mapping[str, Any], comparisons: list[dict[str, Any]]) -> str:
    """The first line of work the gate ran that has a comparison (when no result leads)."""
    ran = [_branch_of(c) for c in comparisons]
    scheduled = (statistics.get("decision") or {}).get("branches") or []
    return next((b for b in scheduled if b in ran), ran[0])


def choose_strongest(statistics: Mapping[str, Any]) -> dict[str, Any]:
    """Pick the result the paper leads with, and with it the line of work and the venue.

    Rule (:data:`STRONGEST_RULE`): among held-out comparisons whose ``success`` is true, the
    smallest Holm-corrected p (ties: the larger |effect size|, then the id). A comparison that met
    its criterion beats any that did not, however small the other's p: the criterion was fixed
    before the data, the p-value was not. A comparison that is not held out never leads, not even
    as the closest negative: its units chose what it tests, so neither its success nor its
    failure is a test of the claim. If no held-out comparison succeeded, the closest held-out
    failure (measured first, then the fewest failed parts) is reported, with ``closest`` True
    and its ``failed_criteria``.
    If no held-out comparison has a criterion, ``comparison`` and ``id`` are None and the first
    branch the gate ran (that has a comparison) gives the venue.

    Returns ``{comparison, id, branch, venue, alternative_venue, succeeded, closest,
    failed_criteria, not_held_out_successes, rule}``; ``not_held_out_successes`` are the ids that
    met their criteria on their own selection units (they cannot lead; the reports say so).
    Raises ValueError when there are no comparisons (the abort path writes no paper).
    """
    comparisons = list(statistics.get("comparisons") or [])
    if not comparisons:
        raise ValueError("statistics has no comparisons: no experiment branch ran, so no paper")
    for index, comparison in enumerate(comparisons):
        if "id" not in comparison:
            raise ValueError(f"comparison {index} has no 'id'")
    held_out = [c for c in comparisons if is_held_out(c)]
    succeeded = [c for c in held_out if c.get("success") is True]
    failures = [c for c in held_out if c.get("success") is False]
    if succeeded:
        best: dict[str, Any] | None = dict(min(succeeded, key=_strength_key))
    elif failures:
        best = dict(min(failures, key=_closeness_key))
    else:
        best = None
    branch = _branch_of(best) if best else _fallback_branch(statistics, comparisons)
    venue, alternative = plan.branch(branch).venues
    return {
        "comparison": best,
        "id": best["id"] if best else None,
        "branch": branch,
        "venue": venue,
        "alternative_venue": alternative,
        "succeeded": bool(succeeded),
        "closest": best is not None and not succeeded,
        "failed_criteria": failed_parts(best) if best and not succeeded else [],
        "not_held_out_successes": [
            c["id"] for c in comparisons if c.get("success") is True and not is_held_out(c)
        ],
        "rule": STRONGEST_RULE,
    }
