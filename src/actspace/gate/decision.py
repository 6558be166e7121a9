"""The gate: from the three pre-mortem verdicts to the branches of the plan that run.

The checkpoint records the *measured* verdicts (``verdicts.json``); the decision applies
``gate.force`` on top of them. Keeping the two apart means that forcing a verdict for a preview
never re-runs the checkpoint, and that everything written from the decision says what was forced.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

PREMORTEMS = ("pm1", "pm2", "pm3")
PREMORTEM_TITLES = {
    "pm1": "PM1 cross-model similarity",
    "pm2": "PM2 error prediction",
    "pm3": "PM3 activation patching",
}
#: The branch each pre-mortem opens when it passes.
BRANCH_OF = {"pm1": "2A", "pm2": "2B", "pm3": "2C"}
ABORT = "X"
BRANCHES = ("2A", "2B", "2C", ABORT)
BRANCH_TITLES = {
    "2A": "cross-model transfer",
    "2B": "error prediction",
    "2C": "activation patching and behaviour editing",
    ABORT: "abort: negative-results report",
}
VERDICTS = ("PASS", "INCONCLUSIVE", "FAIL")


def planning_verdict(verdict: str) -> str:
    """INCONCLUSIVE counts as FAIL for planning (and is reported as INCONCLUSIVE)."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r} (allowed: {', '.join(VERDICTS)})")
    return "PASS" if verdict == "PASS" else "FAIL"


def branches_for(verdicts: Mapping[str, str]) -> list[str]:
    """The branches the decision table schedules for three verdicts (abort when none passes)."""
    opened = [BRANCH_OF[pm] for pm in PREMORTEMS if planning_verdict(verdicts[pm]) == "PASS"]
    return opened or [ABORT]


def decision_table() -> list[tuple[str, str, str, list[str]]]:
    """The plan's eight rows, (PM1, PM2, PM3, branches), in the order of DESIGN.md."""
    rows = []
    for combo in itertools.product(("FAIL", "PASS"), repeat=3):
        verdicts = dict(zip(PREMORTEMS, combo, strict=True))
        rows.append((*combo, branches_for(verdicts)))
    return rows


def effective_verdicts(
    measured: Mapping[str, str], force: Mapping[str, str | None] | None
) -> dict[str, dict[str, Any]]:
    """Each pre-mortem's measured verdict with any forced verdict applied on top."""
    force = force or {}
    out: dict[str, dict[str, Any]] = {}
    for pm in PREMORTEMS:
        forced = force.get(pm)
        if forced is not None and forced not in ("PASS", "FAIL"):
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
    """The branches when all three verdicts are forced (no measurement needed), else None."""
    force = force or {}
    if all(force.get(pm) in ("PASS", "FAIL") for pm in PREMORTEMS):
        return branches_for({pm: force[pm] for pm in PREMORTEMS})
    return None


def measured_verdicts(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The checkpoint's record: each pre-mortem's metric, CI, threshold and verdict."""
    record = {}
    for pm in PREMORTEMS:
        res = results[pm]
        verdict = res.get("verdict")
        if verdict not in VERDICTS:
            raise ValueError(f"{pm} results.json has no valid verdict (got {verdict!r})")
        record[pm] = {
            "title": PREMORTEM_TITLES[pm],
            "metric": res["metric"],
            "value": res["value"],
            "ci": list(res["ci"]),
            "ci_level": res.get("ci_level", 0.95),
            "threshold": res["threshold"],
            "verdict": verdict,
            "n": res.get("n"),
        }
    return record


def decide(
    measured: Mapping[str, Mapping[str, Any]], force: Mapping[str, str | None] | None
) -> dict[str, Any]:
    """The effective decision: verdicts (measured and forced), the table row and the branches."""
    verdicts = effective_verdicts({pm: measured[pm]["verdict"] for pm in measured}, force)
    branches = branches_for({pm: verdicts[pm]["verdict"] for pm in PREMORTEMS})
    premortems = {pm: {**measured.get(pm, {}), **verdicts[pm]} for pm in PREMORTEMS}
    inconclusive = [pm for pm in PREMORTEMS if verdicts[pm]["verdict"] == "INCONCLUSIVE"]
    return {
        "premortems": premortems,
        "row": [verdicts[pm]["planning_verdict"] for pm in PREMORTEMS],
        "branches": branches,
        "abort": branches == [ABORT],
        "forced": [pm for pm in PREMORTEMS if verdicts[pm]["forced"]],
        "inconclusive": inconclusive,
    }


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def decision_markdown(decision: Mapping[str, Any]) -> str:
    """A page for a person: the verdicts, the row of the table, the branches scheduled."""
    lines = ["# Gate decision", ""]
    if decision["forced"]:
        forced = ", ".join(pm.upper() for pm in decision["forced"])
        lines += [f"**Forced verdicts: {forced}.** These did not come from the measurements.", ""]
    lines += [
        "| Pre-mortem | Metric | Value | 95% CI | Threshold | Measured | Verdict used |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for pm in PREMORTEMS:
        info = decision["premortems"][pm]
        ci = info.get("ci") or [None, None]
        used = info["verdict"] + (" (forced)" if info["forced"] else "")
        lines.append(
            f"| {PREMORTEM_TITLES[pm]} | {info.get('metric', 'n/a')} | {_fmt(info.get('value'))} "
            f"| [{_fmt(ci[0])}, {_fmt(ci[1])}] | {_fmt(info.get('threshold'))} "
            f"| {info.get('measured_verdict') or 'not measured'} | {used} |"
        )
    row = " / ".join(decision["row"])
    names = ", ".join(f"{b} ({BRANCH_TITLES[b]})" for b in decision["branches"])
    lines += ["", f"Decision-table row (PM1 / PM2 / PM3): **{row}**.", "", f"Scheduled: {names}."]
    if decision["inconclusive"]:
        which = ", ".join(pm.upper() for pm in decision["inconclusive"])
        lines += [
            "",
            f"INCONCLUSIVE: {which}. The confidence interval straddles the threshold; the plan "
            "counts this as FAIL for scheduling, and the paper's discussion must say so.",
        ]
    lines += [
        "",
        "The decision table:",
        "",
        "| PM1 | PM2 | PM3 | Branches |",
        "| --- | --- | --- | --- |",
    ]
    for pm1, pm2, pm3, branches in decision_table():
        mark = " **<-**" if [pm1, pm2, pm3] == decision["row"] else ""
        lines.append(f"| {pm1} | {pm2} | {pm3} | {', '.join(branches)}{mark} |")
    return "\n".join(lines) + "\n"


#: The registry: the targets of each branch, as functions of the resolved configuration. Each
#: branch's rule file (workflow/rules/*.smk) registers its experiments with ``register_branch``;
#: the workflow's ``rule all`` asks for exactly the targets of the branches the decision schedules.
BranchTargets = Callable[[Mapping[str, Any]], list[str]]
BRANCH_TARGETS: dict[str, BranchTargets] = {ABORT: lambda config: ["results/negative_results.md"]}


def register_branch(branch: str, targets: BranchTargets) -> None:
    """Record the function that lists a branch's target files."""
    if branch not in BRANCHES:
        raise ValueError(f"unknown branch {branch!r} (allowed: {', '.join(BRANCHES)})")
    BRANCH_TARGETS[branch] = targets


def targets_for(branches: list[str], config: Mapping[str, Any]) -> list[str]:
    """The files the scheduled branches must produce (none for a branch not registered)."""
    targets: list[str] = []
    for branch in branches:
        if branch in BRANCH_TARGETS:
            targets.extend(BRANCH_TARGETS[branch](config))
    return targets
