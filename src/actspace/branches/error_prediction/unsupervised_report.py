"""What a person and Phase 3 read of unsupervised_error: figure data and summary.md."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from actspace.branches.error_prediction.steps import fmt, fmt_ci


def figure_data(results: Mapping[str, Any]) -> dict[str, Any]:
    """Curves over layers (CCS and the supervised probe), and the controls at the headline."""
    curves = []
    for r in results["stores"]:
        if "skipped" in r:
            continue
        rows = r["layers"]
        detail = r["selected_layer_detail"]
        curves.append(
            {
                "model": r["model"],
                "task": r["task"],
                "layer": [row["layer"] for row in rows],
                "ccs": [row["ccs"]["balanced_accuracy"] for row in rows],
                "ccs_auroc": [row["ccs"]["auroc"] for row in rows],
                "ccs_loss": [row["ccs"]["train_loss"] for row in rows],
                "supervised": [row["supervised_contrast"]["balanced_accuracy"] for row in rows],
                "selected_layer": r["selected"]["layer"],
                "top_pc": detail["top_principal_component"]["balanced_accuracy"],
                "random_mean": detail["random_directions"]["balanced_accuracy_mean"],
                "random_p05": detail["random_directions"]["balanced_accuracy_p05"],
                "random_p95": detail["random_directions"]["balanced_accuracy_p95"],
                "confidence": r["confidence"]["balanced_accuracy"],
            }
        )
    return {"curves": curves}


def criteria_table(parts: Sequence[Mapping[str, Any]]) -> list[str]:
    """The parts of success as a Markdown table: name, kind, value, interval, bound, outcome."""
    lines = [
        "| criterion | kind | value | 95% CI | must exceed | outcome |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for part in parts:
        outcome = {True: "passed", False: "**failed**", None: "not measured"}[part["passed"]]
        lines.append(
            f"| {part['name']} | {part['kind']} | {fmt(part['value'])} | {fmt_ci(part['ci'])} "
            f"| {fmt(part['bound'])} | {outcome} |"
        )
    return lines


def _judgement(head: Mapping[str, Any]) -> str:
    if head["success"] is True:
        return "CCS meets the plan's ratio and beats every control."
    if head["success"] is None:
        return "A part of the criterion could not be measured, so there is no verdict."
    failed = ", ".join(head["failed_criteria"])
    return f"No success: {failed} did not hold (see the rules below)."


def summary_markdown(results: Mapping[str, Any]) -> str:
    """The person-readable summary of an unsupervised_error results dictionary."""
    s = results["settings"]
    lines = [
        "# Unsupervised error prediction (Contrast-Consistent Search)",
        "",
        f"- Date: {results['date']}; seed {results['seed']}; {fmt(results['duration_s'], 1)} s",
        f"- Statements: {s['statements']}; residual stream at each choice's last token, the "
        "chosen answer and the other choices normalised separately with training statistics; "
        f"{s['n_restarts']} restarts x {s['n_epochs']} AdamW steps; no labels.",
        f"- Sign: fixed by the loss where items have more than two choices; with two, "
        f"{s['sign_convention']}. Decision rule: {s['decision_rule']}.",
        f"- Success: {results['success_rule']}. Headline ({results['primary']}): ratio "
        f"{fmt(results['value'])} {fmt_ci(results['ci'])} -> verdict **{results['verdict']}**, "
        f"success {results['success']}; {results['n_success']} of {results['n_analysed']} "
        "stores succeed.",
        f"- Layer: {results['selection']}.",
        "- Controls: the top principal component and random directions are CCS with its "
        "direction fixed (scale, sign and bias fitted by the same loss), so they differ from "
        "CCS only in not searching; the random control is the expected balanced accuracy over "
        "the seeded directions, not the best of them (which would be picked on test labels).",
        "",
    ]
    for r in results["stores"]:
        lines += [f"## {r['model']} on {r['task']}", ""]
        if "skipped" in r:
            lines += [f"Skipped: {r['skipped']}.", ""]
            continue
        h = r["selected"]
        detail = r["selected_layer_detail"]
        rnd = detail["random_directions"]
        pc = detail["top_principal_component"]
        lines += [
            f"{r['n_train']} training and {r['n_test']} held-out items "
            f"({fmt(100 * r['share_correct'], 1)}% correct); headline layer {h['layer']} "
            f"({h['layer_selection']}).",
            "",
            "| predictor | balanced acc. | 95% CI | AUROC |",
            "| --- | --- | --- | --- |",
            f"| CCS (unsupervised) | {fmt(h['ccs_balanced_accuracy'])} | {fmt_ci(h['ccs_ci'])} "
            f"| {fmt(h['ccs_auroc'])} |",
            f"| supervised probe, same contrast features | "
            f"{fmt(h['supervised_balanced_accuracy'])} | {fmt_ci(h['supervised_ci'])} "
            f"| {fmt(detail['supervised_contrast']['auroc'])} |",
            f"| PM2 probe, pooled `{s['pooling']}` | {fmt(h['pooled_probe_balanced_accuracy'])} "
            "| | |",
            f"| top principal component (CCS along it) | {fmt(pc['balanced_accuracy'])} | "
            f"| {fmt(pc['auroc'])} |",
            f"| random directions ({rnd['n']}): mean, 5-95% | "
            f"{fmt(rnd['balanced_accuracy_mean'])} | "
            f"[{fmt(rnd['balanced_accuracy_p05'])}, {fmt(rnd['balanced_accuracy_p95'])}] "
            f"| {fmt(rnd['auroc_mean'])} |",
            f"| output confidence | {fmt(r['confidence']['balanced_accuracy'])} | "
            f"| {fmt(r['confidence']['auroc'])} |",
            f"| majority class | {fmt(r['majority']['balanced_accuracy'])} | | 0.500 |",
            "",
            *criteria_table(h["criteria"]),
            "",
            f"{_judgement(h)} Verdict {h['verdict']}. Beside it: accuracy ratio "
            f"{fmt(h['ratio_accuracy'])} {fmt_ci(h['ratio_accuracy_ci'])}; above-chance share "
            f"{fmt(h['above_chance_share'])} {fmt_ci(h['above_chance_share_ci'])}; "
            f"CCS / PM2 pooled probe {fmt(h['ratio_to_pooled_probe'])}.",
            "",
            "| layer | CCS | CCS loss | supervised |",
            "| --- | --- | --- | --- |",
        ]
        for row in r["layers"]:
            mark = " *" if row["layer"] == h["layer"] else ""
            lines.append(
                f"| {row['layer']}{mark} | {fmt(row['ccs']['balanced_accuracy'])} "
                f"| {fmt(row['ccs']['train_loss'])} "
                f"| {fmt(row['supervised_contrast']['balanced_accuracy'])} |"
            )
        lines.append("")
    lines += ["Rules:", ""]
    lines += [f"- `{part['name']}`: {part['rule']}." for part in results["criteria"]]
    return "\n".join(lines) + "\n"
