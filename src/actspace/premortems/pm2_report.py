"""PM2's ``summary.md``: the probe beside the probes that see no activations, the paired
differences the controlled verdict reads, and both verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.premortems.report import fmt, fmt_ci, header

_WHERE = {"PASS": "lies entirely above", "FAIL": "lies entirely below", "INCONCLUSIVE": "straddles"}


def _row(name: str, predictor: Mapping[str, Any] | None) -> list[str]:
    if predictor is None:
        return []
    return [
        f"| {name} | {fmt(predictor['balanced_accuracy'])} {fmt_ci(predictor['ci'])} | "
        f"{fmt(predictor['accuracy'])} | {fmt(predictor['auroc'])} "
        f"{fmt_ci(predictor['auroc_ci'])} |"
    ]


def _table(results: Mapping[str, Any]) -> list[str]:
    control = results["control_key"]

    def name(key: str, text: str) -> str:
        return f"{text} (the control)" if key == control else text

    return [
        "| predictor (mean over folds) | balanced accuracy | accuracy | AUROC |",
        "| --- | --- | --- | --- |",
        *_row(f"activation probe (layer {results['layer']})", results["probe"]),
        *_row(name("confidence_probe", "confidence probe"), results["confidence_probe"]),
        *_row(name("max_probability", "max choice probability cut"), results["max_probability"]),
        *_row("confidence + activations (incremental)", results["incremental_probe"]),
        *_row("subject identity alone", results["subject_probe"]),
        *_row("majority class", results["majority"]),
    ]


def _differences(results: Mapping[str, Any]) -> list[str]:
    names = {
        "probe_minus_control": "activation probe - control",
        "incremental_minus_control": "incremental probe - control",
        "probe_minus_subject": "activation probe - subject probe",
    }
    decided = results["controlled_tests"]["decided_by"]
    lines = ["Paired differences of balanced accuracy (per fold, corrected-t interval):", ""]
    for key, diff in results["differences"].items():
        mark = " (decides the controlled verdict)" if key == decided else ""
        lines.append(f"- {names[key]}: {fmt(diff['value'])} {fmt_ci(diff['ci'])}{mark}")
    return lines


def _verdict_lines(results: Mapping[str, Any]) -> list[str]:
    plan, controlled = results["plan_verdict"], results["controlled_verdict"]
    test = results["controlled"]
    lines = [
        f"Plan verdict: **{plan}**: the {int(round(100 * results['ci_level']))}% interval "
        f"{_WHERE[plan]} the threshold {fmt(results['threshold'], 2)}"
        + (" (INCONCLUSIVE counts as FAIL at the gate)." if plan == "INCONCLUSIVE" else "."),
        f"Controlled verdict: **{controlled}**: {test['statistic']} {fmt(test['value'])} "
        f"{fmt_ci(test['ci'])}, " + ("above 0." if test["passed"] else "not above 0."),
    ]
    if controlled == "PASS":
        lines.append(
            "The activations carry a linearly readable signal of the model's own errors beyond "
            "its output confidence, so the error-prediction branch (2B) has a basis."
        )
    elif plan == "PASS":
        lines.append(
            "The probe reaches the plan's threshold, but is not shown to know more than the "
            "model's output confidence: it may only re-read the answer distribution."
        )
    else:
        lines.append("The probe does not reliably predict the model's errors.")
    return lines


def summary_markdown(results: Mapping[str, Any]) -> str:
    """The person-readable summary of a PM2 results dictionary."""
    lines = header(results)
    if results["value"] is None:
        return "\n".join([*lines, f"No value: {results['reason']}.", ""])
    balance = results["class_balance"]
    stored = results.get("stored_layers")
    n_layers = results["n_layers"]
    among = (
        f"0..{n_layers}"
        if stored is None or stored == list(range(n_layers + 1))
        else f"the stored layers {', '.join(map(str, stored))} of 0..{n_layers}"
    )
    lines += [
        f"Model `{results['model']}`, task `{results['task']}`; layer {results['layer']} of "
        f"{among} ({results['layer_selection']}; by fold: "
        f"{', '.join(str(k) for k in results['layers_by_fold'])}), pooling "
        f"`{results['pooling']}`; {results['n_items']} items in {results['n_groups']} groups, "
        f"{balance['n_correct']} correct, {balance['n_incorrect']} incorrect; "
        f"{results['folds']} grouped folds x {results['repeats']} repeats (about "
        f"{results['n_train']} training and {results['n_test']} held-out items per fit). "
        f"Interval: {results['interval_method']}.",
        "",
        *_table(results),
        "",
        *_differences(results),
    ]
    if results["validation"]:
        best = ", ".join(
            f"L{row['layer']}: {fmt(row['balanced_accuracy'])} (x{row['chosen']})"
            for row in results["validation"]
        )
        lines += ["", f"Validation balanced accuracy by layer (mean over folds): {best}."]
    oof = results["out_of_fold"]
    lines += [
        "",
        f"Check: repeat 0's pooled held-out predictions give probe - control "
        f"{fmt(oof['difference'])} {fmt_ci(oof['difference_ci'])} ({oof['method']}).",
        "",
        *_verdict_lines(results),
    ]
    return "\n".join(lines) + "\n"
