"""Branch 2B's figures: the correctness probe by layer (and its ROC), and risk against coverage."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from actspace.analysis.figures.elements import (
    LAYER_LABEL,
    axes_grid,
    ci_band,
    ci_bounds,
    cycle_colours,
    figure_legend,
    floats,
    grid_shape,
    integer_ticks,
    n_text,
    no_data,
    num,
    seeds_text,
)
from actspace.analysis.figures.inputs import expect_seeds
from actspace.analysis.figures.style import Drawn, Style, finish, new_figure, small_font, styled


def _seeded_stores(
    figure_data: Mapping[int, Mapping[str, Any]],
    results: Mapping[int, Mapping[str, Any]] | None,
    experiment: str,
) -> tuple[dict, dict, list[tuple[str, str]]]:
    """A per-store experiment's figure data and results by seed (checked), and its
    ``(model, task)`` stores in first-seen order."""
    data = expect_seeds(figure_data, f"{experiment}/seed{{N}}/figure_data.json")
    res = (
        expect_seeds(
            {s: results[s] for s in data if s in results},
            f"{experiment}/seed{{N}}/results.json",
        )
        if results
        else {}
    )
    keys: list[tuple[str, str]] = []
    for fd in data.values():
        for curve in fd["curves"]:
            key = (str(curve["model"]), str(curve["task"]))
            if key not in keys:
                keys.append(key)
    return data, res, keys


def error_prediction_roc(
    figure_data: Mapping[int, Mapping[str, Any]],
    style: Style,
    output_dir: str | Path | None = None,
    *,
    results: Mapping[int, Mapping[str, Any]] | None = None,
) -> Drawn:
    """The correctness probe against output confidence, per store: AUROC and balanced accuracy.

    ``figure_data`` maps each seed to its ``error_prediction_extended/seed{N}/figure_data.json``;
    ``results`` (the same seeds' ``results.json``, optional) gives the per-layer AUROC intervals
    and the held-out counts. Panels: the ROC curve at the selected layer when the figure data
    carries one (``curves[i].roc.{probe,confidence}.{fpr,tpr}``; the experiment does not write it
    yet), then AUROC and balanced accuracy by layer with 95% CI bands, the output-confidence
    baseline dashed and chance dotted. Each store has one colour; each seed one line.
    """
    data, res, keys = _seeded_stores(figure_data, results, "error_prediction_extended")
    seeds = list(data)
    colours = dict(zip(keys, cycle_colours(len(keys)), strict=True))
    has_roc = any("roc" in c for fd in data.values() for c in fd["curves"])
    panels = (["roc"] if has_roc else []) + ["auroc", "balanced_accuracy"]
    n_tests: list[Any] = []
    with styled(style):
        fig = new_figure(style, 3.1 + 0.15 * math.ceil(len(keys) / 4))
        axes = dict(zip(panels, np.atleast_1d(fig.subplots(1, len(panels))), strict=True))
        if not keys:
            for ax in axes.values():
                no_data(ax, "no store could be analysed")
        for seed, fd in data.items():
            records = _store_records(res.get(seed))
            for curve in fd["curves"]:
                key = (str(curve["model"]), str(curve["task"]))
                record = records.get(key)
                n_tests.append(record.get("n_test") if record else None)
                _error_curves(axes, curve, record, colours[key], seed, first=seed == seeds[0])
        _error_axes(axes, keys, colours)
    caption = (
        f"Correctness probe against output confidence for {len(keys)} model/task store(s) "
        f"({seeds_text(seeds)}; {n_text(n_tests)} held-out items): "
        + ("ROC at the selected layer, " if has_roc else "")
        + "AUROC and balanced accuracy by layer with 95% CI bands (dashed: output confidence; "
        "dotted: chance; marker: selected layer)."
    )
    return finish("error_prediction_roc", fig, caption, output_dir, style)


def _store_records(results: Mapping[str, Any] | None) -> dict[tuple[str, str], Mapping]:
    if results is None:
        return {}
    return {(str(r["model"]), str(r["task"])): r for r in results["stores"] if "skipped" not in r}


def _error_curves(
    axes: Mapping[str, Axes],
    curve: Mapping[str, Any],
    record: Mapping[str, Any] | None,
    colour: str,
    seed: int,
    *,
    first: bool,
) -> None:
    label = f"{curve['model']} / {curve['task']}"
    tag = f"{curve['model']}/{curve['task']}:seed{seed}"
    layers = floats(curve["layer"])
    selected = curve.get("selected_layer")
    at = list(curve["layer"]).index(selected) if selected in list(curve["layer"]) else None
    auroc = floats(curve["auroc"])
    ax = axes["auroc"]
    ax.plot(
        layers,
        auroc,
        color=colour,
        linewidth=1.2,
        gid=f"auroc:{tag}",
        label=label if first else None,
    )
    if record is not None:
        low, high = ci_bounds([row.get("auroc_ci") for row in record["layers"]])
        if low.size == layers.size:
            ci_band(ax, layers, low, high, colour, f"auroc_ci:{tag}")
    ax.axhline(
        num(curve.get("confidence_auroc")),
        color=colour,
        linestyle="--",
        linewidth=1.0,
        gid=f"confidence_auroc:{tag}",
    )
    ba = 100 * floats(curve["balanced_accuracy"])
    low, high = ci_bounds(curve["ci"])
    ax = axes["balanced_accuracy"]
    ax.plot(layers, ba, color=colour, linewidth=1.2, gid=f"balanced_accuracy:{tag}")
    ci_band(ax, layers, 100 * low, 100 * high, colour, f"balanced_accuracy_ci:{tag}")
    ax.axhline(
        100 * num(curve.get("confidence_balanced_accuracy")),
        color=colour,
        linestyle="--",
        linewidth=1.0,
        gid=f"confidence_balanced_accuracy:{tag}",
    )
    if at is not None:
        axes["auroc"].plot(layers[at], auroc[at], "D", color=colour, markersize=4)
        ax.plot(layers[at], ba[at], "D", color=colour, markersize=4)
    if "roc" in axes and "roc" in curve:
        roc = curve["roc"]
        ax = axes["roc"]
        probe_auc = auroc[at] if at is not None else math.nan
        ax.plot(
            floats(roc["probe"]["fpr"]),
            floats(roc["probe"]["tpr"]),
            color=colour,
            linewidth=1.2,
            gid=f"roc_probe:{tag}",
            label=f"{label}: probe {probe_auc:.2f}" if first else None,
        )
        if "confidence" in roc:
            ax.plot(
                floats(roc["confidence"]["fpr"]),
                floats(roc["confidence"]["tpr"]),
                color=colour,
                linestyle="--",
                linewidth=1.0,
                gid=f"roc_confidence:{tag}",
                label=f"confidence {num(curve.get('confidence_auroc')):.2f}" if first else None,
            )


def _error_axes(
    axes: Mapping[str, Axes], keys: list[tuple[str, str]], colours: Mapping[Any, str]
) -> None:
    for name, ax in axes.items():
        if name == "roc":
            ax.plot([0, 1], [0, 1], color="0.5", linestyle=":", linewidth=1.0, gid="chance")
            ax.set_xlabel("false positive rate\n(wrong answers passed)")
            ax.set_ylabel("true positive rate\n(correct answers passed)")
            ax.set_title("ROC, selected layer")
            ax.set_aspect("equal")
            ax.legend(loc="lower right", fontsize=small_font())
            continue
        chance = 0.5 if name == "auroc" else 50.0
        ax.axhline(chance, color="0.5", linestyle=":", linewidth=1.0, gid="chance")
        ax.set_xlabel(LAYER_LABEL)
        integer_ticks(ax, "x")
        if name == "auroc":
            ax.set_ylabel("held-out AUROC")
            ax.set_title("AUROC")
        else:
            ax.set_ylabel("held-out balanced accuracy (%)")
            ax.set_title("balanced accuracy")
    extra = [
        (Line2D([], [], color="0.3", linestyle="--", linewidth=1.0), "output confidence"),
        (Line2D([], [], color="0.5", linestyle=":", linewidth=1.0), "chance"),
        (Line2D([], [], color="0.3", marker="D", linestyle="none", markersize=4), "selected layer"),
    ]
    figure_legend(axes["auroc"].figure, [axes["auroc"]], 4, extra)


# ---------------------------------------------------------------------------------------------
# risk_coverage

RISK_LINES = (
    ("risk_probe", "probe", "-"),
    ("risk_confidence", "output confidence", "--"),
    ("risk_random", "random abstainer", ":"),
    ("risk_oracle", "oracle", "-."),
)


def risk_coverage(
    figure_data: Mapping[int, Mapping[str, Any]],
    style: Style,
    output_dir: str | Path | None = None,
    *,
    results: Mapping[int, Mapping[str, Any]] | None = None,
) -> Drawn:
    """Risk (error rate among answered items) against coverage, one panel per store.

    ``figure_data`` maps each seed to its ``abstention/seed{N}/figure_data.json``; ``results``
    (the same seeds' ``results.json``) gives the threshold and the probe's operating point there,
    which is marked. Lines: the probe, the output-confidence baseline, the random abstainer and
    the oracle; one line per seed.
    """
    data, res, keys = _seeded_stores(figure_data, results, "abstention")
    seeds = list(data)
    colours = dict(zip([k for k, _, _ in RISK_LINES], cycle_colours(len(RISK_LINES)), strict=True))
    rows, _ = grid_shape(max(len(keys), 1), 3)
    n_tests: list[Any] = []
    thresholds: set[float] = set()
    with styled(style):
        fig = new_figure(style, 0.6 + 2.3 * rows)
        axes = axes_grid(fig, max(len(keys), 1), 3)
        if not keys:
            no_data(axes[0], "no store could be analysed")
        panels = dict(zip(keys, axes, strict=False))
        for seed, fd in data.items():
            records = _store_records(res.get(seed))
            threshold = num(res[seed]["threshold"]) if seed in res else math.nan
            for curve in fd["curves"]:
                key = (str(curve["model"]), str(curve["task"]))
                record = records.get(key)
                n_tests.append(len(curve["coverage"]))
                if math.isfinite(threshold):
                    thresholds.add(threshold)
                _risk_panel(panels[key], curve, record, threshold, colours, seed, seed == seeds[0])
        for key, ax in panels.items():
            ax.set_title(f"{key[0]} / {key[1]}")
            ax.set_xlabel("coverage (% answered)")
            ax.set_ylabel("risk (% wrong among answered)")
            ax.set_xlim(0, 100)
        figure_legend(fig, axes, 5)
    tau = ", ".join(f"{t:g}" for t in sorted(thresholds)) or "unknown"
    caption = (
        f"Risk-coverage curves of abstention on {len(keys)} model/task store(s) "
        f"({seeds_text(seeds)}; {n_text(n_tests)} held-out items): the probe's P(correct), the "
        f"output confidence, a random abstainer and the oracle, with the probe's operating point "
        f"at threshold {tau} marked."
    )
    return finish("risk_coverage", fig, caption, output_dir, style)


def _risk_panel(
    ax: Axes,
    curve: Mapping[str, Any],
    record: Mapping[str, Any] | None,
    threshold: float,
    colours: Mapping[str, str],
    seed: int,
    first: bool,
) -> None:
    tag = f"{curve['model']}/{curve['task']}:seed{seed}"
    coverage = 100 * floats(curve["coverage"])
    for key, label, style in RISK_LINES:
        if key not in curve:
            continue
        ax.plot(
            coverage,
            100 * floats(curve[key]),
            color=colours[key],
            linestyle=style,
            linewidth=1.2 if key == "risk_probe" else 1.0,
            gid=f"{key}:{tag}",
            label=label if first else None,
        )
    if record is None:
        return
    probe = record["probe"]
    eff = num(probe.get("effective_accuracy"))
    if math.isfinite(eff):
        ax.plot(
            100 * num(probe["coverage"]),
            100 * (1 - eff),
            "o",
            color=colours["risk_probe"],
            markersize=6,
            markerfacecolor="white",
            markeredgewidth=1.5,
            gid=f"operating_point:{tag}",
            clip_on=False,
            label=f"P(correct) \u2265 {threshold:g}" if first else None,
        )
