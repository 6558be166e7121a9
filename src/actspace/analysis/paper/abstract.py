"""What the abstract templates see: the conditions Jinja tests and the values of the ``[SLOTS]``.

The abstract leads with the strongest held-out result that met its criterion; when none did, it
says so and reports the closest one as a negative result, naming the part of its criterion that
failed (its rule and numbers). Sentences whose grammar depends on a count (``neither
comparison``, ``two of the three``) are built here, so that the templates stay prose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace import plan
from actspace.analysis.paper.context import experiment_models, experiment_tasks, models_text
from actspace.analysis.paper.formatting import (
    MISSING,
    capitalized,
    count_phrase,
    format_number,
    join_words,
    none_of,
    number_word,
)
from actspace.analysis.paper.rows import (
    comparison_rows,
    criterion_rows,
    premortem_rows,
)
from actspace.analysis.paper.strongest import choose_strongest


def outcome_counts(statistics: Mapping[str, Any]) -> dict[str, int]:
    """How the comparisons ended: met on a held-out test, met only on the units that chose what
    it tests (``selected``), fell short, could not be judged (a part unmeasured), had no
    criterion."""
    comparisons = statistics.get("comparisons") or []
    counts = dict.fromkeys(("met", "selected", "short", "unjudged", "none"), 0)
    counts["total"] = len(comparisons)
    for c in comparisons:
        if c.get("success") is True:
            counts["met" if c.get("held_out") is not False else "selected"] += 1
        elif c.get("success") is False:
            counts["short"] += 1
        elif c.get("criteria"):
            counts["unjudged"] += 1
        else:
            counts["none"] += 1
    return counts


def _others(counts: Mapping[str, int], *, short: str) -> list[str]:
    """How the comparisons that did not meet their criteria on a held-out test ended."""
    phrases = {
        "selected": "met {} only on the units that chose {}",
        "short": short,
        "unjudged": "could not be judged",
        "none": "had none",
    }
    parts = []
    for key, phrase in phrases.items():
        n = counts[key]
        if n:
            words = ("its criterion", "it") if n == 1 else ("their criteria", "them")
            parts.append(f"{number_word(n)} {phrase.format(*words)}")
    return parts


def tally_sentence(counts: Mapping[str, int]) -> str:
    """How every comparison ended: ``Of the ten comparisons, two met their criteria, three did
    not and five had none.``, ``Neither comparison met its criteria.``; empty for a single
    comparison (the abstract has just described it)."""
    total = counts["total"]
    if total < 2:
        return ""
    met = counts["met"]
    if not met and counts["short"] == total:
        whose = "its" if total == 2 else "their"
        return f"{capitalized(none_of(total, 'comparison'))} met {whose} criteria."
    if not met and counts["none"] == total:
        return ""  # the abstract says that no held-out test had a criterion
    verb = "met its criterion" if met == 1 else "met their criteria"
    short = "did not" if met else "fell short"
    parts = ([f"{number_word(met)} {verb}"] if met else []) + _others(counts, short=short)
    return f"Of the {count_phrase(total, 'comparison')}, {join_words(parts)}."


NO_SUCCESS = "No line of work met its pre-registered criteria on a held-out test."


def branches_sentence(statistics: Mapping[str, Any], branch: str) -> str:
    """How many lines of work ran: ``all three ran``, ``two of the three ran``, ``only this
    one ran``."""
    ran = (statistics.get("decision") or {}).get("branches") or [branch]
    possible = [b.name for b in plan.BRANCHES if b.venues]
    n_ran = len([b for b in ran if b in possible]) or 1
    if n_ran == len(possible):
        return f"all {number_word(n_ran)} ran"
    if n_ran == 1:
        return "only this one ran"
    return f"{number_word(n_ran)} of the {number_word(len(possible))} ran"


def _lead_failed(strongest: Mapping[str, Any], row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The failed parts of the lead's criterion: choose_strongest's when it gives them."""
    given = strongest.get("failed_criteria")
    return criterion_rows(given) if given else list(row["failed"])


def failed_text(failed: list[Mapping[str, Any]]) -> str:
    """``one part of its criterion: <rule in brief> (<numbers>)``; with several failed parts,
    how many, and the first."""
    if not failed:
        return MISSING
    first = failed[0]
    part = f"{first['summary']} ({first['numbers']})"
    if len(failed) == 1:
        return f"one part of its criterion: {part}"
    return f"{number_word(len(failed))} parts of its criterion, the first: {part}"


def _holm_size(statistics: Mapping[str, Any]) -> int:
    holm = statistics.get("holm") or {}
    family = holm.get("family")
    if family is not None:
        return len(family)
    return int(holm.get("n_comparisons") or len(statistics.get("comparisons") or []))


#: The row the templates see when no result leads (no held-out comparison has a criterion).
_NO_LEAD: dict[str, Any] = {
    "name": MISSING, "claim": "", "metric": MISSING, "value": MISSING, "ci": MISSING,
    "n": MISSING, "test": MISSING, "p_text": MISSING, "p_holm_text": MISSING, "effect": MISSING,
    "success_rule": MISSING, "n_controls": 0, "failed": [], "selection": "", "seed_mean": MISSING,
    "seed_sd": MISSING, "success": None, "has_rule": False, "held_out": None, "has_ci": False,
    "has_p": False, "has_p_holm": False, "in_holm": False, "significant": False,
    "ci_has_zero": False, "n_seeds": 0,
}  # fmt: skip


