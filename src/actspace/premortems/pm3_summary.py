"""PM3's ``summary.md``: both verdicts, the layers they read, the known-answer checks, and the
by-layer curves at both positions in one table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.premortems.pm3_stats import POSITION_WORDS
from actspace.premortems.report import fmt, fmt_ci


def _check_line(check: Mapping[str, Any]) -> str:
    where = f"layer {check['layer']} at the {POSITION_WORDS[check['position']]}"
    if not check.get("measured"):
        return f"- Cell {check['cell']} ({where}): not measured"
    word = "passes" if check["passed"] else "**does not pass**"
    return (
        f"- Cell {check['cell']} ({where}): held-out change rate {fmt(check['change_rate'])} "
        f"{fmt_ci(check['ci'])}, recovery {fmt(check['recovery_mean'])}; {word} "
        f"({check['rule']})"
    )


def _table(results: Mapping[str, Any]) -> list[str]:
    """One row per patched layer: change rate (with its interval) and recovery at each
    position, over all usable pairs; marks the plan's layer (P), the interior layer (I) and the
    band."""
    curves = results["curves"]
    positions = list(curves)
    head = (
        "| layer | " + " | ".join(f"{p} change | 95% CI | {p} recovery" for p in positions) + " |"
    )
    lines = [head, "| " + " | ".join(["---"] * (1 + 3 * len(positions))) + " |"]
    rows = {p: {row["layer"]: row for row in curves[p]} for p in positions}
    own = results["position"]
    for layer in results["layers"]:
        marks = []
        if layer == results.get("chosen_layer"):
            marks.append("P")
        if layer == results.get("interior_layer"):
            marks.append("I")
        if rows[own][layer]["interior"]:
            marks.append("band")
        cells = []
        for p in positions:
            row = rows[p][layer]
            cells += [
                fmt(row["change_rate"], 2),
                fmt_ci(row["change_rate_ci"]),
                fmt(row["recovery_mean"], 2),
            ]
        label = f"{layer} ({', '.join(marks)})" if marks else str(layer)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(results: Mapping[str, Any]) -> str:
    """A short report of a PM3 results dict for a person."""
    base = results["baseline"]
    skipped = {k: v for k, v in results.get("skipped", {}).items() if v}
    level = int(round(100 * float(results["ci_level"])))
    position = POSITION_WORDS[results["position"]]
    lines = [
        "# PM3: activation patching",
        "",
        f"- Date: {results['date']}",
        f"- Duration: {fmt(results['duration_s'], 1)} s",
    ]
    if "model" in results:
        lines.append(f"- Model: `{results['model']}`")
    lines += [
        f"- Metric: {results['metric']} ({results['metric_description']}; patched at the "
        f"{position})",
        f"- Threshold: {results['threshold']}",
        f"- Plan verdict: **{results['plan_verdict']}**",
        f"- Controlled verdict: **{results['controlled_verdict']}**",
    ]
    if results["value"] is None:
        return "\n".join([*lines, "", f"No value: {results['reason']}.", ""])
    interior, recovery = results["interior"], results["recovery"]
    band = results["layer_band"]
    lines += [
        "",
        f"Plan: layer {results['chosen_layer']}, chosen on the selection pairs among layers "
        f"1..{results['n_blocks'] - 1}, flips {fmt(results['value'])} of the {results['n']} "
        f"held-out pairs ({level}% CI {fmt_ci(results['ci'])}).",
        f"Controlled: layer {results['interior_layer']}, chosen on the same selection pairs "
        f"among the interior layers {results['interior_layers']} (band {band} of "
        f"{results['n_blocks']} blocks, without the known-answer cell), flips "
        f"{fmt(interior['change_rate'])} {fmt_ci(interior['ci'])} of the held-out pairs "
        f"(bound {results['controlled']['bound']}: "
        f"{'passes' if results['controlled']['passed'] else 'does not pass'}). "
        f"Normalised logit-difference recovery there: {fmt(recovery['value'])} "
        f"{fmt_ci(recovery['ci'])}.",
        f"Control ({results['control']['description']}): {fmt(results['control']['value'])} "
        f"{fmt_ci(results['control']['ci'])}.",
        "",
        "Known-answer checks (reported, never the verdict):",
        "",
        *(_check_line(check) for check in results["known_answer_checks"]),
        "",
        "## Pairs",
        "",
        f"{base['n_pairs']} pairs encoded of {results.get('n_pairs_loaded', base['n_pairs'])} "
        f"drawn at random (seeded) from the {results.get('n_pairs_in_file', 'n/a')} of the "
        "pairs file; skipped: "
        f"{skipped or 'none'}. Clean accuracy {fmt(base['clean_accuracy'])}, corrupted accuracy "
        f"{fmt(base['corrupted_accuracy'])} (two-way, clean vs corrupted answer); "
        f"{base['n_usable']} pairs in {base['n_groups_usable']} groups are right on both: "
        f"{results['selection']['n']} ({results['selection']['n_groups']} groups) choose the "
        f"layer and {results['n']} ({results['heldout']['n_groups']} groups) test it. Split: "
        f"{results['split_method']}.",
    ]
    if results.get("n_multi_token_answers"):
        lines.append(
            f"{results['n_multi_token_answers']} pairs have a multi-token answer; "
            "they are scored by the answer's first token."
        )
    lines += [
        "",
        f"Flip rule: {results['flip_rule']}. Recovery: {results['recovery_rule']}. Intervals: "
        f"{results['ci_method']}. Layer k is the residual stream after k blocks (0 = "
        "embeddings).",
        "",
        "## By layer, both positions (all usable pairs)",
        "",
        f"P: the plan's layer; I: the controlled (interior) layer; band: interior at the "
        f"{position}.",
        "",
        *_table(results),
    ]
    return "\n".join(lines) + "\n"
