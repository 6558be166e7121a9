"""What a person reads of abstention (2B): summary.md, with the part of success that failed.

Kept apart from :mod:`actspace.branches.error_prediction.abstention`, which runs the experiment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.branches.error_prediction.steps import fmt, fmt_ci
from actspace.core import criteria


def _store_name(primary: Mapping[str, Any] | None) -> str:
    return "no store analysed" if primary is None else f"{primary['model']} on {primary['task']}"


def verdict_sentence(record: Mapping[str, Any]) -> str:
    """Whether abstaining paid on one store and, if not, which part of success failed."""
    if record["success"]:
        return (
            "Abstaining by the probe raises effective accuracy over answering everything and "
            "over the output confidence at the same coverage (both intervals above zero)."
        )
    failed = criteria.failed(record["criteria"])
    if not failed:
        return "Abstaining by the probe could not be assessed: a part of success is unmeasured."
    return (
        "Abstaining by the probe does not succeed: failed "
        + " and ".join(
            f"`{c['name']}` ({fmt(c['value'])} {fmt_ci(c['ci'])}, needs an interval above "
            f"{fmt(c['bound'])})"
            for c in failed
        )
        + "."
    )


def summary_markdown(results: Mapping[str, Any]) -> str:
    """The person-readable summary of an abstention results dictionary."""
    tau = results["threshold"]
    lines = [
        "# Abstention with the correctness probe",
        "",
        f"- Date: {results['date']}; seed {results['seed']}; {fmt(results['duration_s'], 1)} s",
        f"- The model answers when the probe's P(correct) >= {fmt(tau, 2)} and abstains below. "
        "Success: effective accuracy above plain accuracy (answering everything), the 95% CI of "
        "the gain above zero, AND above the output confidence's at the same coverage (its most "
        "confident test items, as many as the probe answers), the paired 95% CI above zero.",
        f"- Headline ({_store_name(results['primary'])}): gain {fmt(results['value'])} "
        f"{fmt_ci(results['ci'])} -> **{results['verdict']}**; "
        f"{results['n_success']} of {results['n_analysed']} stores succeed.",
        f"- Held out: {results['selection']}.",
        "",
    ]
    for r in results["stores"]:
        lines += [f"## {r['model']} on {r['task']}", ""]
        if "skipped" in r:
            lines += [f"Skipped: {r['skipped']}.", ""]
            continue
        p, c, m, a = r["probe"], r["confidence_same_threshold"], r["matched_coverage"], r["aurc"]
        lines += [
            f"{r['n_test']} held-out items; plain accuracy {fmt(r['plain_accuracy'])}; probe at "
            f"layer {r['layer']} ({r['layer_selection']}).",
            "",
            "| abstainer | coverage | effective accuracy | gain | 95% CI of gain |",
            "| --- | --- | --- | --- | --- |",
            f"| probe, P(correct) >= {fmt(tau, 2)} | {fmt(p['coverage'])} "
            f"| {fmt(p['effective_accuracy'])} | {fmt(p['gain'])} | {fmt_ci(p['gain_ci'])} |",
            f"| confidence >= {fmt(tau, 2)} | {fmt(c['coverage'])} "
            f"| {fmt(c['effective_accuracy'])} | {fmt(c['gain'])} | {fmt_ci(c['gain_ci'])} |",
            f"| confidence at the probe's coverage | {fmt(m['coverage'])} "
            f"| {fmt(m['confidence'])} | | |",
            f"| random at the probe's coverage | {fmt(m['coverage'])} | {fmt(m['random'])} "
            "| 0.000 | |",
            "",
            f"Probe minus confidence at the same coverage ({m['n_answered']} answered items): "
            f"{fmt(m['probe_minus_confidence'])} {fmt_ci(m['probe_minus_confidence_ci'])}.",
            "",
            verdict_sentence(r),
            "",
            "| risk-coverage area (lower is better) | AURC | 95% CI |",
            "| --- | --- | --- |",
            f"| probe | {fmt(a['probe'])} | {fmt_ci(a['probe_ci'])} |",
            f"| output confidence | {fmt(a['confidence'])} | {fmt_ci(a['confidence_ci'])} |",
            f"| random abstainer (expected = error rate) | {fmt(a['random_expected'])} "
            f"| 5-95% of {results['settings']['n_random']} draws: "
            f"[{fmt(a['random_draws_p05'])}, {fmt(a['random_draws_p95'])}] |",
            f"| oracle | {fmt(a['oracle'])} | |",
            "",
            f"Probe minus confidence: {fmt(a['probe_minus_confidence'])} "
            f"{fmt_ci(a['probe_minus_confidence_ci'])}; probe minus random: "
            f"{fmt(a['probe_minus_random'])} {fmt_ci(a['probe_minus_random_ci'])}.",
            "",
        ]
    return "\n".join(lines) + "\n"
