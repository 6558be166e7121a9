"""Phase X: the negative-results report written when no pre-mortem earns its branch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace import plan
from actspace.gate.decision import (
    NO_VALUE,
    comparison_text,
    control_text,
    criterion_sentence,
    no_value,
    other_criterion_sentence,
)

_PIVOTS = (
    "**Scale.** Repeat the pre-mortems on larger models of the same families (e.g. pythia-410m, "
    "gpt2-medium): representational convergence and linearly readable error signals are reported "
    "to grow with scale.",
    "**Other architectures.** Add a Llama-, Qwen2- or Gemma-family model; the failure may be "
    "specific to the families measured.",
    "**Instruction-tuned models.** Their answers are more consistent, which can make correctness "
    "more linearly decodable and patching effects larger.",
    "**Other read-outs.** Try the mean pooling instead of the last token, other layers (the "
    "configuration's layer keys), or several layers at once.",
    "**Publish the negative result.** A careful null with confidence intervals and baselines is "
    "itself a contribution (workshop or findings track), and saves others the same search.",
)


def _verdict(info: Mapping[str, Any]) -> str:
    if not info.get("forced"):
        return str(info["verdict"])
    return f"{info['verdict']} (forced; measured {info.get('measured_verdict') or 'nothing'})"


def _fmt(value: Any) -> str:
    """Three decimals; ``n/a`` for a missing value (a pre-mortem that measured nothing)."""
    return "n/a" if value is None else f"{value:.3f}"


def _ci(info: Mapping[str, Any]) -> tuple[Any, Any]:
    ci = info.get("ci") or [None, None]
    return ci[0], ci[1]


def _line(pm: plan.PreMortem, info: Mapping[str, Any]) -> str:
    low, high = _ci(info)
    return (
        f"| {pm.title} | {info.get('metric') or 'n/a'} | {_fmt(info.get('value'))} "
        f"| [{_fmt(low)}, {_fmt(high)}] | {_fmt(info.get('threshold'))} "
        f"| {info.get('plan_verdict') or 'n/a'} | {control_text(info)} | {comparison_text(info)} "
        f"| {info.get('controlled_verdict') or 'n/a'} | {_verdict(info)} |"
    )


def _both(info: Mapping[str, Any]) -> str:
    """`` (plan PASS, controlled FAIL)`` where the two verdicts differ, else nothing."""
    plan_rule, controlled = info.get("plan_verdict"), info.get("controlled_verdict")
    return "" if plan_rule == controlled else f" (plan {plan_rule}, controlled {controlled})"


def _interpretation(pm: plan.PreMortem, info: Mapping[str, Any]) -> str:
    """What the measurement says; a forced verdict is named as such, never read as a measurement."""
    low, high = _ci(info)
    threshold = _fmt(info.get("threshold"))
    measured = info.get("measured_verdict", info["verdict"])
    reason = str(info.get("reason") or NO_VALUE).rstrip(".")
    if info.get("forced"):
        said = f"{measured}, with no value: {reason}" if no_value(info) else measured
        return (
            f"- **{pm.label}**: verdict {info['verdict']} (forced; the measurement said "
            f"{said}{_both(info)})."
        )
    if no_value(info):
        return (
            f"- **{pm.label}**: INCONCLUSIVE with no value: nothing was measured ({reason}). "
            f"There is no interval to set against the threshold {threshold}; the plan counts "
            "this as FAIL, and more items, or models that answer more of them right, would let "
            "it measure."
        )
    if measured == "INCONCLUSIVE":
        return (
            f"- **{pm.label}**: the 95% CI [{_fmt(low)}, {_fmt(high)}] straddles the threshold "
            f"{threshold}. The data can neither confirm nor rule out the effect at this sample "
            f"size (n = {info.get('n')}); the plan counts this as FAIL, and more items would "
            "narrow the interval."
        )
    if measured == "FAIL" and info.get("plan_verdict") == "PASS":
        control = info.get("control") or {}
        statistic = (info.get("controlled") or {}).get("statistic") or "metric against control"
        return (
            f"- **{pm.label}**: the 95% CI [{_fmt(low)}, {_fmt(high)}] lies above the threshold "
            f"{threshold} (plan verdict PASS), but the metric does not beat its control, "
            f"{control.get('name') or pm.control} ({control_text(info)}): the controlled "
            f"comparison ({statistic}) is {comparison_text(info)}, an interval not above its "
            "bound, so the controlled verdict is FAIL: clearing the threshold shows no more than "
            "the trivial explanation already gives."
        )
    if measured == "FAIL":
        return (
            f"- **{pm.label}**: the whole 95% CI [{_fmt(low)}, {_fmt(high)}] lies below the "
            f"threshold {threshold}: {pm.fail_meaning}."
        )
    return f"- **{pm.label}**: verdict {info['verdict']}."


def negative_results_markdown(decision: Mapping[str, Any]) -> str:
    """The abort report: summary, numbers against thresholds, implications, value, pivots."""
    premortems = decision["premortems"]
    forced = decision.get("forced") or []
    lines_of_work = "; ".join(
        f"{pm.branch} {plan.branch(pm.branch).title}" for pm in plan.PREMORTEMS
    )
    lines = ["# Negative results", ""]
    if forced:
        lines += [
            f"**Forced verdicts: {', '.join(plan.premortem(pm).label for pm in forced)}.** "
            "This report was produced from forced verdicts for a preview or a test; the "
            "measured verdicts are listed beside them below.",
            "",
        ]
    unmeasured = any(no_value(premortems[pm]) for pm in plan.PREMORTEM_NAMES)
    lines += [
        "## Summary",
        "",
        "None of the pre-mortem experiments earned its branch under the gate's criterion, so the "
        f"gate scheduled none of the lines of work they open ({lines_of_work}) and the plan "
        f"stops here. {criterion_sentence(decision.get('criterion'))} "
        f"{other_criterion_sentence(decision)}".rstrip(),
        "",
        "The numbers below are the measurements; a plan verdict is PASS when the 95% confidence "
        "interval lies above the threshold, FAIL when it lies below and INCONCLUSIVE when it "
        "straddles it"
        + (
            " or when nothing could be measured (n/a; the reason is given below)"
            if unmeasured
            else ""
        )
        + ". A controlled verdict is the plan verdict, except that a plan PASS whose metric does "
        "not beat its control (the 95% CI of its controlled comparison not above its bound) is "
        "FAIL.",
        "",
        "## Pre-mortems against their thresholds and controls",
        "",
        "| Pre-mortem | Metric | Value | 95% CI | Threshold | Plan verdict "
        "| Control value [95% CI] | Controlled comparison [95% CI] | Controlled verdict "
        "| Verdict used |",
        "| --- " * 10 + "|",
    ]
    lines += [_line(pm, premortems[pm.name]) for pm in plan.PREMORTEMS]
    lines += ["", "## Interpretation", ""]
    lines += [_interpretation(pm, premortems[pm.name]) for pm in plan.PREMORTEMS]
    lines += [
        "",
        "## Implications",
        "",
        "- **Larger models.** The models measured may be below the scale at which shared "
        "representations and linearly readable self-knowledge appear; the result bounds the "
        "effect at this scale, not in general.",
        "- **Other architectures.** All conclusions are conditional on the families measured.",
        "- **Instruction-tuned models.** Base models were measured; tuning changes both the "
        "answers "
        "and the geometry of the residual stream.",
        "",
        "## Value of the negative result",
        "",
        "The pre-mortems cost minutes instead of the weeks the full branches would have taken, and "
        "they bound the effects with confidence intervals against explicit thresholds and "
        "baselines. Reported as such, they tell the field where these cheap methods do not work.",
        "",
        "## Pivot options",
        "",
    ]
    lines += [f"{number}. {text}" for number, text in enumerate(_PIVOTS, start=1)]
    return "\n".join(lines) + "\n"
