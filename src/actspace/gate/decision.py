"""The gate: from the pre-mortems' verdicts to the branches of the plan that run.

Each pre-mortem measures two verdicts: the *plan verdict* (the plan's threshold rule on the
metric's interval) and the *controlled verdict* (PASS only when the plan verdict passes AND the
metric beats its control). The checkpoint records both, as measured (``verdicts.json``); the
decision then takes the verdict ``gate.criterion`` names and applies ``gate.force`` on top.
Keeping the checkpoint free of both settings means that switching the criterion or forcing a
verdict for a preview never re-runs the checkpoint or the pre-mortems, and that everything
written from the decision says which criterion decided and what was forced. The pre-mortems, the
branch each opens and the decision table are the plan's (:mod:`actspace.plan`); this module only
applies them.
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
#: The values of ``gate.criterion``: which measured verdict the gate uses (the schema's enum).
CRITERIA = ("controlled", "plan")
#: The two measured verdicts of every pre-mortem record, in the order reports show them.
VERDICT_KEYS = ("plan_verdict", "controlled_verdict")
#: Why a pre-mortem has no value when its results.json does not say.
NO_VALUE = "the pre-mortem recorded no value"


class VerdictsError(ValueError):
    """The checkpoint's verdicts.json cannot be read as the gate wrote it (one line, names it)."""


def _allowed_verdicts() -> str:
    return f"{', '.join(plan.VERDICTS[:-1])} or {plan.VERDICTS[-1]}"


def _verdicts_rule() -> str:
    names = ", ".join(plan.PREMORTEM_NAMES)
    return (
        f"it must map each pre-mortem ({names}) to its record, whose plan_verdict and "
        f"controlled_verdict are each one of {_allowed_verdicts()}; delete it and the gate "
        "measures the verdicts again"
    )


