"""The pre-mortems' figure: each value with its CI against its threshold and beside its control,
and both verdicts with the one the gate used."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes

from actspace.analysis.figures.elements import ci_lines, num
from actspace.analysis.figures.inputs import Inputs, expect_object, load_json
from actspace.analysis.figures.style import Drawn, Style, finish, new_figure, small_font, styled
from actspace.plan import PREMORTEM_NAMES, PREMORTEMS, premortem

#: The gate's decision, under the results folder: what the figure reads.
DECISION = "gate/decision.json"
VERDICT_COLOURS = {"PASS": "#1b7837", "INCONCLUSIVE": "#b35806", "FAIL": "#b2182b"}
#: The control is drawn in grey beside the metric: a reference, not a verdict.
CONTROL_COLOUR = "0.45"
#: Where the metric and its control stand on a panel's x axis (the metric alone stands at 0).
METRIC_X, CONTROL_X = -0.35, 0.35
#: Pre-mortem metrics: axis label and the factor that puts the value in the label's unit.
PREMORTEM_METRICS = {pm.metric: (pm.axis_label, pm.scale) for pm in PREMORTEMS}


def premortem_verdicts(
    decision: Mapping[str, Any], style: Style, output_dir: str | Path | None = None
) -> Drawn:
    """The three pre-mortem values with their CIs against their thresholds and their controls,
    and the verdicts.

    ``decision`` is ``results/gate/decision.json``. One panel per pre-mortem (their units
    differ): the value with its 95% CI, its control's value and CI in grey beside it, the
    threshold as a dashed line, the verdict the gate used (coloured) with the plan and the
    controlled verdict under it; a forced verdict is drawn with a hollow marker and says what was
    measured.
    """
    decision = expect_object(decision, DECISION)
    with styled(style):
        fig = new_figure(style, 2.9)
        axes = fig.subplots(1, len(PREMORTEM_NAMES))
        ns = []
        for ax, pm in zip(axes, PREMORTEM_NAMES, strict=True):
            ns.append(_premortem_panel(ax, pm, decision["premortems"][pm]))
    forced = [pm.upper() for pm in PREMORTEM_NAMES if decision["premortems"][pm]["forced"]]
    counts = ", ".join(f"{pm.upper()} n = {n if n is not None else '?'}" for pm, n in ns)
    criterion = decision.get("criterion")
    caption = (
        f"The three pre-mortem metrics ({counts}) with 95% confidence intervals against their "
        "thresholds (dashed) and beside their controls (grey), and the verdict each gave the "
        "gate"
        + (f" under the {criterion} criterion" if criterion else "")
        + ", with the plan and the controlled verdict under it"
        + (f"; forced verdicts ({', '.join(forced)}) are hollow." if forced else ".")
    )
    return finish("premortem_verdicts", fig, caption, output_dir, style)


def _premortem_panel(ax: Axes, pm: str, info: Mapping[str, Any]) -> tuple[str, Any]:
    """One pre-mortem's panel; returns ``(pm, n)`` for the caption."""
    verdict, forced = info["verdict"], bool(info["forced"])
    colour = VERDICT_COLOURS.get(verdict, "black")
    label, scale = PREMORTEM_METRICS.get(info.get("metric"), (str(info.get("metric", "value")), 1))
    value = num(info.get("value")) * scale
    low, high = (num(v) * scale for v in (info.get("ci") or [None, None]))
    threshold = num(info.get("threshold")) * scale
    control = info.get("control") or {}
    x = METRIC_X if control else 0.0
    if math.isfinite(value):
        ci_lines(ax, x, low, high, gid="ci", colors=colour, linewidth=1.5)
        ax.plot(
            [x],
            [value],
            marker="o",
            markersize=7,
            color=colour,
            markerfacecolor="white" if forced else colour,
            markeredgewidth=1.5,
            linestyle="none",
            gid="value",
        )
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
    control_values = _control(ax, control, scale)
    if math.isfinite(threshold):
        ax.axhline(threshold, color="0.3", linestyle="--", linewidth=1.0, gid="threshold")
        ax.annotate(
            f"threshold {threshold:g}",
            (1.0, threshold),
            xycoords=("axes fraction", "data"),
            xytext=(-2, 2),
            textcoords="offset points",
            ha="right",
            va="bottom",
            color="0.3",
            fontsize=small_font(),
        )
    finite = [v for v in (value, low, high, threshold, *control_values) if math.isfinite(v)]
    if finite:
        pad = max(0.15 * (max(finite) - min(finite)), 0.05 * max(abs(v) for v in finite), 1e-3)
        ax.set_ylim(min(finite) - pad, max(finite) + pad)
    ax.set_xlim(-1.0, 1.0)
    if control:
        ax.set_xticks([METRIC_X, CONTROL_X], ["metric", "control"], fontsize=small_font())
        ax.tick_params(axis="x", length=0)
    else:
        ax.set_xticks([])
    ax.spines["bottom"].set_visible(False)
    ax.set_ylabel(label)
    # "PM1 cross-model similarity" -> "PM1\ncross-model\nsimilarity": narrow panels stay legible
    ax.set_title(premortem(pm).title.replace(" ", "\n"))
    text = verdict
    if forced:
        measured = info.get("measured_verdict") or "not measured"
        text += f" (forced)\nmeasured: {measured}"
    if info.get("plan_verdict") or info.get("controlled_verdict"):
        text += (
            f"\nplan {info.get('plan_verdict') or 'n/a'}, "
            f"controlled {info.get('controlled_verdict') or 'n/a'}"
        )
    n = info.get("n")
    if n is not None:
        text += f"\nn = {n}"
    ax.set_xlabel(text, color=colour, fontweight="bold")
    return pm, n


def _control(ax: Axes, control: Mapping[str, Any], scale: float) -> tuple[float, ...]:
    """The control's value and CI in grey at :data:`CONTROL_X`; returns what it drew (scaled)."""
    if not control:
        return ()
    value = num(control.get("value")) * scale
    low, high = (num(v) * scale for v in (control.get("ci") or [None, None]))
    ci_lines(ax, CONTROL_X, low, high, gid="control_ci", colors=CONTROL_COLOUR, linewidth=1.5)
    if math.isfinite(value):
        ax.plot(
            [CONTROL_X],
            [value],
            marker="D",
            markersize=6,
            color=CONTROL_COLOUR,
            linestyle="none",
            gid="control",
        )
    return value, low, high


def premortem_inputs(results_dir: Path, folder: Path, style: Style) -> Inputs | None:
    """The figure's inputs: the gate's decision, once the gate has decided."""
    decision = Path(results_dir) / DECISION
    if not decision.is_file():
        return None
    return Inputs(lambda: premortem_verdicts(load_json(decision), style), [decision])
