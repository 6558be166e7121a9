"""The statistics as the paper shows them: one formatted row per pre-mortem and per comparison.

Every number is formatted once, here (through :mod:`.formatting`); the templates only place them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from actspace import plan
from actspace.analysis.paper.formatting import (
    MISSING,
    capitalized,
    format_effect,
    format_in_unit,
    format_number,
    format_p,
    metric_name,
    metric_unit,
    p_expression,
)
from actspace.analysis.paper.strongest import experiment_branch
from actspace.core import criteria as criteria_rules
from actspace.gate.decision import NO_VALUE, no_value


def _plan_order(key: str) -> tuple[int, str]:
    """Pre-mortems in the plan's order, any other key after them."""
    names = plan.PREMORTEM_NAMES
    return (names.index(key) if key in names else len(names), key)


def _premortem_forced(key: str, premortem: Mapping[str, Any], decision: Mapping[str, Any]) -> bool:
    forced = {str(name).lower() for name in decision.get("forced") or []}
    return bool(premortem.get("forced")) or key.lower() in forced


class _Unit:
    """How one metric's numbers are shown: its scale, and whether they are percentages."""

    def __init__(self, metric: str | None, values: list[Any]) -> None:
        self.scale, self.percent = metric_unit(metric, [v for v in values if v is not None])

    def number(self, value: Any) -> str:
        return format_in_unit(value, self.scale, percent=self.percent)

    def ci(self, ci: Any) -> str:
        if not ci or len(ci) != 2 or any(bound is None for bound in ci):
            return MISSING
        low, high = self.number(ci[0]), self.number(ci[1])
        return MISSING if MISSING in (low, high) else f"[{low}, {high}]"


