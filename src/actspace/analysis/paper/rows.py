"""The statistics as the paper shows them: one formatted row per pre-mortem and per comparison.

Every number is formatted once, here (through :mod:`.formatting`); the templates only place them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace import plan
from actspace.analysis.paper.formatting import (
    MISSING,
    format_ci,
    format_effect,
    format_number,
    format_p,
    is_percentage_metric,
    p_expression,
)
from actspace.analysis.paper.strongest import experiment_branch
from actspace.gate.decision import NO_VALUE, no_value


def _plan_order(key: str) -> tuple[int, str]:
    """Pre-mortems in the plan's order, any other key after them."""
    names = plan.PREMORTEM_NAMES
    return (names.index(key) if key in names else len(names), key)


def _premortem_forced(key: str, premortem: Mapping[str, Any], decision: Mapping[str, Any]) -> bool:
    forced = {str(name).lower() for name in decision.get("forced") or []}
    return bool(premortem.get("forced")) or key.lower() in forced


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
        percent = is_percentage_metric(metric, [pm.get("value"), *(pm.get("ci") or [])])
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
                "metric": metric or MISSING,
                "value": format_number(pm.get("value"), percent=percent),
                "ci": format_ci(pm.get("ci"), percent=percent),
                "threshold": format_number(pm.get("threshold"), percent=percent),
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
                "control_value": format_number(control.get("value"), percent=percent),
                "control_ci": format_ci(control.get("ci"), percent=percent),
                "comparison": controlled.get("statistic") or MISSING,
                "comparison_value": format_number(controlled.get("value"), percent=percent),
                "comparison_ci": format_ci(controlled.get("ci"), percent=percent),
                "comparison_bound": format_number(controlled.get("bound"), percent=percent),
                "n": format_number(pm.get("n")),
                # A pre-mortem that measured nothing (INCONCLUSIVE with no value) and why.
                "has_value": not no_value(pm),
                "reason": str(pm.get("reason") or NO_VALUE).rstrip(".") if no_value(pm) else "",
            }
        )
    return rows


def comparison_rows(statistics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One formatted row per comparison, with what the Analysis section needs to discuss it."""
    alpha = float((statistics.get("holm") or {}).get("alpha", 0.05))
    rows = []
    for c in statistics.get("comparisons") or []:
        ci = c.get("ci")
        percent = is_percentage_metric(c.get("metric"), [c.get("value"), *(ci or [])])
        p_holm = c.get("p_holm")
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
                "claim": c.get("claim")
                or f"{c.get('experiment') or c.get('id')} shows the effect it was designed to find",
                "metric": c.get("metric") or MISSING,
                "value": format_number(c.get("value"), percent=percent),
                "ci": format_ci(ci, percent=percent),
                "has_ci": format_ci(ci, percent=percent) != MISSING,
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
                "n": format_number(c.get("n")),
                "success": c.get("success"),
                "success_rule": c.get("success_rule") or MISSING,
                "has_rule": bool(c.get("success_rule")),
                "verdict": c.get("verdict"),
                "n_seeds": len(seeds),
                "seed_mean": format_number(c.get("seed_mean"), percent=percent),
                "seed_sd": format_number(c.get("seed_sd"), percent=percent),
                "source": c.get("source") or MISSING,
                "negative": c.get("success") is False,
                # No criterion and not significant after correction: neither effect nor absence.
                "inconclusive": c.get("verdict") == "INCONCLUSIVE"
                or (c.get("success") is None and p_holm is not None and not significant),
            }
        )
    return rows
