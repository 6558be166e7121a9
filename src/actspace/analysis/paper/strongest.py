"""The strongest result: which comparison the paper leads with, and so its line of work and venue.

The rule is fixed before the results are in (:data:`STRONGEST_RULE`); the venues are the plan's
(:attr:`actspace.plan.Branch.venues`: the target first, then the alternative).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from actspace import plan

#: The branches a paper can lead with: those with venues (not the abort branch).
PAPER_BRANCHES: tuple[plan.Branch, ...] = tuple(b for b in plan.BRANCHES if b.venues)

STRONGEST_RULE = (
    "Among the comparisons that met their pre-registered success criterion, the strongest result "
    "is the one with the smallest Holm-corrected p-value (ties: the larger absolute effect size, "
    "then the comparison id); if none met its criterion, the same order is applied to all "
    "comparisons, and the draft says that no experiment met its success criterion. A missing "
    "Holm-corrected p-value ranks after every present one. The line of work "
    f"({', '.join(b.name for b in PAPER_BRANCHES)}) of the strongest result selects the venue: "
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


def choose_strongest(statistics: Mapping[str, Any]) -> dict[str, Any]:
    """Pick the result the paper leads with, and with it the line of work and the venue.

    Rule (:data:`STRONGEST_RULE`): among comparisons whose ``success`` is true, the smallest
    Holm-corrected p (ties: the larger |effect size|, then the id); if none succeeded, the same
    order over all comparisons. A comparison that met its criterion beats any that did not, however
    small the other's p: the criterion was fixed before the data, the p-value was not.

    Returns ``{comparison, id, branch, venue, alternative_venue, succeeded, rule}``.
    Raises ValueError when there are no comparisons (the abort path writes no paper).
    """
    comparisons = list(statistics.get("comparisons") or [])
    if not comparisons:
        raise ValueError("statistics has no comparisons: no experiment branch ran, so no paper")
    for index, comparison in enumerate(comparisons):
        if "id" not in comparison:
            raise ValueError(f"comparison {index} has no 'id'")
    succeeded = [c for c in comparisons if c.get("success") is True]
    best = min(succeeded or comparisons, key=_strength_key)
    branch = _branch_of(best)
    venue, alternative = plan.branch(branch).venues
    return {
        "comparison": dict(best),
        "id": best["id"],
        "branch": branch,
        "venue": venue,
        "alternative_venue": alternative,
        "succeeded": bool(succeeded),
        "rule": STRONGEST_RULE,
    }