def read_verdicts(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The checkpoint's ``verdicts.json``, checked: per pre-mortem a record with both verdicts.

    Raises :class:`VerdictsError` naming the file, what is wrong and what is allowed. A file
    written before the two verdicts existed (a ``verdict`` key only) is refused the same way: it
    names the missing key, and deleting it lets the gate measure again.
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
        for key in VERDICT_KEYS:
            if key not in info:
                raise VerdictsError(f"{path}: {pm} has no {key}; {_verdicts_rule()}")
            if info[key] not in plan.VERDICTS:
                raise VerdictsError(
                    f"{path}: {pm}.{key} {info[key]!r} is unknown; {_verdicts_rule()}"
                )
    return record


def check_criterion(criterion: str) -> str:
    """``criterion`` when it is one of :data:`CRITERIA`; a one-line ValueError naming the key."""
    if criterion not in CRITERIA:
        raise ValueError(f"gate.criterion: {criterion!r} is not allowed ({' or '.join(CRITERIA)})")
    return criterion


def other_criterion(criterion: str) -> str:
    """The criterion that did not decide, for the reports' "under the other criterion"."""
    return next(c for c in CRITERIA if c != check_criterion(criterion))


def effective_verdicts(
    records: Mapping[str, Mapping[str, Any]],
    force: Mapping[str, str | None] | None,
    criterion: str,
) -> dict[str, dict[str, Any]]:
    """Each pre-mortem's verdict as the gate uses it: the measured verdict ``criterion`` names
    (``<criterion>_verdict`` of its record in ``records``), with any forced verdict on top.

    ``records`` are the checkpoint's (or anything with the two verdict keys); a pre-mortem whose
    verdict is forced needs no record. Each entry keeps both measured verdicts beside the one used.
    """
    check_criterion(criterion)
    key = f"{criterion}_verdict"
    force = force or {}
    out: dict[str, dict[str, Any]] = {}
    for pm in plan.PREMORTEM_NAMES:
        forced = force.get(pm)
        if forced is not None and forced not in FORCEABLE:
            raise ValueError(f"gate.force.{pm}: {forced!r} is not allowed (PASS, FAIL or null)")
        record = records.get(pm) or {}
        measured = record.get(key)
        if forced is None and measured is None:
            raise ValueError(f"no {key} for {pm}: it was neither measured nor forced")
        verdict = forced if forced is not None else measured
        out[pm] = {
            "plan_verdict": record.get("plan_verdict"),
            "controlled_verdict": record.get("controlled_verdict"),
            "verdict": verdict,
            "planning_verdict": planning_verdict(verdict),
            "measured_verdict": measured,
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


def _interval(pm: str, where: str, ci: Any) -> list[Any]:
    ci = list(ci or [None, None])
    if len(ci) != 2:
        raise ValueError(f"{pm} results.json: {where} must be [low, high], got {ci!r}")
    return [_number(bound) for bound in ci]


def _block(pm: str, res: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    block = res.get(key)
    if block is not None and not isinstance(block, Mapping):
        raise ValueError(f"{pm} results.json: {key} must be an object or null, got {block!r}")
    return block


def _control(pm: str, res: Mapping[str, Any]) -> dict[str, Any] | None:
    """The control as recorded: what the trivial explanation gives on the same items."""
    control = _block(pm, res, "control")
    if control is None:
        return None
    return {
        "name": control.get("name"),
        "description": control.get("description"),
        "value": _number(control.get("value")),
        "ci": _interval(pm, "control.ci", control.get("ci")),
    }


def _controlled(pm: str, res: Mapping[str, Any]) -> dict[str, Any] | None:
    """The comparison the controlled verdict reads, as recorded."""
    controlled = _block(pm, res, "controlled")
    if controlled is None:
        return None
    return {
        "statistic": controlled.get("statistic"),
        "value": _number(controlled.get("value")),
        "ci": _interval(pm, "controlled.ci", controlled.get("ci")),
        "bound": _number(controlled.get("bound")),
        "passed": bool(controlled.get("passed")),
    }


def _measured_pair(pm: str, res: Mapping[str, Any], value: Any) -> tuple[str, str]:
    """The record's two verdicts, checked against the contract (premortems.common.headline)."""
    verdicts = []
    for key in VERDICT_KEYS:
        verdict = res.get(key)
        if verdict not in plan.VERDICTS:
            raise ValueError(
                f"{pm} results.json: {key} {verdict!r} is not one of {_allowed_verdicts()}"
            )
        verdicts.append(verdict)
    plan_rule, controlled = verdicts
    if plan_rule == "PASS" and controlled not in FORCEABLE:
        raise ValueError(
            f"{pm} results.json: controlled_verdict {controlled} with plan_verdict PASS; after a "
            "plan PASS the controlled verdict is PASS or FAIL"
        )
    if plan_rule != "PASS" and controlled != plan_rule:
        raise ValueError(
            f"{pm} results.json: controlled_verdict {controlled} with plan_verdict {plan_rule}; "
            "the controlled verdict differs from the plan's only after a plan PASS"
        )
    if value is None and plan_rule != "INCONCLUSIVE":
        raise ValueError(
            f"{pm} results.json: plan_verdict {plan_rule} but no value; a pre-mortem that "
            "measured nothing is INCONCLUSIVE"
        )
    return plan_rule, controlled


def measured_verdicts(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The checkpoint's record: per pre-mortem its metric, value, CI, threshold, n, both
    verdicts, its control and the controlled comparison.

    Neither ``gate.criterion`` nor ``gate.force`` enters here (the decision applies them). A
    pre-mortem with no value (PM3 with no usable pair, say) is recorded with ``value`` None and
    the ``reason`` its results.json gives (its ``reason`` or ``note``); both its verdicts must be
    INCONCLUSIVE, as nothing was measured to pass or fail.
    """
    record = {}
    for pm in plan.PREMORTEMS:
        res = results[pm.name]
        value = _number(res.get("value"))
        plan_rule, controlled_rule = _measured_pair(pm.name, res, value)
        record[pm.name] = {
            "title": pm.title,
            "metric": res["metric"],
            "value": value,
            "ci": _interval(pm.name, "ci", res.get("ci")),
            "ci_level": res.get("ci_level", 0.95),
            "threshold": res["threshold"],
            "n": res.get("n"),
            "plan_verdict": plan_rule,
            "controlled_verdict": controlled_rule,
            "control": _control(pm.name, res),
            "controlled": _controlled(pm.name, res),
        }
        if value is None:
            record[pm.name]["reason"] = str(res.get("reason") or res.get("note") or NO_VALUE)
    return record


def decide(
    measured: Mapping[str, Mapping[str, Any]],
    force: Mapping[str, str | None] | None,
    criterion: str,
) -> dict[str, Any]:
    """The effective decision under ``criterion`` (``gate.criterion``): verdicts (measured and
    forced), the table row and the branches.

    It also records the pre-mortems whose two verdicts disagree and the branches the other
    criterion would have scheduled (with the same forcing), so that every report can say what
    the choice of criterion changed.
    """
    names = plan.PREMORTEM_NAMES
    verdicts = effective_verdicts(measured, force, criterion)
    branches = branches_for({pm: verdicts[pm]["verdict"] for pm in names})
    other = other_criterion(criterion)
    under_other = effective_verdicts(measured, force, other)
    premortems = {pm: {**measured.get(pm, {}), **verdicts[pm]} for pm in names}
    return {
        "criterion": criterion,
        "premortems": premortems,
        "row": [verdicts[pm]["planning_verdict"] for pm in names],
        "branches": branches,
        "abort": branches == [plan.ABORT],
        "forced": [pm for pm in names if verdicts[pm]["forced"]],
        "inconclusive": [pm for pm in names if verdicts[pm]["verdict"] == "INCONCLUSIVE"],
        "disagree": [
            pm
            for pm in names
            if premortems[pm]["plan_verdict"] != premortems[pm]["controlled_verdict"]
        ],
        "other_criterion": {
            "criterion": other,
            "branches": branches_for({pm: under_other[pm]["verdict"] for pm in names}),
        },
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


# --- what every report says about the two verdicts -----------------------------------------------


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci_text(ci: Any) -> str:
    low, high = (list(ci) if ci else [None, None])[:2]
    return f"[{_fmt(low)}, {_fmt(high)}]"


def control_text(info: Mapping[str, Any]) -> str:
    """The control's value and interval (``0.598 [0.552, 0.640]``), ``n/a`` when none."""
    control = info.get("control")
    if not control:
        return "n/a"
    return f"{_fmt(control.get('value'))} {_ci_text(control.get('ci'))}"


def comparison_text(info: Mapping[str, Any]) -> str:
    """The controlled comparison's value and interval against its bound, ``n/a`` when none."""
    controlled = info.get("controlled")
    if not controlled:
        return "n/a"
    return (
        f"{_fmt(controlled.get('value'))} {_ci_text(controlled.get('ci'))} "
        f"(bound {_fmt(controlled.get('bound'))})"
    )


def criterion_sentence(criterion: str | None) -> str:
    """Which verdict decided, in a sentence the Markdown reports share."""
    if criterion == "plan":
        return (
            "The gate decided on the **plan** verdicts (`gate.criterion: plan`): the plan's "
            "threshold rule alone; the controlled verdicts (the metric must also beat its "
            "control) are shown beside them."
        )
    if criterion == "controlled":
        return (
            "The gate decided on the **controlled** verdicts (`gate.criterion: controlled`): "
            "PASS only when the plan's threshold rule passes AND the metric beats its control; "
            "the plan verdicts are shown beside them."
        )
    return "The decision records no criterion."


def other_criterion_sentence(decision: Mapping[str, Any]) -> str:
    """What the other criterion would have scheduled (with the same forcing)."""
    other = decision.get("other_criterion") or {}
    if not other:
        return ""
    branches = list(other.get("branches") or [])
    if branches == list(decision["branches"]):
        return f"The {other['criterion']} criterion schedules the same branches."
    names = ", ".join(f"{b} ({plan.branch(b).title})" for b in branches)
    return f"Under the {other['criterion']} criterion the gate would have scheduled: {names}."


def disagreement_sentence(label: str, info: Mapping[str, Any]) -> str:
    """Why a pre-mortem's two verdicts differ: it clears the threshold, not its control."""
    control = info.get("control") or {}
    name = control.get("name") or "its control"
    return (
        f"{label}: plan verdict {info.get('plan_verdict')}, controlled verdict "
        f"{info.get('controlled_verdict')}: the metric clears its threshold but does not beat "
        f"{name} ({control_text(info)}; controlled comparison {comparison_text(info)})."
    )


def _labels(names: list[str]) -> str:
    return ", ".join(plan.premortem(pm).label for pm in names)


def _used(info: Mapping[str, Any]) -> str:
    return str(info["verdict"]) + (" (forced)" if info["forced"] else "")


def _control_legend(pm: plan.PreMortem, info: Mapping[str, Any]) -> str:
    control, controlled = info.get("control"), info.get("controlled")
    if not control and not controlled:
        return f"- {pm.label}: no control was measured."
    text = f"- {pm.label}: control"
    if control:
        text += f" {control.get('name')}"
        if control.get("description"):
            text += f" ({str(control['description']).rstrip('.')})"
    if controlled:
        passed = "passed" if controlled.get("passed") else "did not pass"
        text += (
            f"; controlled comparison: {controlled.get('statistic')}, which passes when its 95% "
            f"CI lies above {_fmt(controlled.get('bound'))} ({passed})"
        )
    return text + "."


def decision_markdown(decision: Mapping[str, Any]) -> str:
    """A page for a person: both verdicts and the control of every pre-mortem side by side,
    the criterion that decided, the row of the table and the branches scheduled."""
    labels = [pm.label for pm in plan.PREMORTEMS]
    criterion = decision.get("criterion")
    lines = ["# Gate decision", ""]
    if decision["forced"]:
        forced = _labels(decision["forced"])
        lines += [f"**Forced verdicts: {forced}.** These did not come from the measurements.", ""]
    lines += [
        criterion_sentence(criterion),
        "",
        "| Pre-mortem | Metric | Value | 95% CI | Threshold | Plan verdict | Control "
        "| Control value [95% CI] | Controlled comparison [95% CI] | Controlled verdict "
        f"| Verdict used ({criterion}) |",
        "| --- " * 11 + "|",
    ]
    premortems = decision["premortems"]
    for pm in plan.PREMORTEMS:
        info = premortems[pm.name]
        control = info.get("control") or {}
        lines.append(
            f"| {pm.title} | {info.get('metric', 'n/a')} | {_fmt(info.get('value'))} "
            f"| {_ci_text(info.get('ci'))} | {_fmt(info.get('threshold'))} "
            f"| {info.get('plan_verdict') or 'not measured'} | {control.get('name') or 'n/a'} "
            f"| {control_text(info)} | {comparison_text(info)} "
            f"| {info.get('controlled_verdict') or 'not measured'} | {_used(info)} |"
        )
    lines += ["", "Controls:", ""]
    lines += [_control_legend(pm, premortems[pm.name]) for pm in plan.PREMORTEMS]
    disagree = [pm for pm in plan.PREMORTEMS if pm.name in (decision.get("disagree") or [])]
    if disagree:
        lines += [""] + [disagreement_sentence(pm.label, premortems[pm.name]) for pm in disagree]
    row = " / ".join(decision["row"])
    names = ", ".join(f"{b} ({plan.branch(b).title})" for b in decision["branches"])
    lines += [
        "",
        f"Decision-table row ({' / '.join(labels)}): **{row}**.",
        "",
        f"Scheduled: {names}. {other_criterion_sentence(decision)}".rstrip(),
    ]
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
    "CRITERIA",
    "FORCEABLE",
    "NO_VALUE",
    "VERDICT_KEYS",
    "VerdictsError",
    "branches_for",
    "check_criterion",
    "comparison_text",
    "control_text",
    "criterion_sentence",
    "decide",
    "decision_markdown",
    "disagreement_sentence",
    "effective_verdicts",
    "forced_branches",
    "measured_verdicts",
    "no_value",
    "no_value_sentence",
    "other_criterion",
    "other_criterion_sentence",
    "planning_verdict",
    "read_verdicts",
]
