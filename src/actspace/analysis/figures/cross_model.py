"""Branch 2A's figures: the cross-model alignment heatmaps and the activation-transfer gain."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes

from actspace.analysis.figures.elements import (
    LAYER_LABEL,
    axes_grid,
    cell_edges,
    ci_bounds,
    ci_lines,
    cycle_colours,
    floats,
    grid_shape,
    integer_ticks,
    n_text,
    num,
    seed_offsets,
    seeds_text,
)
from actspace.analysis.figures.inputs import (
    Inputs,
    expect_object,
    expect_seeds,
    load_json,
    seed_folders,
)
from actspace.analysis.figures.style import Drawn, Style, finish, new_figure, small_font, styled


def cross_model_heatmap(
    figure_data: Mapping[str, Any],
    style: Style,
    output_dir: str | Path | None = None,
    *,
    results: Mapping[str, Any] | None = None,
    variant: str = "standardised",
    measure: str = "correlation",
) -> Drawn:
    """Model-pair matrices and the layer-by-layer grid of every ordered model pair.

    ``figure_data`` is ``cross_model_extended/figure_data.json``; ``results`` (its
    ``results.json``, optional) gives the number of held-out items and the relative depth. Top:
    the held-out correlation after a ridge projection for every (source, target) pair, at the
    configured depth and at the best layer pair. Below: one small heatmap per ordered pair, source
    layer against target layer, on one colour scale; dots mark depth-aligned layer pairs.
    """
    data = expect_object(figure_data, "cross_model_extended/figure_data.json")
    res = None if results is None else expect_object(results, "cross_model_extended/results.json")
    models = list(data["models"])
    matrices = data["model_pair_heatmap"]
    at_depth = np.array(
        [floats(row) for row in matrices["at_layer_depth"][variant][measure]], dtype=float
    )
    best_block = matrices.get("best") or {}
    best = (
        np.array([floats(row) for row in best_block[variant][measure]], dtype=float)
        if variant in best_block
        else None
    )
    grids = list(data["layer_grids"])
    values = [np.array([floats(r) for r in g[variant][measure]], dtype=float) for g in grids]
    every = np.concatenate([at_depth.ravel(), *(v.ravel() for v in values)])
    finite = every[np.isfinite(every)]
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    vmax = max(1e-9, float(finite.max())) if finite.size else 1.0
    vmax = max(vmax, 1.0) if measure == "correlation" else vmax
    cbar_label = {"correlation": "held-out Pearson r", "cka": "debiased CKA"}.get(
        measure, measure.replace("_", " ")
    )
    rows, _ = grid_shape(len(grids), 4)
    with styled(style):
        fig = new_figure(style, 2.6 + 1.8 * rows)
        top, bottom = fig.subfigures(2, 1, height_ratios=[2.6, 1.8 * rows])
        tops = top.subplots(1, 2 if best is not None else 1, squeeze=False)[0]
        panels = [(at_depth, "at the configured relative depth", "pair_matrix")]
        if best is not None:
            panels.append((best, "at the best layer pair", "pair_matrix_best"))
        image = None
        for ax, (matrix, title, gid) in zip(tops, panels, strict=True):
            image = _pair_matrix(ax, matrix, models, vmin, vmax, gid)
            depth = res.get("layer_depth") if res is not None else None
            if depth is not None and gid == "pair_matrix":
                title = f"at relative depth {depth:g}"
            ax.set_title(title)
        top.colorbar(image, ax=list(tops), label=cbar_label, shrink=0.9)
        axes = axes_grid(bottom, len(grids), 4)
        for ax, grid, matrix in zip(axes, grids, values, strict=True):
            image = _layer_grid(ax, grid, matrix, vmin, vmax)
        bottom.supxlabel(f"target {LAYER_LABEL}", fontsize=style.font_size)
        bottom.supylabel("source layer\n(0 = embeddings)", fontsize=style.font_size)
        if axes:
            bottom.colorbar(image, ax=axes, label=cbar_label, shrink=0.9)
    n = n_text([res.get("n_test")]) if res is not None else "n unknown"
    caption = (
        f"{cbar_label[0].upper()}{cbar_label[1:]} after a ridge projection ({variant} "
        f"features; {n} held-out items) between every ordered pair of {len(models)} models, at "
        f"one depth and at the best layer pair (top), and for every layer pair of each of the "
        f"{len(grids)} ordered pairs (bottom; dots: depth-aligned layers)."
    )
    return finish("cross_model_heatmap", fig, caption, output_dir, style)


def _pair_matrix(
    ax: Axes, matrix: np.ndarray, models: list[str], vmin: float, vmax: float, gid: str
) -> Any:
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.9")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=vmin, vmax=vmax)
    image.set_gid(gid)
    ticks = range(len(models))
    ax.set_xticks(ticks, models, rotation=30, ha="right")
    ax.set_yticks(ticks, models)
    ax.set_xlabel("target model")
    ax.set_ylabel("source model")
    if len(models) <= 6:
        mid = (vmin + vmax) / 2
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=small_font(),
                    color="black" if value > mid else "white",
                )
    return image


def _layer_grid(ax: Axes, grid: Mapping[str, Any], matrix: np.ndarray, vmin: float, vmax: float):
    src, tgt = list(grid["source_layers"]), list(grid["target_layers"])
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.9")
    image = ax.pcolormesh(
        cell_edges(tgt),
        cell_edges(src),
        np.ma.masked_invalid(matrix),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
    )
    image.set_gid(f"grid:{grid['source']}->{grid['target']}")
    aligned = np.array(grid.get("depth_aligned") or [], dtype=float).reshape(-1, 2)
    if aligned.size:
        ax.plot(aligned[:, 1], aligned[:, 0], "w.", markersize=3, gid="depth_aligned")
    ax.set_title(f"{grid['source']} \u2192 {grid['target']}")
    integer_ticks(ax, "x", 4)
    integer_ticks(ax, "y", 4)
    ax.spines[["top", "right"]].set_visible(True)
    return image


TRANSFER_CONDITIONS = (
    ("source", "source"),
    ("target", "target"),
    ("target_with_transfer", "target +\ntransfer"),
    ("shuffled_control", "other-item\ncontrol"),
    ("target_to_target_control", "self-map\ncontrol"),
)
GAIN_CONDITIONS = (
    ("transfer", "transfer"),
    ("shuffled_control", "other-item\ncontrol"),
    ("target_to_target_control", "self-map\ncontrol"),
)


def transfer_gain(
    runs: Mapping[int, Mapping[str, Any]], style: Style, output_dir: str | Path | None = None
) -> Drawn:
    """Accuracy of the five conditions and the gain over the target, one point per seed.

    ``runs`` maps each seed to its ``activation_transfer/seed{N}/results.json``. Left: accuracy
    (%) as bars (the mean over seeds) with each seed's value and 95% CI. Right: each seed's gain
    over the target in points with its CI, for the transfer and the two controls; the plan's bar
    (``threshold``) dashed.
    """
    runs = expect_seeds(runs, "activation_transfer/seed{N}/results.json")
    seeds = list(runs)
    first = runs[seeds[0]]
    offsets = seed_offsets(len(seeds), 0.4)
    colours = cycle_colours(len(seeds))
    with styled(style):
        fig = new_figure(style, 2.9)
        left, right = fig.subplots(1, 2, width_ratios=[5, 3])
        x = np.arange(len(TRANSFER_CONDITIONS))
        acc = np.array(
            [
                [100 * num(r["accuracy"][k]["value"]) for k, _ in TRANSFER_CONDITIONS]
                for r in runs.values()
            ]
        )
        bars = left.bar(x, np.nanmean(acc, axis=0), width=0.7, color="0.85", edgecolor="0.5")
        for bar, (key, _) in zip(bars, TRANSFER_CONDITIONS, strict=True):
            bar.set_gid(f"bar:{key}")
        for (seed, run), dx, colour in zip(runs.items(), offsets, colours, strict=True):
            cis = [run["accuracy"][k]["ci"] for k, _ in TRANSFER_CONDITIONS]
            low, high = ci_bounds(cis)
            ci_lines(left, x + dx, 100 * low, 100 * high, f"acc_ci:seed{seed}", colors=colour)
            left.plot(
                x + dx,
                acc[seeds.index(seed)],
                "o",
                color=colour,
                markersize=4,
                gid=f"acc:seed{seed}",
                label=f"seed {seed}",
            )
        left.set_xticks(x, [label for _, label in TRANSFER_CONDITIONS])
        metric = first.get("accuracy_metric", "acc")
        left.set_ylabel(
            "length-normalised accuracy (%)" if metric == "acc_norm" else "accuracy (%)"
        )
        left.set_title(
            f"{first['source']} L{first.get('source_layer', '?')} \u2192 "
            f"{first['target']} L{first.get('target_layer', '?')}"
        )
        gx = np.arange(len(GAIN_CONDITIONS))
        for (seed, run), dx, colour in zip(runs.items(), offsets, colours, strict=True):
            gains = [run["gain"][k] for k, _ in GAIN_CONDITIONS]
            low, high = ci_bounds([g["ci"] for g in gains])
            ci_lines(right, gx + dx, low, high, f"gain_ci:seed{seed}", colors=colour)
            right.plot(
                gx + dx,
                [num(g["gain_points"]) for g in gains],
                "o",
                color=colour,
                markersize=4,
                gid=f"gain:seed{seed}",
            )
        right.axhline(0.0, color="0.5", linewidth=0.8)
        threshold = num(first.get("threshold"))
        if math.isfinite(threshold):
            right.axhline(
                threshold,
                color="0.3",
                linestyle="--",
                linewidth=1.0,
                gid="threshold",
                label=f"bar: +{threshold:g} points",
            )
            right.legend(loc="best")
        right.set_xticks(gx, [label for _, label in GAIN_CONDITIONS])
        right.set_xlim(-0.6, len(GAIN_CONDITIONS) - 0.4)
        right.set_ylabel("gain over target (accuracy points)")
        right.set_title("gain, 95% CI")
        if len(seeds) > 1:
            left.legend(loc="best")
    n = n_text([r.get("n_test", r.get("n")) for r in runs.values()])
    caption = (
        f"Activation transfer from {first['source']} to {first['target']} ({seeds_text(seeds)}, "
        f"{n} held-out items per seed): accuracy of the source, the target, the target with the "
        "transferred activation and two controls (another item's mapped activation; the target's "
        "own through a target-to-target map) (bars: mean over seeds; points: each seed with its "
        "95% CI), and each seed's gain over the target in points with its 95% CI."
    )
    return finish("transfer_gain", fig, caption, output_dir, style)


def transfer_inputs(results_dir: Path, folder: Path, style: Style) -> Inputs | None:
    """The inputs of :func:`transfer_gain`: every seed's results.json."""
    runs = seed_folders(folder, "results.json")
    measured = {
        s: p for s, p in runs.items() if load_json(p / "results.json").get("value") is not None
    }
    if not measured:
        return None  # did not run, or could not be measured (its summary says why)
    runs = measured
    return Inputs(
        lambda: transfer_gain({s: load_json(p / "results.json") for s, p in runs.items()}, style),
        [p / "results.json" for p in runs.values()],
    )
