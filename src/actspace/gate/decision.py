"""The gate: from the pre-mortems' verdicts to the branches of the plan that run.

The checkpoint records the *measured* verdicts (``verdicts.json``); the decision applies
``gate.force`` on top of them. Keeping the two apart means that forcing a verdict for a preview
never re-runs the checkpoint, and that everything written from the decision says what was forced.
The pre-mortems, the branch each opens and the decision table are the plan's
(:mod:`actspace.plan`); this module only applies them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from actspace import plan
from actspace.plan import branches_for, planning_verdict

#: The verdicts ``gate.force`` may set (a forced verdict is never INCONCLUSIVE).
FORCEABLE = ("PASS", "FAIL")
#: Why a pre-mortem has no value when its results.json does not say.
NO_VALUE = "the pre-mortem recorded no value"


class VerdictsError(ValueError):
    """The checkpoint's verdicts.json cannot be read as the gate wrote it (one line, names it)."""


def _verdicts_rule() -> str:
    names = ", ".join(plan.PREMORTEM_NAMES)
    return (
        f"it must map each pre-mortem ({names}) to its record, whose verdict is one of "
        f"{', '.join(plan.VERDICTS[:-1])} or {plan.VERDICTS[-1]}; delete it and the gate "
        "measures the verdicts again"
    )


