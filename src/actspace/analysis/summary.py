"""What the researcher reads first: the summary table and the study summary (results/summary.md).

Both are made from ``statistics.json`` alone, so that their numbers are the experiments' own
(``value`` and ``ci`` are copied from each ``results.json``; p-values are the statistics step's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from actspace import plan
from actspace.gate.decision import (
    NO_VALUE,
    criterion_sentence,
    no_value,
    other_criterion_sentence,
)

TABLE_HEADER = (
    "| Experiment | Metric | Value | 95% CI | p-value |",
    "| --- | --- | --- | --- | --- |",
)


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


def p_value_cell(entry: Mapping[str, Any]) -> str:
    """Holm-corrected p with the raw p and the test beside it."""
    if entry.get("p_value") is None:
        return "n/a (no test)"
    return f"{number(entry['p_holm'])} (Holm; raw {number(entry['p_value'])}, {entry['test']})"


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
    lines = ["# Summary table", "", *TABLE_HEADER]
    for pm, info in statistics["premortems"].items():
        lines.append(
            f"| {pm.upper()} {info['name']} — {premortem_verdict(info)} "
            f"(threshold {number(info['threshold'])}) | {info['metric'] or 'n/a'} | "
            f"{number(info['value'])} | {interval(info['ci'])} | n/a (verdict by CI) |"
        )
    for entry in statistics["comparisons"]:
        name = entry["experiment"] + (f" ({entry['label']})" if entry.get("label") else "")
        if entry.get("seeds"):
            name += f", seed {entry['seed']} of {len(entry['seeds'])}"
        lines.append(
            f"| {entry['branch']} {name} | {entry['metric']} | {number(entry['value'])} | "
            f"{interval(entry['ci'])} | {p_value_cell(entry)} |"
        )
    forced = statistics["decision"]["forced"]
    lines += [
        "",
        "Value and 95% CI are each experiment's own headline (its results.json). p-values test "
        "the experiment's main comparison (statistics.json gives the effect size and what is "
        "compared) and are Holm-corrected across the experiments in this table.",
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
    if entry.get("success") is None:
        return "descriptive (no success criterion)"
    return "met its success criterion" if entry["success"] else "did NOT meet its success criterion"


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
            f"- {pm.upper()} ({info['name']}): {info['metric'] or 'metric'} = "
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
        lines += ["", "## Headline numbers", ""]
        for entry in statistics["comparisons"]:
            effect = entry.get("effect_size") or {}
            extra = ""
            if entry.get("p_value") is not None:
                extra = (
                    f"; {effect.get('name')} {number(effect.get('value'))}, Holm p "
                    f"{number(entry.get('p_holm'))}"
                )
            lines.append(
                f"- **{entry['id']}** ({entry['branch']}): {entry['metric']} = "
                f"{number(entry['value'])}, 95% CI {interval(entry['ci'])}, n = "
                f"{entry.get('n', 'n/a')}{extra}; {_success_text(entry)}. "
                f"Source: `{entry['source']}`"
            )
    lines += ["", "## Where the outputs are", ""]
    for label, path in outputs.items():
        lines.append(f"- {label.replace('_', ' ')}: `{path}`")
    if figures:
        lines += ["", "Figures:", ""]
        lines += [f"- `{f['name']}`: {f.get('caption', '')}" for f in figures]
    return "\n".join(lines) + "\n"
