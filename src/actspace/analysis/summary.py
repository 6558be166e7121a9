"""What the researcher reads first: the summary table and the study summary (results/summary.md).

Both are made from ``statistics.json`` alone, so that their numbers are the experiments' own
(``value`` and ``ci`` are copied from each ``results.json``; p-values are the statistics step's).
Both lead with the result the paper leads with (:func:`choose_strongest`): the strongest held-out
success, or, when none succeeded, the closest negative with the criterion it failed. Each row says
which criteria passed and failed, and whether its test is in the Holm family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from actspace import plan
from actspace.analysis.paper.strongest import choose_strongest
from actspace.gate.decision import (
    NO_VALUE,
    criterion_sentence,
    no_value,
    other_criterion_sentence,
)

TABLE_HEADER = (
    "| Experiment | Metric | Value | 95% CI | p-value | Criteria |",
    "| --- | --- | --- | --- | --- | --- |",
)
#: How a part of a criterion came out, as the reports say it.
OUTCOME_WORDS = {True: "passed", False: "FAILED", None: "not measured"}


def number(value: Any) -> str:
    """Four significant digits; ``n/a`` for a missing or non-finite value."""
    if value is None or isinstance(value, bool):
        return "n/a" if value is None else str(value)
    value = float(value)
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def interval(ci: Sequence[Any] | None) -> str:
    if not ci or len(ci) != 2:
        return "n/a"
    return f"[{number(ci[0])}, {number(ci[1])}]"


def in_family(entry: Mapping[str, Any]) -> bool:
    """Whether the entry's test is in the Holm family (older statistics: it has a Holm p)."""
    return bool(entry.get("in_holm_family", entry.get("p_holm") is not None))


def p_value_cell(entry: Mapping[str, Any]) -> str:
    """Holm-corrected p with the raw p and the test beside it; a test outside the Holm family
    keeps its raw p and says it is outside."""
    if entry.get("p_value") is None:
        return "n/a (no test)"
    raw = f"raw {number(entry['p_value'])}, {entry['test']}"
    if not in_family(entry):
        why = "not held out" if entry.get("held_out_recorded", True) else "held_out not recorded"
        return f"n/a (not in the Holm family: {why}; {raw})"
    return f"{number(entry['p_holm'])} (Holm; {raw})"


def part_detail(part: Mapping[str, Any]) -> str:
    """One part of a criterion with its rule and numbers: ``name: rule (value 1.2, 95% CI [..],
    bound 2)``."""
    numbers = [f"value {number(part.get('value'))}"]
    if part.get("ci") and any(v is not None for v in part["ci"]):
        numbers.append(f"95% CI {interval(part['ci'])}")
    if part.get("bound") is not None:
        numbers.append(f"bound {number(part['bound'])}")
    rule = str(part.get("rule") or "").rstrip(".")
    return f"{part.get('name')}: {rule} ({', '.join(numbers)})"


def criteria_cell(entry: Mapping[str, Any]) -> str:
    """Which criteria passed and which FAILED, by name, after the overall outcome."""
    parts = entry.get("criteria") or []
    success = entry.get("success")
    if success is None and not parts:
        return "none (descriptive)"
    head = {True: "met", False: "NOT met", None: "not measured"}[success]
    if not parts:
        return f"{head} (parts not recorded)"
    listed = "; ".join(f"{p.get('name')} {OUTCOME_WORDS[p.get('passed')]}" for p in parts)
    return f"{head}: {listed}"


def _headline_numbers(entry: Mapping[str, Any], *, why_out: bool = False) -> str:
    """Value, CI, n, effect size and p; a test outside the Holm family shows its raw p (and,
    with ``why_out``, why it is outside)."""
    text = (
        f"{plan.metric_text(entry['metric'])} = {number(entry['value'])}, "
        f"95% CI {interval(entry['ci'])}, "
        f"n = {entry.get('n', 'n/a')}"
    )
    if entry.get("p_value") is None:
        return text
    effect = entry.get("effect_size") or {}
    text += f"; {effect.get('name')} {number(effect.get('value'))}"
    if in_family(entry):
        return text + f", Holm p {number(entry.get('p_holm'))}"
    reason = entry.get("excluded_from_family") if why_out else None
    return (
        text
        + f", raw p {number(entry['p_value'])} (not in the Holm family"
        + (f": {reason})" if reason else ")")
    )