def read_verdicts(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The checkpoint's ``verdicts.json``, checked: a record with a known verdict per pre-mortem.

    Raises :class:`VerdictsError` naming the file, what is wrong and what is allowed.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = getattr(error, "msg", None) or "not UTF-8"
        raise VerdictsError(f"{path}: not valid JSON ({reason}); {_verdicts_rule()}") from None
    if not isinstance(record, dict):
        raise VerdictsError(
            f"{path}: a JSON {type(record).__name__} instead of an object; {_verdicts_rule()}"
        )
    for pm in plan.PREMORTEM_NAMES:
        info = record.get(pm)
        if not isinstance(info, dict):
            raise VerdictsError(f"{path}: no record for {pm}; {_verdicts_rule()}")
        verdict = info.get("verdict")
        if verdict not in plan.VERDICTS:
            raise VerdictsError(f"{path}: {pm}.verdict {verdict!r} is unknown; {_verdicts_rule()}")
    return record


def effective_verdicts(
    measured: Mapping[str, str], force: Mapping[str, str | None] | None
) -> dict[str, dict[str, Any]]:
    """Each pre-mortem's measured verdict with any forced verdict applied on top."""
    force = force or {}
    out: dict[str, dict[str, Any]] = {}
    for pm in plan.PREMORTEM_NAMES:
        forced = force.get(pm)
        if forced is not None and forced not in FORCEABLE:
            raise ValueError(f"gate.force.{pm}: {forced!r} is not allowed (PASS, FAIL or null)")
        measured_verdict = measured.get(pm)
        if forced is None and measured_verdict is None:
            raise ValueError(f"no verdict for {pm}: it was neither measured nor forced")
        verdict = forced if forced is not None else measured_verdict
        out[pm] = {
            "verdict": verdict,
            "planning_verdict": planning_verdict(verdict),
            "measured_verdict": measured_verdict,
            "forced": forced is not None,
        }
    return out


def forced_branches(force: Mapping[str, str | None] | None) -> list[str] | None:
    """The branches when every verdict is forced (no measurement needed), else None."""
    force = force or {}
    if all(force.get(pm) in FORCEABLE for pm in plan.PREMORTEM_NAMES):
        return branches_for({pm: force[pm] for pm in plan.PREMORTEM_NAMES})
    return None


def _number(value: Any) -> Any:
    """``value`` as recorded when it is a finite number; None for null, NaN and infinities."""
    if value is None or isinstance(value, bool):
        return None
    return value if math.isfinite(float(value)) else None


def measured_verdicts(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The checkpoint's record: each pre-mortem's metric, CI, threshold and verdict.

    A pre-mortem with no value (PM3 with no usable pair, say) is recorded with ``value`` None and
    the ``reason`` its results.json gives (its ``reason`` or ``note``); its verdict must be
    INCONCLUSIVE, as nothing was measured to pass or fail.
    """
    record = {}
    for pm in plan.PREMORTEMS:
        res = results[pm.name]
        verdict = res.get("verdict")
        if verdict not in plan.VERDICTS:
            raise ValueError(f"{pm.name} results.json has no valid verdict (got {verdict!r})")
        value = _number(res.get("value"))
        ci = list(res.get("ci") or [None, None])
        if len(ci) != 2:
            raise ValueError(f"{pm.name} results.json: ci must be [low, high], got {ci!r}")
        ci = [_number(bound) for bound in ci]
        if value is None and verdict != "INCONCLUSIVE":
            raise ValueError(
                f"{pm.name} results.json: verdict {verdict} but no value; a pre-mortem that "
                "measured nothing is INCONCLUSIVE"
            )
        record[pm.name] = {
            "title": pm.title,
            "metric": res["metric"],
            "value": value,
            "ci": ci,
            "ci_level": res.get("ci_level", 0.95),
            "threshold": res["threshold"],
            "verdict": verdict,
            "n": res.get("n"),
        }
        if value is None:
            record[pm.name]["reason"] = str(res.get("reason") or res.get("note") or NO_VALUE)
    return record


def decide(
    measured: Mapping[str, Mapping[str, Any]], force: Mapping[str, str | None] | None
) -> dict[str, Any]:
    """The effective decision: verdicts (measured and forced), the table row and the branches."""
    names = plan.PREMORTEM_NAMES
    verdicts = effective_verdicts({pm: measured[pm]["verdict"] for pm in measured}, force)
    branches = branches_for({pm: verdicts[pm]["verdict"] for pm in names})
    premortems = {pm: {**measured.get(pm, {}), **verdicts[pm]} for pm in names}
    return {
        "premortems": premortems,
        "row": [verdicts[pm]["planning_verdict"] for pm in names],
        "branches": branches,
        "abort": branches == [plan.ABORT],
        "forced": [pm for pm in names if verdicts[pm]["forced"]],
        "inconclusive": [pm for pm in names if verdicts[pm]["verdict"] == "INCONCLUSIVE"],
    }


def no_value(info: Mapping[str, Any]) -> bool:
    """Whether a pre-mortem's record (measured, not forced) holds no value."""
    return bool(info.get("measured_verdict", info.get("verdict"))) and info.get("value") is None


def no_value_sentence(label: str, info: Mapping[str, Any]) -> str:
    """What a pre-mortem with no value means for the plan, with the reason it gives."""
    reason = str(info.get("reason") or NO_VALUE).rstrip(".")
    if info.get("forced"):
        then = f"its verdict was forced to {info['verdict']}, so its branch runs on that override"
    else:
        then = "the plan counts this as FAIL for scheduling, and the paper's discussion must say so"
    return f"INCONCLUSIVE with no value: {label} measured nothing ({reason}); {then}."


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _labels(names: list[str]) -> str:
    return ", ".join(plan.premortem(pm).label for pm in names)


def decision_markdown(decision: Mapping[str, Any]) -> str:
    """A page for a person: the verdicts, the row of the table, the branches scheduled."""
    labels = [pm.label for pm in plan.PREMORTEMS]
    lines = ["# Gate decision", ""]
    if decision["forced"]:
        forced = _labels(decision["forced"])
        lines += [f"**Forced verdicts: {forced}.** These did not come from the measurements.", ""]
    lines += [
        "| Pre-mortem | Metric | Value | 95% CI | Threshold | Measured | Verdict used |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for pm in plan.PREMORTEMS:
        info = decision["premortems"][pm.name]
        ci = info.get("ci") or [None, None]
        used = info["verdict"] + (" (forced)" if info["forced"] else "")
        lines.append(
            f"| {pm.title} | {info.get('metric', 'n/a')} | {_fmt(info.get('value'))} "
            f"| [{_fmt(ci[0])}, {_fmt(ci[1])}] | {_fmt(info.get('threshold'))} "
            f"| {info.get('measured_verdict') or 'not measured'} | {used} |"
        )
    row = " / ".join(decision["row"])
    names = ", ".join(f"{b} ({plan.branch(b).title})" for b in decision["branches"])
    lines += [
        "",
        f"Decision-table row ({' / '.join(labels)}): **{row}**.",
        "",
        f"Scheduled: {names}.",
    ]
    premortems = decision["premortems"]
    straddling = [pm for pm in decision["inconclusive"] if not no_value(premortems[pm])]
    if straddling:
        lines += [
            "",
            f"INCONCLUSIVE: {_labels(straddling)}. The confidence interval straddles "
            "the threshold; the plan counts this as FAIL for scheduling, and the paper's "
            "discussion must say so.",
        ]
    for pm in plan.PREMORTEMS:
        info = premortems[pm.name]
        if no_value(info):
            lines += ["", no_value_sentence(pm.label, info)]
    lines += [
        "",
        "The decision table:",
        "",
        "| " + " | ".join(labels) + " | Branches |",
        "| --- " * (len(labels) + 1) + "|",
    ]
    for verdicts, branches in plan.decision_table():
        mark = " **<-**" if verdicts == list(decision["row"]) else ""
        lines.append(f"| {' | '.join(verdicts)} | {', '.join(branches)}{mark} |")
    return "\n".join(lines) + "\n"


__all__ = [
    "FORCEABLE",
    "NO_VALUE",
    "VerdictsError",
    "branches_for",
    "decide",
    "decision_markdown",
    "effective_verdicts",
    "forced_branches",
    "measured_verdicts",
    "no_value",
    "no_value_sentence",
    "planning_verdict",
    "read_verdicts",
]
