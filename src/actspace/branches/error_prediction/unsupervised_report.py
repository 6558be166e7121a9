"""What a person and Phase 3 read of unsupervised_error: figure data and summary.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.branches.error_prediction.steps import fmt, fmt_ci


def figure_data(results: Mapping[str, Any]) -> dict[str, Any]:
    """Curves over layers: CCS, supervised, top PC and the random-direction band."""
    curves = []
    for r in results["stores"]:
        if "skipped" in r:
            continue
        rows = r["layers"]
        curves.append(
            {
                "model": r["model"],
                "task": r["task"],
                "layer": [row["layer"] for row in rows],
                "ccs": [row["ccs"]["balanced_accuracy"] for row in rows],
                "ccs_auroc": [row["ccs"]["auroc"] for row in rows],
                "supervised": [row["supervised_contrast"]["balanced_accuracy"] for row in rows],
                "top_pc": [row["top_principal_component"]["balanced_accuracy"] for row in rows],
                "random_mean": [row["random_directions"]["balanced_accuracy_mean"] for row in rows],
                "random_p05": [row["random_directions"]["balanced_accuracy_p05"] for row in rows],
                "random_p95": [row["random_directions"]["balanced_accuracy_p95"] for row in rows],
                "selected_layer": r["selected"]["layer"],
            }
        )
    return {"curves": curves}


def _judgement(head: Mapping[str, Any], random_p95: float | None) -> str:
    ccs = head["ccs_balanced_accuracy"]
    if head["ccs_ci"][0] is not None and head["ccs_ci"][0] > 0.5:
        above = "CCS predicts the model's errors above chance"
    else:
        above = "CCS is not distinguishable from chance (its interval includes 0.5)"
    band = ""
    if random_p95 is not None:
        band = (
            "; it beats the 95th percentile of random directions"
            if ccs > random_p95
            else "; it does not beat the 95th percentile of random directions"
        )
    if head["success"]:
        goal = "reaches the target share of the supervised probe (interval above the threshold)"
    elif head["ratio_verdict"] == "PASS":
        goal = (
            "its ratio to the supervised probe clears the threshold only because the supervised "
            "probe is weak too"
        )
    else:
        goal = f"does not reliably reach the target share ({head['ratio_verdict']})"
    return f"{above}{band}, and {goal}."


def summary_markdown(results: Mapping[str, Any]) -> str:
    """The person-readable summary of an unsupervised_error results dictionary."""
    s = results["settings"]
    lines = [
        "# Unsupervised error prediction (Contrast-Consistent Search)",
        "",
        f"- Date: {results['date']}; seed {results['seed']}; {fmt(results['duration_s'], 1)} s",
        f"- Contrast pairs: the model's chosen answer against each other choice (residual stream "
        f"at each choice's last token), each side normalised with training statistics; "
        f"{s['n_restarts']} restarts x {s['n_epochs']} Adam steps; no labels.",
        f"- Sign convention: {s['sign_convention']}; decision rule: {s['decision_rule']}.",
        f"- Success criterion: CCS balanced accuracy / supervised balanced accuracy >= "
        f"{s['success_ratio']} (95% CI above it), with CCS itself above chance (its CI above "
        f"0.5). Headline ({results['primary']}): ratio {fmt(results['value'])} "
        f"{fmt_ci(results['ci'])} ({results['ratio_verdict']}) -> verdict "
        f"**{results['verdict']}**; {results['n_success']} of {results['n_analysed']} stores "
        "succeed.",
        "- Caveat: with balanced accuracy, chance is 0.5, so a chance-level CCS already scores "
        "0.5 / supervised (e.g. 0.71 of a 0.70 probe); the above-chance share "
        "(CCS - 0.5) / (supervised - 0.5) is reported beside it.",
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
            f"| PM2 probe, pooled `last` | {fmt(h['pooled_probe_balanced_accuracy'])} | | |",
            f"| top principal component | "
            f"{fmt(detail['top_principal_component']['balanced_accuracy'])} | "
            f"| {fmt(detail['top_principal_component']['auroc'])} |",
            f"| random directions ({rnd['n']}): mean, 5-95% | "
            f"{fmt(rnd['balanced_accuracy_mean'])} | "
            f"[{fmt(rnd['balanced_accuracy_p05'])}, {fmt(rnd['balanced_accuracy_p95'])}] "
            f"| {fmt(rnd['auroc_mean'])} |",
            f"| majority class | {fmt(r['majority']['balanced_accuracy'])} | | 0.500 |",
            "",
            f"CCS / supervised: {fmt(h['ratio'])} {fmt_ci(h['ratio_ci'])} "
            f"({h['ratio_verdict']}; verdict with CCS above chance: {h['verdict']}); "
            f"accuracy ratio {fmt(h['ratio_accuracy'])} "
            f"{fmt_ci(h['ratio_accuracy_ci'])}; above-chance share "
            f"{fmt(h['above_chance_share'])} {fmt_ci(h['above_chance_share_ci'])}; "
            f"CCS / PM2 pooled probe {fmt(h['ratio_to_pooled_probe'])}.",
            "",
            _judgement(h, rnd["balanced_accuracy_p95"]),
            "",
            "| layer | CCS | CCS loss | supervised | top PC | random mean |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in r["layers"]:
            lines.append(
                f"| {row['layer']} | {fmt(row['ccs']['balanced_accuracy'])} "
                f"| {fmt(row['ccs']['train_loss'])} "
                f"| {fmt(row['supervised_contrast']['balanced_accuracy'])} "
                f"| {fmt(row['top_principal_component']['balanced_accuracy'])} "
                f"| {fmt(row['random_directions']['balanced_accuracy_mean'])} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"