def lead_lines(statistics: Mapping[str, Any]) -> list[str]:
    """The result the paper leads with, in a few sentences (empty when nothing ran)."""
    if not statistics.get("comparisons"):
        return []
    strongest = choose_strongest(statistics)
    best = strongest["comparison"]
    others = strongest["not_held_out_successes"]
    lines = []
    if strongest["succeeded"]:
        names = ", ".join(str(p.get("name")) for p in best.get("criteria") or [])
        lines.append(
            f"**Strongest held-out result:** {best['id']} ({strongest['branch']}): "
            f"{_headline_numbers(best)}; it met its criteria"
            + (f" (every part: {names})." if names else ".")
        )
    else:
        lines.append(
            "**No line of work met its criteria" + (" on a held-out test" if others else "") + ".**"
        )
        if best is None:
            lines.append(
                "No held-out comparison has a success criterion, so there is no closest negative "
                f"result; the venue follows the first line of work the gate ran "
                f"({strongest['branch']})."
            )
        else:
            failed = strongest["failed_criteria"]
            total = len(best.get("criteria") or []) or len(failed)
            lines.append(
                f"The closest negative result is {best['id']} ({strongest['branch']}): "
                f"{_headline_numbers(best)}. It failed {len(failed)} of {total} "
                f"{'part' if total == 1 else 'parts'} of its criteria: "
                + "; ".join(part_detail(p) for p in failed)
                + "."
            )
    if others:
        lines.append(
            f"Met its criteria only on the units that chose what it tests (not held out), so it "
            f"cannot lead: {', '.join(others)}."
        )
    return lines


def both_verdicts(info: Mapping[str, Any]) -> str:
    """``plan PASS, controlled FAIL``: the two measured verdicts side by side."""
    plan_rule = info.get("plan_verdict") or "n/a"
    return f"plan {plan_rule}, controlled {info.get('controlled_verdict') or 'n/a'}"


def premortem_verdict(info: Mapping[str, Any]) -> str:
    """The verdict used, both measured verdicts, what was measured when it was forced, and why
    there is no value."""
    if info["forced"]:
        text = f"{info['verdict']} **(forced; measured {info['measured_verdict']})**"
    else:
        text = str(info["verdict"])
    text += f" ({both_verdicts(info)})"
    if no_value(info):
        text += f" (no value: {str(info.get('reason') or NO_VALUE).rstrip('.')})"
    return text


def control_line(info: Mapping[str, Any]) -> str:
    """The control and the controlled comparison in a few words (``n/a`` when none)."""
    control, controlled = info.get("control"), info.get("controlled")
    parts = []
    if control:
        parts.append(
            f"control {control.get('name')} = {number(control.get('value'))}, 95% CI "
            f"{interval(control.get('ci'))}"
        )
    if controlled:
        parts.append(
            f"{controlled.get('statistic')} = {number(controlled.get('value'))}, 95% CI "
            f"{interval(controlled.get('ci'))} (bound {number(controlled.get('bound'))})"
        )
    return "; ".join(parts) or "no control measured"


def summary_table(statistics: Mapping[str, Any]) -> str:
    """``summary_table.md``: the pre-mortems, then one row per experiment headline that ran."""
    lead = lead_lines(statistics)
    lines = ["# Summary table", "", *([" ".join(lead), ""] if lead else []), *TABLE_HEADER]
    for pm, info in statistics["premortems"].items():
        lines.append(
            f"| {pm.upper()} {info['name']} — {premortem_verdict(info)} "
            f"(threshold {number(info['threshold'])}) | {info['metric'] or 'n/a'} | "
            f"{number(info['value'])} | {interval(info['ci'])} | n/a (verdict by CI) | "
            "the verdict (threshold and control) |"
        )
    for entry in statistics["comparisons"]:
        name = entry["experiment"] + (f" ({entry['label']})" if entry.get("label") else "")
        if entry.get("seeds"):
            name += f", seed {entry['seed']} of {len(entry['seeds'])}"
        lines.append(
            f"| {entry['branch']} {name} | {entry['metric']} | {number(entry['value'])} | "
            f"{interval(entry['ci'])} | {p_value_cell(entry)} | {criteria_cell(entry)} |"
        )
    forced = statistics["decision"]["forced"]
    lines += [
        "",
        "Value and 95% CI are each experiment's own headline (its results.json). p-values test "
        "the experiment's main comparison (statistics.json gives the effect size and what is "
        "compared) and are Holm-corrected across the held-out tests (the Holm family); a test "
        "whose units chose what it tests keeps its raw p-value and stays out of the family. "
        "Criteria: the plan's rule and each control, passed or FAILED (success needs all).",
    ]
    criterion = statistics["decision"].get("criterion")
    if criterion:
        lines.append(
            f"Pre-mortem verdicts: the one the gate used (criterion {criterion}), then the plan "
            "and the controlled verdict."
        )
    if forced:
        lines.append(
            f"Forced verdicts: {', '.join(pm.upper() for pm in forced)}. Branches that ran "
            "because of a forced verdict test nothing the measured pre-mortems earned."
        )
    seeded = [e for e in statistics["comparisons"] if e.get("seeds")]
    if seeded:
        lines += ["", "## Across seeds", "", "| Experiment | per-seed values | mean | sd |"]
        lines.append("| --- | --- | --- | --- |")
        for entry in seeded:
            values = ", ".join(f"{s}: {number(v)}" for s, v in entry["seeds"].items())
            lines.append(
                f"| {entry['id']} | {values} | {number(entry['seed_mean'])} | "
                f"{number(entry['seed_sd'])} |"
            )
    return "\n".join(lines) + "\n"


