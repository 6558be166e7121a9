"""What a person reads of error_prediction_extended: summary.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.branches.error_prediction.steps import fmt, fmt_ci


def summary_markdown(results: Mapping[str, Any]) -> str:
    """The person-readable summary of an error_prediction_extended results dictionary."""
    lines = [
        "# Error prediction across layers, with calibration and task transfer",
        "",
        f"- Date: {results['date']}; seed {results['seed']}; {fmt(results['duration_s'], 1)} s",
        f"- Stores analysed: {results['n_analysed']} of {results['n_stores']}",
        "- Probe: standardised L2 logistic regression (PM2's, balanced class weights) for balanced "
        "accuracy and AUROC; the same without class weights for probabilities (calibration). "
        "Layer selected by inner-CV log loss on the training items.",
        "",
    ]
    for r in results["stores"]:
        lines += [f"## {r['model']} on {r['task']}", ""]
        if "skipped" in r:
            lines += [f"Skipped: {r['skipped']}.", ""]
            continue
        base = r["baselines"]
        sel = r["selected"]
        diff = r["probe_minus_confidence"]
        lines += [
            f"{r['n_train']} training and {r['n_test']} held-out items; the model is right on "
            f"{fmt(100 * r['share_correct'], 1)}% of them. Selected layer {r['selected_layer']} "
            f"of 0..{r['n_layers']}.",
            "",
            "| layer | balanced acc. | 95% CI | AUROC | Brier | ECE |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in r["layers"]:
            mark = " *" if row["layer"] == r["selected_layer"] else ""
            lines.append(
                f"| {row['layer']}{mark} | {fmt(row['balanced_accuracy'])} | {fmt_ci(row['ci'])} "
                f"| {fmt(row['auroc'])} | {fmt(row['brier'])} | {fmt(row['ece'])} |"
            )
        conf = base["confidence"]
        lines += [
            "",
            "| predictor (selected layer) | balanced acc. | AUROC | Brier | ECE |",
            "| --- | --- | --- | --- | --- |",
            f"| probe | {fmt(sel['balanced_accuracy'])} {fmt_ci(sel['ci'])} | {fmt(sel['auroc'])} "
            f"| {fmt(sel['calibration']['brier'])} | {fmt(sel['calibration']['ece'])} |",
            f"| output confidence | {fmt(conf['balanced_accuracy'])} {fmt_ci(conf['ci'])} "
            f"| {fmt(conf['auroc'])} | {fmt(conf['calibration']['brier'])} "
            f"| {fmt(conf['calibration']['ece'])} |",
            f"| majority class | {fmt(base['majority']['balanced_accuracy'])} | 0.500 "
            f"| {fmt(sel['calibration']['brier_base_rate'])} (base rate) | n/a |",
            "",
            f"Probe minus confidence: balanced accuracy {fmt(diff['balanced_accuracy'])} "
            f"{fmt_ci(diff['ci'])}, AUROC {fmt(diff['auroc'])} {fmt_ci(diff['auroc_ci'])}. "
            + (
                "The probe beats the output confidence (the interval excludes zero)."
                if diff["ci"][0] > 0
                else "The probe does not reliably beat the output confidence."
            ),
            "",
        ]
        groups = r.get("by_group")
        if groups:
            lines += [
                f"By `{groups['key']}` ({groups['method']}, layer {groups['layer']}):",
                "",
                "| group | n | model accuracy | mean P(correct) | probe accuracy | confidence |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for g in groups["groups"]:
                lines.append(
                    f"| {g['group']} | {g['n']} | {fmt(g['model_accuracy'])} "
                    f"| {fmt(g['mean_p_correct'])} | {fmt(g['probe_accuracy'])} "
                    f"| {fmt(g['mean_confidence'])} |"
                )
            lines.append("")
    for t in results["transfer"]:
        tasks = t["tasks"]
        lines += [
            f"## Task transfer for {t['model']} (balanced accuracy; rows trained, columns tested)",
            "",
            "| trained on \\ tested on | " + " | ".join(tasks) + " |",
            "| --- |" + " --- |" * len(tasks),
        ]
        for i, task in enumerate(tasks):
            cells = [
                f"{fmt(t['balanced_accuracy'][i][j])} {fmt_ci(t['balanced_accuracy_ci'][i][j])}"
                for j in range(len(tasks))
            ]
            lines.append(f"| {task} (L{t['source_layers'][task]}) | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"
