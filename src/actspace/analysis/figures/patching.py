"""Branch 2C's figures: the patching effect by layer, and the steering effect by coefficient."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from actspace.analysis.figures.elements import (
    LAYER_LABEL,
    axes_grid,
    cell_edges,
    ci_band,
    ci_bounds,
    ci_lines,
    cycle_colours,
    figure_legend,
    floats,
    integer_ticks,
    n_text,
    no_data,
    num,
    seed_offsets,
    seeds_text,
)
from actspace.analysis.figures.inputs import (
    Inputs,
    expect_object,
    expect_seeds,
    experiment_dir,
    load_json,
    seed_folders,
)
from actspace.analysis.figures.style import Drawn, Style, finish, new_figure, styled

SCORER_UNITS = {
    "lexicon": "share of words in lexicon",
    "classifier": "classifier P(label)",
    "offline": "offline classifier P(offensive)",
}
#: The experiment whose prompting baseline the steering figure adds, seed by seed, where it ran.
PROMPTING = "patching_vs_prompting"

PATCH_STYLES = {
    ("denoising", "diff"): ("#2166ac", "-", "denoising, differing token"),
    ("denoising", "final"): ("#2166ac", "--", "denoising, final token"),
    ("noising", "diff"): ("#b2182b", "-", "noising, differing token"),
    ("noising", "final"): ("#b2182b", "--", "noising, final token"),
}


def patching_effect_by_layer(
    figure_data: Mapping[str, Any],
    style: Style,
    output_dir: str | Path | None = None,
    *,
    results: Mapping[str, Any] | None = None,
) -> Drawn:
    """By-layer patching effect with CI bands, and the layer-by-position denoising heatmap.

    ``figure_data`` is ``patching_layers/figure_data.json``; ``results`` (its ``results.json``,
    optional) gives the number of pairs used. Left: the normalised effect by layer, denoising
    and noising, at the differing token and at the final token, 95% CI bands. Right: the
    denoising effect per layer (0 = embeddings) and offset from the final token.
    """
    data = expect_object(figure_data, "patching_layers/figure_data.json")
    res = None if results is None else expect_object(results, "patching_layers/results.json")
    layers = [int(k) for k in data["layers"]]
    offsets = [int(o) for o in data["offsets"]]
    curves, heatmaps = data["curves"], data["heatmaps"]
    with styled(style):
        fig = new_figure(style, 3.2)
        left, right = fig.subplots(1, 2, width_ratios=[1, 1])
        if not curves:
            no_data(left, "no usable pair: nothing to plot")
        for (direction, role), (colour, line, label) in PATCH_STYLES.items():
            if direction not in curves or role not in curves[direction]:
                continue
            c = curves[direction][role]
            x = floats(c["layer"])
            left.plot(
                x,
                floats(c["effect"]),
                color=colour,
                linestyle=line,
                linewidth=1.3,
                label=label,
                gid=f"{direction}:{role}",
            )
            low, high = ci_bounds(c["effect_ci"])
            ci_band(left, x, low, high, colour, f"{direction}:{role}:ci")
        if curves:
            left.axhline(0.0, color="0.6", linewidth=0.7)
            left.axhline(1.0, color="0.6", linewidth=0.7)
            left.set_xlabel(LAYER_LABEL)
            left.set_ylabel("patching effect\n(share of logit difference)")
            left.set_title("effect by layer, 95% CI")
            integer_ticks(left, "x")
            figure_legend(fig, [left], 2)
        if "denoising" in heatmaps:
            _patching_heatmap(fig, right, heatmaps["denoising"]["effect"], layers, offsets)
        else:
            no_data(right, "no denoising heatmap")
    n_used = res.get("n_usable") if res is not None else None
    n = f"n = {n_used} pairs" if n_used is not None else "number of pairs unknown"
    caption = (
        f"Activation patching by layer ({n}): the normalised effect of patching each layer at "
        "the differing and the final token, denoising and noising, with 95% CI bands (left), "
        "and the denoising effect for every layer and offset from the final token (right)."
    )
    return finish("patching_effect_by_layer", fig, caption, output_dir, style)


def _patching_heatmap(
    fig: Figure, ax: Axes, effect: Any, layers: list[int], offsets: list[int]
) -> None:
    matrix = np.array([floats(row) for row in effect], dtype=float).reshape(
        len(layers), len(offsets)
    )
    finite = matrix[np.isfinite(matrix)]
    limit = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
    mesh = ax.pcolormesh(
        cell_edges(offsets),
        cell_edges(layers),
        np.ma.masked_invalid(matrix),
        cmap=cmap,
        vmin=-limit,
        vmax=limit,
    )
    mesh.set_gid("denoising_heatmap")
    fig.colorbar(mesh, ax=ax, label="denoising effect\n(share recovered)")
    ax.set_xlabel("token offset from final token")
    ax.set_ylabel(LAYER_LABEL)
    ax.set_title("denoising effect by layer and position")
    integer_ticks(ax, "x")
    integer_ticks(ax, "y")


# ---------------------------------------------------------------------------------------------
# steering_effect


def steering_effect(
    edits: Mapping[int, Mapping[str, Any]],
    style: Style,
    output_dir: str | Path | None = None,
    *,
    prompting: Mapping[int, Mapping[str, Any]] | None = None,
) -> Drawn:
    """Attribute-score shift by steering coefficient, one line per layer, one panel per attribute.

    ``edits`` maps each seed to its ``behavior_edit/seed{N}/results.json`` (shifts on the report
    prompts, with 95% CIs); ``prompting`` (``patching_vs_prompting/seed{N}/results.json``,
    optional) adds the prompting method's shift as a horizontal line with its CI band. The line
    joins the mean over seeds; the points are each seed's shift with its CI. A star marks the
    setting chosen on the selection prompts.
    """
    edits = expect_seeds(edits, "behavior_edit/seed{N}/results.json")
    prompts = (
        expect_seeds(prompting, "patching_vs_prompting/seed{N}/results.json") if prompting else {}
    )
    seeds = list(edits)
    attributes: list[str] = []
    for edit in edits.values():
        attributes += [a for a in edit["attributes"] if a not in attributes]
    layers = sorted(
        {
            int(g["layer"])
            for e in edits.values()
            for a in e["attributes"].values()
            for g in a["grid"]
        }
    )
    coefficients = sorted(
        {
            float(g["coefficient"])
            for e in edits.values()
            for a in e["attributes"].values()
            for g in a["grid"]
        }
    )
    span = (max(coefficients) - min(coefficients)) or 1.0
    layer_dx = dict(zip(layers, seed_offsets(len(layers), 0.06 * span), strict=True))
    seed_dx = dict(zip(seeds, seed_offsets(len(seeds), 0.02 * span), strict=True))
    colours = dict(zip(layers, cycle_colours(len(layers)), strict=True))
    with styled(style):
        fig = new_figure(style, 2.9)
        axes = axes_grid(fig, len(attributes), 3)
        for ax, attribute in zip(axes, attributes, strict=True):
            _steering_panel(ax, attribute, edits, prompts, layers, colours, layer_dx, seed_dx)
        figure_legend(fig, axes, 6)
    first = edits[seeds[0]]
    n = n_text([e.get("n_report") for e in edits.values()])
    caption = (
        f"Shift of the attribute score under steering by coefficient (relative to the layer's "
        "typical residual-stream norm), one line per layer "
        f"({seeds_text(seeds)}; {n} report prompts, {first.get('samples_per_prompt', '?')} "
        "samples each; 95% CIs)"
        + (", with the prompting method's shift and CI as a horizontal band." if prompts else ".")
    )
    return finish("steering_effect", fig, caption, output_dir, style)


def _steering_panel(
    ax: Axes,
    attribute: str,
    edits: Mapping[int, Mapping[str, Any]],
    prompts: Mapping[int, Mapping[str, Any]],
    layers: list[int],
    colours: Mapping[int, str],
    layer_dx: Mapping[int, float],
    seed_dx: Mapping[int, float],
) -> None:
    kind = None
    for layer in layers:
        shifts: dict[float, list[float]] = {}
        for seed, edit in edits.items():
            if attribute not in edit["attributes"]:
                continue
            info = edit["attributes"][attribute]
            kind = kind or (info.get("scorer") or {}).get("kind")
            grid = sorted(
                (g for g in info["grid"] if int(g["layer"]) == layer),
                key=lambda g: float(g["coefficient"]),
            )
            if not grid:
                continue
            x = np.array([float(g["coefficient"]) for g in grid]) + layer_dx[layer]
            y = np.array([num(g["report"]["shift"]) for g in grid])
            low, high = ci_bounds([g["report"]["shift_ci"] for g in grid])
            dx = seed_dx[seed]
            ci_lines(
                ax,
                x + dx,
                low,
                high,
                f"ci:{attribute}:L{layer}:seed{seed}",
                colors=colours[layer],
                linewidth=0.9,
            )
            ax.plot(
                x + dx,
                y,
                "o",
                color=colours[layer],
                markersize=3,
                gid=f"points:{attribute}:L{layer}:seed{seed}",
            )
            for xi, yi in zip(x, y, strict=True):
                shifts.setdefault(float(xi), []).append(yi)
        if shifts:
            xs = sorted(shifts)
            ax.plot(
                xs,
                [float(np.nanmean(shifts[v])) for v in xs],
                color=colours[layer],
                linewidth=1.2,
                label=f"layer {layer}",
                gid=f"line:{attribute}:L{layer}",
            )
    for seed, edit in edits.items():
        best = edit["attributes"].get(attribute, {}).get("best")
        if best is not None:  # None: no setting kept perplexity within the budget
            ax.plot(
                float(best["coefficient"]) + layer_dx.get(int(best["layer"]), 0.0),
                num(best["report"]["shift"]),
                "*",
                color="black",
                markersize=8,
                gid=f"best:{attribute}:seed{seed}",
                label="chosen setting" if seed == next(iter(edits)) else None,
            )
    for k, (seed, result) in enumerate(prompts.items()):
        if "methods" not in result["attributes"].get(attribute, {}):
            continue  # not compared: behavior_edit chose no setting within the budget
        method = result["attributes"][attribute]["methods"]["prompting"]
        shift = num(method["shift"])
        low, high = (num(v) for v in (method.get("shift_ci") or [None, None]))
        if math.isfinite(low) and math.isfinite(high):
            band = ax.axhspan(low, high, color="0.5", alpha=0.15, linewidth=0)
            band.set_gid(f"prompting_ci:{attribute}:seed{seed}")
        ax.axhline(
            shift,
            color="0.3",
            linestyle="--",
            linewidth=1.0,
            gid=f"prompting:{attribute}:seed{seed}",
            label="prompting (95% CI)" if k == 0 else None,
        )
    ax.axhline(0.0, color="0.6", linewidth=0.7)
    ax.set_title(attribute)
    ax.set_xlabel("steering coefficient (\u00d7 typical residual norm)")
    unit = SCORER_UNITS.get(kind or "", "score units")
    ax.set_ylabel(f"{attribute} score shift\n({unit})")


def steering_inputs(results_dir: Path, folder: Path, style: Style) -> Inputs | None:
    """The inputs of :func:`steering_effect`: every seed's results.json, and the same seeds'
    results.json of the prompting comparison where it ran."""
    edits = seed_folders(folder, "results.json")
    if not edits:
        return None
    prompting = {
        s: p
        for s, p in seed_folders(experiment_dir(results_dir, PROMPTING), "results.json").items()
        if s in edits
    }
    return Inputs(
        lambda: steering_effect(
            {s: load_json(p / "results.json") for s, p in edits.items()},
            style,
            prompting={s: load_json(p / "results.json") for s, p in prompting.items()},
        ),
        [p / "results.json" for p in (*edits.values(), *prompting.values())],
    )