def _success_text(entry: Mapping[str, Any]) -> str:
    """Which parts of the criteria passed and which failed, with the failed parts' numbers."""
    parts = entry.get("criteria") or []
    if entry.get("success") is None and not parts:
        return "descriptive (no success criterion)"
    if not parts:
        return "met its criteria" if entry["success"] else "did NOT meet its criteria"
    by_outcome = {
        outcome: [p for p in parts if p.get("passed") is outcome] for outcome in OUTCOME_WORDS
    }
    head = {True: "met its criteria", False: "did NOT meet its criteria",
            None: "could not measure all its criteria"}[entry.get("success")]  # fmt: skip
    said = []
    if by_outcome[False]:
        said.append("failed " + "; ".join(part_detail(p) for p in by_outcome[False]))
    if by_outcome[None]:
        said.append("not measured " + ", ".join(str(p.get("name")) for p in by_outcome[None]))
    if by_outcome[True]:
        said.append("passed " + ", ".join(str(p.get("name")) for p in by_outcome[True]))
    return f"{head}: {'; '.join(said)}"


def study_summary(
    statistics: Mapping[str, Any],
    *,
    outputs: Mapping[str, str],
    figures: Sequence[Mapping[str, Any]] = (),
) -> str:
    """``results/summary.md``: what ran and why, the headline numbers, where each output is."""
    decision = statistics["decision"]
    branches = decision["branches"]
    lines = ["# Study summary", "", "## What ran and why", ""]
    for pm, info in statistics["premortems"].items():
        lines.append(
            f"- {pm.upper()} ({info['name']}): "
            f"{plan.metric_text(info['metric']) if info['metric'] else 'metric'} = "
            f"{number(info['value'])}, 95% CI {interval(info['ci'])}, threshold "
            f"{number(info['threshold'])}; {control_line(info)} -> {premortem_verdict(info)}"
        )
    unmeasured = any(no_value(info) for info in statistics["premortems"].values())
    lines += [
        "",
        f"{criterion_sentence(decision.get('criterion'))} "
        f"{other_criterion_sentence(decision)}".rstrip(),
    ]
    lines += [
        "",
        "INCONCLUSIVE (the CI straddles the threshold"
        + (", or nothing was measured" if unmeasured else "")
        + ") counts as FAIL for planning. Branches run: "
        + "; ".join(f"{b} ({plan.branch(b).title})" for b in branches)
        + ".",
    ]
    if branches == [plan.ABORT]:
        lines += [
            "",
            "No pre-mortem passed: the plan aborts. The negative-results report is "
            f"`{outputs.get('negative_results', plan.ABORT_REPORT)}`; no paper is "
            "drafted.",
        ]
    if statistics["comparisons"]:
        lines += ["", "## The result that leads", "", *lead_lines(statistics)]
        lines += ["", "## Headline numbers", ""]
        for entry in statistics["comparisons"]:
            lines.append(
                f"- **{entry['id']}** ({entry['branch']}): "
                f"{_headline_numbers(entry, why_out=True)}; {_success_text(entry)}. "
                f"Source: `{entry['source']}`"
            )
    lines += ["", "## Where the outputs are", ""]
    for label, path in outputs.items():
        lines.append(f"- {label.replace('_', ' ')}: `{path}`")
    if figures:
        lines += ["", "Figures:", ""]
        lines += [f"- `{f['name']}`: {f.get('caption', '')}" for f in figures]
    return "\n".join(lines) + "\n"