def lead(statistics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """choose_strongest's answer and the formatted row of the result that leads (None: none)."""
    strongest = choose_strongest(statistics)
    if strongest.get("id") is None:
        return strongest, None
    row = next(r for r in comparison_rows(statistics) if r["id"] == strongest["id"])
    return strongest, row


def _premortem(statistics: Mapping[str, Any], config: Mapping[str, Any], branch: str):
    pm_key = plan.opening_premortem(branch)
    pm_row = next((r for r in premortem_rows(statistics, config) if r["key"] == pm_key), None)
    return pm_key, pm_row


def abstract_slots(statistics: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, str]:
    """The values of the abstracts' bracketed slots, as plain text.

    Every slot is filled from ``statistics.json`` (the strongest comparison, its branch's
    pre-mortem, the Holm family) or the configuration (models, tasks, seeds).
    """
    strongest, found = lead(statistics)
    row = found or _NO_LEAD
    best = strongest.get("comparison") or {}
    pm_key, pm_row = _premortem(statistics, config, strongest["branch"])
    holm = statistics.get("holm") or {}
    counts = outcome_counts(statistics)
    models = experiment_models(config, best.get("experiment"))
    tasks = experiment_tasks(config, best.get("experiment"))
    seeds = config.get("seeds") or [config.get("seed", 42)]
    pm = plan.premortem(pm_key) if pm_key in plan.PREMORTEM_NAMES else None

    controls = count_phrase(row["n_controls"], "control")

    def pm_value(key: str) -> str:
        return str(pm_row[key]) if pm_row else MISSING

    return {
        "MODELS": models_text(config, models),
        "N_MODELS": count_phrase(len(models), "language model"),
        "TASKS": join_words(tasks),
        "N_TASKS": count_phrase(len(tasks), "task"),
        "EXPERIMENT": row["name"],
        "CLAIM": row["claim"].rstrip(".") or row["name"],
        "METRIC": row["metric"],
        "VALUE": row["value"],
        "CI": row["ci"],
        "N": row["n"],
        "TEST": row["test"],
        "P": row["p_text"],
        "P_HOLM": row["p_holm_text"],
        "N_HOLM": count_phrase(_holm_size(statistics), "test"),
        "EFFECT": row["effect"],
        "ALPHA": format_number(holm.get("alpha", 0.05)),
        "SUCCESS_RULE": row["success_rule"],
        "CONTROLS": "its control" if row["n_controls"] == 1 else f"its {controls}",
        "FAILED": failed_text(_lead_failed(strongest, row)),
        "SELECTION": row["selection"] or MISSING,
        "TALLY": tally_sentence(counts),
        "NO_SUCCESS": NO_SUCCESS,
        "BRANCHES_RAN": branches_sentence(statistics, strongest["branch"]),
        "N_PREMORTEMS": number_word(len(plan.PREMORTEMS)),
        "N_SEEDS": count_phrase(len(seeds), "seed"),
        "SEED_MEAN": row["seed_mean"],
        "SEED_SD": row["seed_sd"],
        "PM_SUBJECT": pm.subject if pm else pm_value("name"),
        "PM_METRIC": pm_value("metric"),
        "PM_VALUE": pm_value("value"),
        "PM_CI": pm_value("ci"),
        "PM_THRESHOLD": pm_value("threshold"),
        "PM_VERDICT": pm_value("measured_verdict"),
        "PM_EFFECTIVE": pm_value("verdict"),
        "PM_REASON": (pm_row["reason"] or MISSING) if pm_row else MISSING,
    }


def abstract_context(statistics: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """What the abstract templates' Jinja conditions test (the prose itself lives in slots)."""
    strongest, found = lead(statistics)
    row = found or _NO_LEAD
    _, pm_row = _premortem(statistics, config, strongest["branch"])
    return {
        "leads": found is not None,
        "has_tally": bool(tally_sentence(outcome_counts(statistics))),
        "success": row["success"],
        "any_success": strongest["succeeded"],
        "closest": bool(strongest.get("closest", not strongest["succeeded"])),
        "has_failed": bool(_lead_failed(strongest, row)),
        "has_rule": row["has_rule"],
        "held_out": row["held_out"],
        "n_controls": row["n_controls"],
        "has_ci": row["has_ci"],
        "has_value": (strongest.get("comparison") or {}).get("value") is not None,
        "has_p": row["has_p"],
        "has_p_holm": row["has_p_holm"] and row["in_holm"],
        "has_effect": row["effect"] != MISSING,
        "has_n": row["n"] != MISSING,
        "significant": row["significant"] and row["in_holm"],
        "ci_has_zero": row["ci_has_zero"],
        "has_seeds": row["n_seeds"] > 1 and row["seed_sd"] != MISSING,
        "has_premortem": pm_row is not None,
        "pm_forced": bool(pm_row and pm_row["forced"]),
        "pm_inconclusive": bool(pm_row and pm_row["inconclusive"]),
        "pm_has_value": bool(pm_row is None or pm_row["has_value"]),
        "n_comparisons": len(statistics.get("comparisons") or []),
    }
