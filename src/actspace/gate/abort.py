"""Phase X: the negative-results report written when no pre-mortem earns its branch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.gate.decision import PREMORTEM_TITLES, PREMORTEMS

#: What each failed pre-mortem rules out, in the plan's words.
_MEANING = {
    "pm1": (
        "a linear map does not carry one model's activations onto another's on held-out items, "
        "so activation transfer between these models has nothing to build on"
    ),
    "pm2": (
        "a linear probe on the model's own activations does not tell its right answers from its "
        "wrong ones better than the threshold, so error prediction and abstention would not pay"
    ),
    "pm3": (
        "patching one layer's clean activation into the corrupted run rarely restores the clean "
        "answer, so single-layer interventions are too weak a handle for behaviour editing"
    ),
}

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


def _line(pm: str, info: Mapping[str, Any]) -> str:
    low, high = info["ci"]
    verdict = info["verdict"] + (" (forced)" if info.get("forced") else "")
    return (
        f"| {PREMORTEM_TITLES[pm]} | {info['metric']} | {info['value']:.3f} "
        f"| [{low:.3f}, {high:.3f}] | {info['threshold']:.3f} | {verdict} |"
    )


def _interpretation(pm: str, info: Mapping[str, Any]) -> str:
    low, high = info["ci"]
    threshold = info["threshold"]
    if info["verdict"] == "INCONCLUSIVE":
        return (
            f"- **{pm.upper()}**: the 95% CI [{low:.3f}, {high:.3f}] straddles the threshold "
            f"{threshold:.3f}. The data can neither confirm nor rule out the effect at this sample "
            f"size (n = {info.get('n')}); the plan counts this as FAIL, and more items would "
            "narrow the interval."
        )
    if info["verdict"] == "FAIL":
        return (
            f"- **{pm.upper()}**: the whole 95% CI [{low:.3f}, {high:.3f}] lies below the "
            f"threshold {threshold:.3f}: {_MEANING[pm]}."
        )
    return (
        f"- **{pm.upper()}**: verdict {info['verdict']}"
        + (" (forced; the measurement said " + str(info.get("measured_verdict")) + ")")
        * bool(info.get("forced"))
        + "."
    )


def negative_results_markdown(decision: Mapping[str, Any]) -> str:
    """The abort report: summary, numbers against thresholds, implications, value, pivots."""
    premortems = decision["premortems"]
    forced = decision.get("forced") or []
    lines = ["# Negative results", ""]
    if forced:
        lines += [
            f"**Forced verdicts: {', '.join(pm.upper() for pm in forced)}.** This report was "
            "produced from forced verdicts for a preview or a test; the measured verdicts are "
            "listed beside them below.",
            "",
        ]
    lines += [
        "## Summary",
        "",
        "None of the three pre-mortem experiments cleared its threshold, so the gate scheduled "
        "none of the three lines of work (cross-model transfer, error prediction, activation "
        "patching) and the plan stops here. The numbers below are the measurements; a verdict is "
        "PASS when the 95% confidence interval lies above the threshold, FAIL when it lies below "
        "and INCONCLUSIVE when it straddles it.",
        "",
        "## Pre-mortems against their thresholds",
        "",
        "| Pre-mortem | Metric | Value | 95% CI | Threshold | Verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_line(pm, premortems[pm]) for pm in PREMORTEMS]
    lines += ["", "## Interpretation", ""]
    lines += [_interpretation(pm, premortems[pm]) for pm in PREMORTEMS]
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
