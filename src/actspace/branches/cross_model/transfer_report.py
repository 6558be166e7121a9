"""What a person reads of activation_transfer (2A): summary.md, and the reasons a transfer failed.

Kept apart from :mod:`actspace.branches.cross_model.activation_transfer`, which runs the
experiment, so that each stays a size a reader takes in at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.core import criteria
from actspace.core.results import no_value_summary


def likely_reasons(results: Mapping[str, Any]) -> list[str]:
    """Data-driven reasons why the transfer did not reach the plan's bar."""
    acc = results["accuracy"]
    gains = results["gain"]
    diag = results["diagnostics"]
    reasons = []
    source, target = acc["source"]["value"], acc["target"]["value"]
    if source <= target + results["threshold"] / 100.0:
        reasons.append(
            f"The source is not clearly more accurate than the target on these items "
            f"({100 * source:.1f}% vs {100 * target:.1f}%), so there is little answer-relevant "
            "knowledge to transfer."
        )
    headroom = diag["headroom_source_right_target_wrong"]
    reasons.append(
        f"Headroom: the source is right where the target is wrong on {headroom} of "
        f"{results['n_test']} test items ({100 * headroom / results['n_test']:.1f} points at most "
        "if transfer copied the source's answers and broke nothing)."
    )
    heldout = results["map"]["heldout"]
    if heldout["correlation"] < 0.3 or heldout["r2"] < 0.1:
        reasons.append(
            f"The affine map is weak: held-out correlation {heldout['correlation']:.3f}, "
            f"R² {heldout['r2']:.3f}; most of the target's activation is not predicted from the "
            "source's."
        )
    self_gain = gains["target_to_target_control"]["gain_points"]
    if self_gain <= -results["threshold"]:
        reasons.append(
            f"Injection through a learned map costs accuracy by itself: the target's own "
            f"activation through the target-to-target map changes accuracy by {self_gain:+.1f} "
            "points."
        )
    variation = diag.get("target_item_variation")
    if variation is not None and variation < 0.2:
        reasons.append(
            f"The target's own activation at this layer and position barely differs between "
            f"items (spread {100 * variation:.1f}% of its norm): the item's information sits at "
            "other positions (or later layers), so rewriting this one vector has little to act on."
        )
    if abs(results["transfer_minus_shuffled_points"]) < results["threshold"]:
        reasons.append(
            f"The transfer is no better than injecting another item's mapped activation "
            f"({results['transfer_minus_shuffled_points']:+.1f} points): the mapped vector "
            "carries little item-specific information the target uses at this layer."
        )
    low, high = gains["transfer"]["ci"]
    if high - low > 2 * results["threshold"]:
        reasons.append(
            f"Resolution: with {results['n_test']} test items the 95% CI spans "
            f"{high - low:.1f} points, wider than twice the {results['threshold']:.0f}-point bar."
        )
    return reasons


def summary_markdown(results: Mapping[str, Any]) -> str:
    """A page for a person: accuracies, the gain and the controls; reasons when it fails."""
    if results["value"] is None:
        return no_value_summary("Activation transfer (2A)", results)
    acc, gains = results["accuracy"], results["gain"]
    shuffled = results["transfer_over_shuffled"]
    metric = results["accuracy_metric"]

    def row(label: str, key: str, gain_key: str | None) -> str:
        a = acc[key]
        text = (
            f"| {label} | {100 * a['value']:.1f} [{100 * a['ci'][0]:.1f}, {100 * a['ci'][1]:.1f}] |"
        )
        if gain_key is None:
            return text + " | |"
        g = gains[gain_key]
        return (
            text + f" {g['gain_points']:+.1f} [{g['ci'][0]:+.1f}, {g['ci'][1]:+.1f}] "
            f"| {g['mcnemar_p']:.3g} |"
        )

    failed = criteria.failed(results["criteria"])
    verdict = (
        "**Transfer works**: it meets the plan's bar and beats the shuffled-item control"
        if results["success"]
        else "**Transfer does not work**: failed " + " and ".join(f"`{c['name']}`" for c in failed)
    )
    lines = [
        "# Activation transfer (2A)",
        "",
        f"Source **{results['source']}** layer {results['source_layer']} -> target "
        f"**{results['target']}** layer {results['target_layer']} (output of that block), "
        f"injected at the last context token; mode `{results['mode']}`, coefficient "
        f"{results['coefficient']} chosen on {results['n_val']} validation items. Affine map "
        f"(ridge, alpha {results['map']['ridge_alpha']:g}) fitted on {results['n_train']} items; "
        f"{results['n_test']} test items; metric `{metric}`; seed {results['seed']}.",
        "",
        f"{verdict}. Gain over the target **{results['value']:+.1f} points** "
        f"[{results['ci'][0]:+.1f}, {results['ci'][1]:+.1f}] (needs at least "
        f"{results['threshold']:g}, interval above 0), McNemar p = "
        f"{gains['transfer']['mcnemar_p']:.3g}; over the shuffled-item control "
        f"**{shuffled['gain_points']:+.1f} points** [{shuffled['ci'][0]:+.1f}, "
        f"{shuffled['ci'][1]:+.1f}] (needs an interval above 0), McNemar p = "
        f"{shuffled['mcnemar_p']:.3g}. Held out: {results['selection']}.",
        "",
        "| Condition | Accuracy % [95% CI] | Gain vs target, points [95% CI] | McNemar p |",
        "| --- | --- | --- | --- |",
        row("Source model", "source", None),
        row("Target model", "target", None),
        row("Target + transferred activation", "target_with_transfer", "transfer"),
        row("Control: another item's mapped activation", "shuffled_control", "shuffled_control"),
        row(
            "Control: target's own, through target->target map",
            "target_to_target_control",
            "target_to_target_control",
        ),
        "",
        "Map quality on held-out items: correlation "
        f"{results['map']['heldout']['correlation']:.3f}, "
        f"R² {results['map']['heldout']['r2']:.3f} (training items: correlation "
        f"{results['map']['train']['correlation']:.3f}).",
        "",
        "What was tried (validation accuracy per coefficient; target alone "
        f"{100 * results['val_target_accuracy']:.1f}%): "
        + ", ".join(
            f"c = {row['coefficient']:g}: {100 * row['val_accuracy']:.1f}%"
            for row in results["coefficients_tried"]
        )
        + ".",
    ]
    if not results["success"]:
        lines += ["", "## Why it likely did not work", ""]
        lines += [f"- {reason}" for reason in likely_reasons(results)]
    diag = results["diagnostics"]
    moved = diag["moved_to_source_prediction_share"]
    changed = (
        f"The transfer changed the target's prediction on "
        f"{100 * diag['prediction_changed_share']:.1f}% of test items"
    )
    if moved is None:
        changed += "; the two models never disagree on them."
    else:
        changed += (
            f"; where the two models disagree ({diag['n_source_target_disagree']} items), it "
            f"moved the target to the source's answer on {100 * moved:.1f}% of them."
        )
    lines += ["", changed]
    return "\n".join(lines) + "\n"