def premortem_rows(
    statistics: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One formatted row per pre-mortem, forced verdicts marked, with both measured verdicts
    (plan and controlled) and the control.

    ``verdict`` is the effective verdict (measured, or forced); where a pre-mortem is marked forced
    but its record still carries the measured verdict, the forced one is taken from the
    configuration's ``gate.force``.
    """
    decision = statistics.get("decision") or {}
    force = ((config or {}).get("gate") or {}).get("force") or {}
    rows = []
    for key, pm in sorted(
        (statistics.get("premortems") or {}).items(), key=lambda item: _plan_order(item[0])
    ):
        metric = pm.get("metric")
        unit = _Unit(metric, [pm.get("value"), *(pm.get("ci") or [])])
        forced = _premortem_forced(key, pm, decision)
        verdict = pm.get("verdict") or MISSING
        measured = pm.get("measured_verdict") or verdict
        if forced and force.get(key) in ("PASS", "FAIL"):
            verdict = force[key]
        control = pm.get("control") or {}
        controlled = pm.get("controlled") or {}
        plan_rule = pm.get("plan_verdict") or MISSING
        controlled_rule = pm.get("controlled_verdict") or MISSING
        rows.append(
            {
                "key": key,
                "label": key.upper(),
                "name": pm.get("name") or key,
                "metric": metric_name(metric),
                "value": unit.number(pm.get("value")),
                "ci": unit.ci(pm.get("ci")),
                "threshold": unit.number(pm.get("threshold")),
                "verdict": verdict,
                "measured_verdict": measured,
                "forced": forced,
                "inconclusive": "INCONCLUSIVE" in (verdict, measured),
                # Both measured verdicts, the control and the comparison the controlled one
                # reads, in the metric's unit (the comparison is a difference of it, or it).
                "plan_verdict": plan_rule,
                "controlled_verdict": controlled_rule,
                "control_failed": plan_rule == "PASS" and controlled_rule == "FAIL",
                "has_control": bool(control),
                "control_name": control.get("name") or MISSING,
                "control_value": unit.number(control.get("value")),
                "control_ci": unit.ci(control.get("ci")),
                "comparison": controlled.get("statistic") or MISSING,
                "comparison_value": unit.number(controlled.get("value")),
                "comparison_ci": unit.ci(controlled.get("ci")),
                "comparison_bound": unit.number(controlled.get("bound")),
                "n": format_number(pm.get("n")),
                # A pre-mortem that measured nothing (INCONCLUSIVE with no value) and why.
                "has_value": not no_value(pm),
                "reason": str(pm.get("reason") or NO_VALUE).rstrip(".") if no_value(pm) else "",
            }
        )
    return rows


def experiment_name(comparison: Mapping[str, Any]) -> str:
    """The experiment as prose names it: the plan's title, with the headline's label
    (``behaviour editing by steering vectors (formality)``); a name the plan lacks in words."""
    experiment = comparison.get("experiment") or comparison.get("id") or ""
    if experiment in plan.EXPERIMENT_NAMES:
        name = plan.experiment(experiment).title
    else:
        name = str(experiment).replace("_", " ")
    label = comparison.get("label")
    return f"{name} ({str(label).replace('_', ' ')})" if label else name


_ASIDE = re.compile(r"\s+\([^()]*\)")


def rule_summary(rule: str) -> str:
    """A criterion's rule in brief, for the abstract: without its asides in parentheses and
    without what follows its first colon (the rules say "what must hold: how it is measured")."""
    brief = _ASIDE.sub("", str(rule)).split(": ", 1)[0]
    return " ".join(brief.split()).rstrip(".") or str(rule)


def criterion_rows(criteria: Any) -> list[dict[str, Any]]:
    """One formatted row per part of a success criterion (the contract of
    :func:`actspace.core.criteria.criterion`): its rule and its numbers."""
    rows = []
    for part in criteria or []:
        ci = part.get("ci")
        has_ci = bool(ci) and len(ci) == 2 and None not in ci
        value = format_number(part.get("value"))
        rows.append(
            {
                "kind": part.get("kind") or "plan",
                "rule": str(part.get("rule") or part.get("name") or MISSING).rstrip("."),
                "value": value,
                "ci": f"[{format_number(ci[0])}, {format_number(ci[1])}]" if has_ci else MISSING,
                "has_ci": has_ci,
                "measured": value != MISSING,
                "bound": format_number(part.get("bound")),
                "passed": part.get("passed"),
            }
        )
        rows[-1]["numbers"] = criterion_numbers(rows[-1])
        rows[-1]["summary"] = rule_summary(rows[-1]["rule"])
    return rows


def criterion_numbers(row: Mapping[str, Any]) -> str:
    """``0.400, 95% CI [0.260, 0.550], bound 2.00``; what is missing is left out."""
    parts = [row["value"] if row["measured"] else "not measured"]
    if row["has_ci"]:
        parts.append(f"95% CI {row['ci']}")
    if row["bound"] != MISSING:
        parts.append(f"bound {row['bound']}")
    return ", ".join(parts)


def comparison_rows(statistics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One formatted row per comparison, with what the Analysis section needs to discuss it."""
    alpha = float((statistics.get("holm") or {}).get("alpha", 0.05))
    rows = []
    for c in statistics.get("comparisons") or []:
        ci = c.get("ci")
        unit = _Unit(c.get("metric"), [c.get("value"), *(ci or [])])
        p_holm = c.get("p_holm")
        criteria = criterion_rows(c.get("criteria"))
        failed = criterion_rows(criteria_rules.failed(c.get("criteria")))
        significant = p_holm is not None and float(p_holm) < alpha
        ci_has_zero = (
            bool(ci) and len(ci) == 2 and None not in ci and float(ci[0]) <= 0.0 <= float(ci[1])
        )
        seeds = c.get("seeds") or {}
        rows.append(
            {
                "id": c.get("id"),
                "experiment": c.get("experiment") or c.get("id"),
                "branch": c.get("branch") or experiment_branch(c.get("experiment")) or "",
                "name": experiment_name(c),
                "title": capitalized(experiment_name(c)),
                "claim": c.get("claim") or "",
                "metric": metric_name(c.get("metric")),
                "value": unit.number(c.get("value")),
                "ci": unit.ci(ci),
                "has_ci": unit.ci(ci) != MISSING,
                "ci_has_zero": ci_has_zero,
                "test": c.get("test") or MISSING,
                "p": format_p(c.get("p_value")),
                "p_text": p_expression(c.get("p_value")),
                "p_holm": format_p(p_holm),
                "p_holm_text": p_expression(p_holm, "Holm-corrected p"),
                "has_p": c.get("p_value") is not None,
                "has_p_holm": p_holm is not None,
                "significant": significant,
                "effect": format_effect(c.get("effect_size")),
                # In the Holm family: statistics.json says so (held-out tests only); older
                # statistics put every test with a p-value in it.
                "in_holm": bool(c.get("in_holm_family", p_holm is not None)),
                "excluded_reason": str(c.get("excluded_from_family") or "").rstrip("."),
                "held_out": c.get("held_out"),
                "selection": str(c.get("selection") or "").rstrip("."),
                "criteria": criteria,
                "n_controls": sum(1 for part in criteria if part["kind"] == "control"),
                "failed": failed,
                "failed_control": any(part["kind"] == "control" for part in failed),
                "failed_text": "; ".join(
                    f"{part['rule']} ({criterion_numbers(part)})" for part in failed
                ),
                "n": format_number(c.get("n")),
                "success": c.get("success"),
                "success_rule": c.get("success_rule") or MISSING,
                "has_rule": bool(c.get("success_rule")),
                "verdict": c.get("verdict"),
                "n_seeds": len(seeds),
                "seed_mean": unit.number(c.get("seed_mean")),
                "seed_sd": unit.number(c.get("seed_sd")),
                "source": c.get("source") or MISSING,
                "negative": c.get("success") is False,
                # No criterion and not significant after correction: neither effect nor absence.
                "inconclusive": c.get("verdict") == "INCONCLUSIVE"
                or (c.get("success") is None and p_holm is not None and not significant),
            }
        )
    return rows
