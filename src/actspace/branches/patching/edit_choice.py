"""behavior_edit's choice of a steering setting and its headline's success criteria.

A setting is *within the perplexity budget* when the upper end of the 95% interval of its
neutral-text perplexity ratio is at most ``max_perplexity_ratio``. The budget is a limit on a side
effect, and saying that a setting keeps to it is a claim like a non-inferiority margin: its
interval must lie under the limit, or a setting whose true ratio sits at the limit would pass half
the time. The choice uses this rule on the *budget-check* half of the neutral texts, and the
headline's control uses it again on the *report* half, whose perplexity is the side effect
reported, so the control is not the check that chose the setting.

Among the settings within the budget, the one with the largest mean attribute shift on the
*selection* prompts is chosen; its shift is reported on the *report* prompts. When none is within
the budget nothing is chosen: the headline has no value and fails, naming the budget, and the
least-damaging setting is recorded as information only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from actspace.core.criteria import criterion, held_out_record
from actspace.core.criteria import success as criteria_success

#: How the setting is chosen, in one sentence (results.json and the headline's ``selection``).
SELECTION = (
    "the setting (layer x coefficient) with the largest mean attribute shift on the selection "
    "prompts among those within the perplexity budget on the budget-check neutral texts; "
    "reported on the report prompts and the report neutral texts, neither used to choose it"
)
#: Said wherever no setting could be chosen.
NONE_WITHIN_BUDGET = "no setting kept perplexity within the budget"


def within_budget(perplexity: Mapping[str, Any], max_ratio: float | None) -> bool:
    """Whether a perplexity record (:func:`~actspace.branches.patching.edit_stats.
    perplexity_ratio`) is within ``max_ratio``: the upper end of its 95% interval is at most the
    budget (an interval that could not be computed is not within it). None: no budget."""
    if max_ratio is None:
        return True
    high = (perplexity.get("ratio_ci") or [None, None])[1]
    return high is not None and math.isfinite(float(high)) and float(high) <= float(max_ratio)


def budget_rule(max_ratio: float | None) -> str:
    """The budget rule in words."""
    if max_ratio is None:
        return "no perplexity budget (max_perplexity_ratio is null): every setting may be chosen"
    return (
        f"the upper end of the 95% CI of the neutral-text perplexity ratio (steered over "
        f"unsteered) is at most {max_ratio:g}"
    )


def _setting(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "layer": entry["layer"],
        "coefficient": entry["coefficient"],
        "selection_shift": entry["selection"]["shift"],
        "report": entry["report"],
        "perplexity": entry["perplexity"],
        "budget_perplexity": entry["budget_perplexity"],
        "accuracy": entry.get("accuracy"),
    }


def choose_best(
    grid: Sequence[Mapping[str, Any]], max_ratio: float | None
) -> dict[str, Any] | None:
    """The setting with the largest selection-prompt shift among those whose budget-check
    perplexity (``budget_perplexity``) is within ``max_ratio`` (ties: the smaller coefficient);
    None when no setting is within it. The report half's perplexity plays no part."""
    if not grid:
        raise ValueError("empty steering grid")
    allowed = [g for g in grid if within_budget(g["budget_perplexity"], max_ratio)]
    if not allowed:
        return None
    best = max(allowed, key=lambda g: (g["selection"]["shift"], -abs(g["coefficient"])))
    return {
        **_setting(best),
        "within_perplexity_budget": True,
        "max_perplexity_ratio": max_ratio,
        "rule": f"largest mean attribute shift on the selection prompts among settings for which "
        f"{budget_rule(max_ratio)} on the budget-check neutral texts",
    }


def least_damaging(grid: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The setting with the lowest budget-check perplexity ratio: information only, not chosen
    (recorded when no setting is within the budget)."""
    if not grid:
        raise ValueError("empty steering grid")

    def ratio(g: Mapping[str, Any]) -> float:
        value = g["budget_perplexity"]["ratio"]
        return float(value) if math.isfinite(float(value)) else math.inf

    entry = min(grid, key=lambda g: (ratio(g), abs(g["coefficient"])))
    return {
        **_setting(entry),
        "chosen": False,
        "note": f"{NONE_WITHIN_BUDGET}; this is the setting that raised it least, for "
        "information only",
    }


def edit_criteria(result: Mapping[str, Any], max_ratio: float | None) -> list[dict[str, Any]]:
    """The headline's criteria: the plan's (the report prompts' shift at the chosen setting has a
    95% CI above 0), then the controls: the chosen setting's perplexity on the report neutral
    texts is within the budget (absent without a budget), and its shift beats a random direction
    of the same norm at the same layer and coefficient (paired over report prompts)."""
    best = result.get("best")
    report = (best or {}).get("report") or {}
    parts = [
        criterion(
            "shift_above_zero",
            kind="plan",
            rule="the report prompts' mean attribute shift (steered minus unsteered) at the "
            "chosen setting has a 95% CI above 0",
            value=report.get("shift"),
            ci=report.get("shift_ci"),
            bound=0.0,
        )
    ]
    if max_ratio is not None:
        rule = f"{budget_rule(max_ratio)} on the report neutral texts (held apart from the "
        rule += "budget-check texts that chose the setting)"
        if best is None:
            parts.append(
                criterion(
                    "perplexity_within_budget",
                    kind="control",
                    rule=f"{NONE_WITHIN_BUDGET}: no setting met the rule that {rule}",
                    value=None,
                    ci=None,
                    bound=max_ratio,
                    passed=False,
                )
            )
        else:
            ppl = best["perplexity"]
            parts.append(
                criterion(
                    "perplexity_within_budget",
                    kind="control",
                    rule=rule,
                    value=ppl["ratio"],
                    ci=ppl["ratio_ci"],
                    bound=max_ratio,
                    passed=within_budget(ppl, max_ratio),
                )
            )
    random = (best or {}).get("random_direction") or {}
    parts.append(
        criterion(
            "beats_random_direction",
            kind="control",
            rule="the report prompts' mean attribute score under the steering vector minus under "
            "a random direction of the same norm (same layer, coefficient and sampling seeds) "
            "has a 95% CI above 0",
            value=random.get("steered_minus_random"),
            ci=random.get("steered_minus_random_ci"),
            bound=0.0,
        )
    )
    return parts


def headline(attribute: str, result: Mapping[str, Any], max_ratio: float | None) -> dict[str, Any]:
    """The attribute's main result: the report-prompt shift at the chosen setting, with its
    criteria; no value (and no success) when no setting was within the budget."""
    best = result.get("best")
    parts = edit_criteria(result, max_ratio)
    head: dict[str, Any] = {
        "label": attribute,
        "metric": "attribute_shift_at_best_setting",
        "value": None if best is None else best["report"]["shift"],
        "ci": [None, None] if best is None else best["report"]["shift_ci"],
        "n": 0 if best is None else best["report"]["n"],
        "success": criteria_success(parts),
        "criteria": parts,
        "success_rule": "; ".join(p["rule"] for p in parts),
        "setting": None
        if best is None
        else {"layer": best["layer"], "coefficient": best["coefficient"]},
        "comparison": None if best is None else best.get("comparison"),
        **held_out_record(True, SELECTION),
    }
    if best is None:
        head["note"] = f"{NONE_WITHIN_BUDGET} ({budget_rule(max_ratio)}); nothing was chosen"
    return head
