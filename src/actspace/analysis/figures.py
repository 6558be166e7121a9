"""Phase 3 figures: one function per figure, drawn from the experiments' JSON outputs.

Each figure function takes already-loaded JSON data (plain dicts, exactly as the experiments wrote
them) and a :class:`Style`, builds a :class:`matplotlib.figure.Figure` and, when given an output
folder, writes ``<name>.png`` and ``<name>.pdf`` atomically. It returns a :class:`Drawn` holding
the figure itself, so that a test can read the plotted numbers back (every data artist carries a
``gid``). :func:`draw_all` draws every figure whose inputs exist under a results folder (so that
figures exist only for the branches that ran) and writes the manifest ``figures.json``.

Figures are drawn on :class:`~matplotlib.figure.Figure` objects with the Agg canvas, never through
``pyplot``: nothing touches the global backend or keeps figures alive after they are dropped.
Sizes are fixed (no ``bbox_inches="tight"``), so a PNG is exactly ``width_in * dpi`` pixels wide.

A missing key in an input raises :class:`MissingKey` (a ``ValueError``) naming the file and the key
path. Confidence intervals are drawn as given (bounds, never symmetric error bars), so an interval
that does not contain its point estimate is drawn faithfully. ``null`` in the JSON (NaN when the
experiment wrote it) leaves a gap and is never drawn as zero.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from actspace.core.io import atomic_path, atomic_write_json
from actspace.gate.decision import PREMORTEM_TITLES, PREMORTEMS

#: The figures, in the order :func:`draw_all` draws them and the manifest lists them.
FIGURES = (
    "premortem_verdicts",
    "cross_model_heatmap",
    "transfer_gain",
    "error_prediction_roc",
    "risk_coverage",
    "patching_effect_by_layer",
    "steering_effect",
)
#: File formats a figure may be written in.
SAVE_FORMATS = ("png", "pdf", "svg")
MANIFEST = "figures.json"

VERDICT_COLOURS = {"PASS": "#1b7837", "INCONCLUSIVE": "#b35806", "FAIL": "#b2182b"}
#: Pre-mortem metrics: axis label and the factor that puts the value in the label's unit.
PREMORTEM_METRICS = {
    "heldout_projection_correlation": ("Pearson r (held-out)", 1.0),
    "heldout_balanced_accuracy": ("balanced accuracy (%)", 100.0),
    "change_rate": ("answers changed (% of pairs)", 100.0),
}
SCORER_UNITS = {"lexicon": "share of words in lexicon", "classifier": "classifier P(label)"}
LAYER_LABEL = "layer (0 = embeddings)"


# ---------------------------------------------------------------------------------------------
# style, results and input checking


@dataclass(frozen=True)
class Style:
    """How figures look: resolution, font size, width (the paper's text width) and formats."""

    dpi: int = 200
    font_size: float = 9
    width_in: float = 6.75
    formats: tuple[str, ...] = ("png", "pdf")

    def __post_init__(self) -> None:
        formats = (self.formats,) if isinstance(self.formats, str) else tuple(self.formats)
        object.__setattr__(self, "formats", formats)
        if isinstance(self.dpi, bool) or not isinstance(self.dpi, int) or self.dpi < 10:
            raise ValueError(f"style dpi must be an integer of at least 10, got {self.dpi!r}")
        for key in ("font_size", "width_in"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"style {key} must be a positive number, got {value!r}")
        bad = [f for f in formats if f not in SAVE_FORMATS]
        if not formats or bad:
            raise ValueError(
                f"style formats must be a non-empty list of {', '.join(SAVE_FORMATS)}, "
                f"got {list(formats)}"
            )

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> Style:
        """The default style with ``overrides`` applied; an unknown key is a ValueError."""
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in overrides:
            if key not in allowed:
                raise ValueError(f"unknown style key {key!r}; allowed: {', '.join(allowed)}")
        return cls(**overrides)


@dataclass
class Drawn:
    """A drawn figure: its name, the Figure, a one-sentence caption and the files written."""

    name: str
    figure: Figure
    caption: str
    files: dict[str, Path] = field(default_factory=dict)


class InputError(ValueError):
    """An input file of a figure is not what the experiment writes (names the file)."""


class MissingKey(InputError):
    """An input JSON file lacks a key a figure needs."""


class JsonDict(dict):
    """A dict from a JSON file: a missing key raises :class:`MissingKey` naming file and path."""

    def __init__(self, data: Mapping[str, Any], source: str, path: str = "") -> None:
        super().__init__()
        self.source, self.path = source, path
        for key, value in data.items():
            self[key] = tracked(value, source, f"{path}.{key}" if path else str(key))

    def __missing__(self, key: Any) -> Any:
        where = f"{self.path}.{key}" if self.path else str(key)
        raise MissingKey(f"{self.source}: missing key '{where}'")


def tracked(data: Any, source: str, path: str = "") -> Any:
    """``data`` with every dict inside it a :class:`JsonDict` labelled with ``source``."""
    if isinstance(data, JsonDict):
        return data
    if isinstance(data, Mapping):
        return JsonDict(data, source, path)
    if isinstance(data, list):
        return [tracked(item, source, f"{path}[{i}]") for i, item in enumerate(data)]
    return data


def load_json(path: str | Path, label: str | None = None) -> Any:
    """Read a JSON file whose dicts name ``label`` (default: the path) in missing-key errors."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg})") from None
    return tracked(data, label or str(path))


def _mapping(data: Any, label: str) -> JsonDict:
    """``data`` as a tracked dict, or a ValueError saying it is not a JSON object."""
    if not isinstance(data, Mapping):
        raise InputError(f"{label}: expected a JSON object, got {type(data).__name__}")
    return tracked(data, label)


def _seeded(runs: Mapping[int, Any], label: str) -> dict[int, JsonDict]:
    """Per-seed inputs, tracked, in seed order; at least one."""
    if not runs:
        raise InputError(f"{label}: no seed to draw")
    return {
        int(seed): _mapping(runs[seed], label.replace("{N}", str(seed))) for seed in sorted(runs)
    }


# ---------------------------------------------------------------------------------------------
# small drawing helpers


def _rc(style: Style) -> dict[str, Any]:
    size = float(style.font_size)
    return {
        "font.size": size,
        "axes.titlesize": size,
        "axes.labelsize": size,
        "xtick.labelsize": max(size - 1, 1.0),
        "ytick.labelsize": max(size - 1, 1.0),
        "legend.fontsize": max(size - 1, 1.0),
        "legend.frameon": False,
        "figure.dpi": style.dpi,
        "savefig.dpi": style.dpi,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "pdf.fonttype": 42,  # embed TrueType: text stays text in the paper's PDF
        "svg.fonttype": "none",
    }


def _small_font() -> float:
    """Two points below the style's font size (cell values, threshold notes)."""
    return max(float(matplotlib.rcParams["font.size"]) - 2, 1.0)


@contextmanager
def _style(style: Style) -> Iterator[None]:
    with matplotlib.rc_context(_rc(style)):
        yield


def new_figure(style: Style, height_in: float) -> Figure:
    """A constrained-layout Figure ``style.width_in`` wide, on the Agg canvas."""
    fig = Figure(figsize=(style.width_in, height_in), dpi=style.dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, name: str, output_dir: str | Path, style: Style) -> dict[str, Path]:
    """Write ``fig`` as ``output_dir/name.<format>`` for each of the style's formats, atomically."""
    files: dict[str, Path] = {}
    with _style(style):
        for fmt in style.formats:
            target = Path(output_dir) / f"{name}.{fmt}"
            with atomic_path(target) as tmp:
                fig.savefig(tmp, format=fmt, dpi=style.dpi, metadata=_metadata(fmt))
            files[fmt] = target
    return files


def _metadata(fmt: str) -> dict[str, Any] | None:
    """No creation date in PDFs and SVGs, so the same data give the same bytes."""
    if fmt == "pdf":
        return {"CreationDate": None}
    if fmt == "svg":
        return {"Date": None}
    return None


def _finish(
    name: str, fig: Figure, caption: str, output_dir: str | Path | None, style: Style
) -> Drawn:
    drawn = Drawn(name, fig, caption)
    if output_dir is not None:
        drawn.files = save_figure(fig, name, output_dir, style)
    return drawn


def _floats(values: Any) -> np.ndarray:
    """Numbers from JSON as floats; null becomes NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _bounds(cis: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of a list of ``[low, high]`` pairs (null -> NaN)."""
    rows = [(np.nan, np.nan) if ci is None else tuple(ci) for ci in cis]
    arr = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    if arr.size == 0:
        return np.zeros(0), np.zeros(0)
    return arr[:, 0], arr[:, 1]


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _interval(ax: Axes, x: Any, low: Any, high: Any, gid: str, **kwargs: Any) -> None:
    """Vertical confidence intervals from ``low`` to ``high`` at ``x`` (NaN bounds: none)."""
    x, low, high = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, low, high))
    keep = np.isfinite(low) & np.isfinite(high) & np.isfinite(x)
    if keep.any():
        lines = ax.vlines(x[keep], low[keep], high[keep], **{"linewidth": 1.0, **kwargs})
        lines.set_gid(gid)


def _band(ax: Axes, x: Any, low: Any, high: Any, colour: str, gid: str) -> None:
    """A shaded confidence band (gaps where a bound is NaN)."""
    x, low, high = (np.asarray(v, dtype=float) for v in (x, low, high))
    ok = np.isfinite(low) & np.isfinite(high)
    if ok.any():
        band = ax.fill_between(x, low, high, where=ok, color=colour, alpha=0.2, linewidth=0)
        band.set_gid(gid)


def _grid_shape(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels: as few rows as ``max_cols`` allows, evenly filled."""
    rows = max(1, math.ceil(n / max(1, max_cols)))
    return rows, max(1, math.ceil(n / rows))


def _axes_grid(fig: Figure | Any, n: int, max_cols: int, **kwargs: Any) -> list[Axes]:
    """``n`` axes in a grid (the unused cells hidden)."""
    rows, cols = _grid_shape(n, max_cols)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, **kwargs)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return list(axes[:n])


def _colours(n: int) -> list[str]:
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(n)]


def _seed_offsets(k: int, width: float) -> np.ndarray:
    """Horizontal offsets that set ``k`` seeds' points side by side within ``width``."""
    if k == 1:
        return np.zeros(1)
    return np.linspace(-width / 2, width / 2, k)


def _seeds_text(seeds: Sequence[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"


def _n_text(values: Sequence[Any]) -> str:
    """``n = 120`` or ``n = 118-122`` over seeds or stores."""
    ns = sorted({int(v) for v in values if v is not None})
    if not ns:
        return "n unknown"
    return f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"


def _integer_ticks(ax: Axes, axis: str = "x", nbins: int = 6) -> None:
    locator = MaxNLocator(integer=True, nbins=nbins)
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(locator)


def _figure_legend(fig: Figure, axes: Sequence[Axes], ncol: int, extra: Sequence = ()) -> None:
    """One legend below all panels: the labelled artists of ``axes`` (each label once)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    for handle, label in extra:
        seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()),
            list(seen),
            loc="outside lower center",
            ncol=min(ncol, len(seen)),
        )


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------------------------
# premortem_verdicts


def premortem_verdicts(
    decision: Mapping[str, Any], style: Style, output_dir: str | Path | None = None
) -> Drawn:
    """The three pre-mortem values with their CIs against their thresholds, and the verdicts.

    ``decision`` is ``results/gate/decision.json``. One panel per pre-mortem (their units
    differ): the value with its 95% CI, the threshold as a dashed line, the verdict the gate used;
    a forced verdict is drawn with a hollow marker and says what was measured.
    """
    decision = _mapping(decision, "gate/decision.json")
    with _style(style):
        fig = new_figure(style, 2.9)
        axes = fig.subplots(1, len(PREMORTEMS))
        ns = []
        for ax, pm in zip(axes, PREMORTEMS, strict=True):
            ns.append(_premortem_panel(ax, pm, decision["premortems"][pm]))
    forced = [pm.upper() for pm in PREMORTEMS if decision["premortems"][pm]["forced"]]
    counts = ", ".join(f"{pm.upper()} n = {n if n is not None else '?'}" for pm, n in ns)
    caption = (
        f"The three pre-mortem metrics ({counts}) with 95% confidence intervals against their "
        "thresholds (dashed), and the verdict each gave the gate"
        + (f"; forced verdicts ({', '.join(forced)}) are hollow." if forced else ".")
    )
    return _finish("premortem_verdicts", fig, caption, output_dir, style)


def _premortem_panel(ax: Axes, pm: str, info: Mapping[str, Any]) -> tuple[str, Any]:
    """One pre-mortem's panel; returns ``(pm, n)`` for the caption."""
    verdict, forced = info["verdict"], bool(info["forced"])
    colour = VERDICT_COLOURS.get(verdict, "black")
    label, scale = PREMORTEM_METRICS.get(info.get("metric"), (str(info.get("metric", "value")), 1))
    value = _num(info.get("value")) * scale
    low, high = (_num(v) * scale for v in (info.get("ci") or [None, None]))
    threshold = _num(info.get("threshold")) * scale
    if math.isfinite(value):
        _interval(ax, 0.0, low, high, gid="ci", colors=colour, linewidth=1.5)
        ax.plot(
            [0.0],
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
            fontsize=_small_font(),
        )
    finite = [v for v in (value, low, high, threshold) if math.isfinite(v)]
    if finite:
        pad = max(0.15 * (max(finite) - min(finite)), 0.05 * max(abs(v) for v in finite), 1e-3)
        ax.set_ylim(min(finite) - pad, max(finite) + pad)
    ax.set_xlim(-1.0, 1.0)
    ax.set_xticks([])
    ax.spines["bottom"].set_visible(False)
    ax.set_ylabel(label)
    # "PM1 cross-model similarity" -> "PM1\ncross-model\nsimilarity": narrow panels stay legible
    ax.set_title(PREMORTEM_TITLES.get(pm, pm.upper()).replace(" ", "\n"))
    text = verdict
    if forced:
        measured = info.get("measured_verdict") or "not measured"
        text += f" (forced)\nmeasured: {measured}"
    n = info.get("n")
    if n is not None:
        text += f"\nn = {n}"
    ax.set_xlabel(text, color=colour, fontweight="bold")
    return pm, n


# ---------------------------------------------------------------------------------------------
# cross_model_heatmap


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
    data = _mapping(figure_data, "cross_model_extended/figure_data.json")
    res = None if results is None else _mapping(results, "cross_model_extended/results.json")
    models = list(data["models"])
    matrices = data["model_pair_heatmap"]
    at_depth = np.array(
        [_floats(row) for row in matrices["at_layer_depth"][variant][measure]], dtype=float
    )
    best_block = matrices.get("best") or {}
    best = (
        np.array([_floats(row) for row in best_block[variant][measure]], dtype=float)
        if variant in best_block
        else None
    )
    grids = list(data["layer_grids"])
    values = [np.array([_floats(r) for r in g[variant][measure]], dtype=float) for g in grids]
    every = np.concatenate([at_depth.ravel(), *(v.ravel() for v in values)])
    finite = every[np.isfinite(every)]
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    vmax = max(1e-9, float(finite.max())) if finite.size else 1.0
    vmax = max(vmax, 1.0) if measure == "correlation" else vmax
    cbar_label = {"correlation": "held-out Pearson r", "cka": "debiased CKA"}.get(
        measure, measure.replace("_", " ")
    )
    rows, _ = _grid_shape(len(grids), 4)
    with _style(style):
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
        axes = _axes_grid(bottom, len(grids), 4)
        for ax, grid, matrix in zip(axes, grids, values, strict=True):
            image = _layer_grid(ax, grid, matrix, vmin, vmax)
        bottom.supxlabel(f"target {LAYER_LABEL}", fontsize=style.font_size)
        bottom.supylabel("source layer\n(0 = embeddings)", fontsize=style.font_size)
        if axes:
            bottom.colorbar(image, ax=axes, label=cbar_label, shrink=0.9)
    n = _n_text([res.get("n_test")]) if res is not None else "n unknown"
    caption = (
        f"{cbar_label[0].upper()}{cbar_label[1:]} after a ridge projection ({variant} "
        f"features; {n} held-out items) between every ordered pair of {len(models)} models, at "
        f"one depth and at the best layer pair (top), and for every layer pair of each of the "
        f"{len(grids)} ordered pairs (bottom; dots: depth-aligned layers)."
    )
    return _finish("cross_model_heatmap", fig, caption, output_dir, style)


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
                    fontsize=_small_font(),
                    color="black" if value > mid else "white",
                )
    return image


def _layer_grid(ax: Axes, grid: Mapping[str, Any], matrix: np.ndarray, vmin: float, vmax: float):
    src, tgt = list(grid["source_layers"]), list(grid["target_layers"])
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.9")
    image = ax.pcolormesh(
        _edges(tgt), _edges(src), np.ma.masked_invalid(matrix), cmap=cmap, vmin=vmin, vmax=vmax
    )
    image.set_gid(f"grid:{grid['source']}->{grid['target']}")
    aligned = np.array(grid.get("depth_aligned") or [], dtype=float).reshape(-1, 2)
    if aligned.size:
        ax.plot(aligned[:, 1], aligned[:, 0], "w.", markersize=3, gid="depth_aligned")
    ax.set_title(f"{grid['source']} \u2192 {grid['target']}")
    _integer_ticks(ax, "x", 4)
    _integer_ticks(ax, "y", 4)
    ax.spines[["top", "right"]].set_visible(True)
    return image


def _edges(centres: Sequence[int]) -> np.ndarray:
    """Cell edges around integer layer indices (contiguous or not)."""
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mids = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mids[0] - c[0])], mids, [c[-1] + (c[-1] - mids[-1])]])


# ---------------------------------------------------------------------------------------------
# transfer_gain

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
    runs = _seeded(runs, "activation_transfer/seed{N}/results.json")
    seeds = list(runs)
    first = runs[seeds[0]]
    offsets = _seed_offsets(len(seeds), 0.4)
    colours = _colours(len(seeds))
    with _style(style):
        fig = new_figure(style, 2.9)
        left, right = fig.subplots(1, 2, width_ratios=[5, 3])
        x = np.arange(len(TRANSFER_CONDITIONS))
        acc = np.array(
            [
                [100 * _num(r["accuracy"][k]["value"]) for k, _ in TRANSFER_CONDITIONS]
                for r in runs.values()
            ]
        )
        bars = left.bar(x, np.nanmean(acc, axis=0), width=0.7, color="0.85", edgecolor="0.5")
        for bar, (key, _) in zip(bars, TRANSFER_CONDITIONS, strict=True):
            bar.set_gid(f"bar:{key}")
        for (seed, run), dx, colour in zip(runs.items(), offsets, colours, strict=True):
            cis = [run["accuracy"][k]["ci"] for k, _ in TRANSFER_CONDITIONS]
            low, high = _bounds(cis)
            _interval(left, x + dx, 100 * low, 100 * high, f"acc_ci:seed{seed}", colors=colour)
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
            low, high = _bounds([g["ci"] for g in gains])
            _interval(right, gx + dx, low, high, f"gain_ci:seed{seed}", colors=colour)
            right.plot(
                gx + dx,
                [_num(g["gain_points"]) for g in gains],
                "o",
                color=colour,
                markersize=4,
                gid=f"gain:seed{seed}",
            )
        right.axhline(0.0, color="0.5", linewidth=0.8)
        threshold = _num(first.get("threshold"))
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
    n = _n_text([r.get("n_test", r.get("n")) for r in runs.values()])
    caption = (
        f"Activation transfer from {first['source']} to {first['target']} ({_seeds_text(seeds)}, "
        f"{n} held-out items per seed): accuracy of the source, the target, the target with the "
        "transferred activation and two controls (another item's mapped activation; the target's "
        "own through a target-to-target map) (bars: mean over seeds; points: each seed with its "
        "95% CI), and each seed's gain over the target in points with its 95% CI."
    )
    return _finish("transfer_gain", fig, caption, output_dir, style)


# ---------------------------------------------------------------------------------------------
# error_prediction_roc


def _seeded_stores(
    figure_data: Mapping[int, Mapping[str, Any]],
    results: Mapping[int, Mapping[str, Any]] | None,
    experiment: str,
) -> tuple[dict, dict, list[tuple[str, str]]]:
    """A per-store experiment's figure data and results by seed (checked), and its
    ``(model, task)`` stores in first-seen order."""
    data = _seeded(figure_data, f"{experiment}/seed{{N}}/figure_data.json")
    res = (
        _seeded(
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
    colours = dict(zip(keys, _colours(len(keys)), strict=True))
    has_roc = any("roc" in c for fd in data.values() for c in fd["curves"])
    panels = (["roc"] if has_roc else []) + ["auroc", "balanced_accuracy"]
    n_tests: list[Any] = []
    with _style(style):
        fig = new_figure(style, 3.1 + 0.15 * math.ceil(len(keys) / 4))
        axes = dict(zip(panels, np.atleast_1d(fig.subplots(1, len(panels))), strict=True))
        if not keys:
            for ax in axes.values():
                _no_data(ax, "no store could be analysed")
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
        f"({_seeds_text(seeds)}; {_n_text(n_tests)} held-out items): "
        + ("ROC at the selected layer, " if has_roc else "")
        + "AUROC and balanced accuracy by layer with 95% CI bands (dashed: output confidence; "
        "dotted: chance; marker: selected layer)."
    )
    return _finish("error_prediction_roc", fig, caption, output_dir, style)


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
    layers = _floats(curve["layer"])
    selected = curve.get("selected_layer")
    at = list(curve["layer"]).index(selected) if selected in list(curve["layer"]) else None
    auroc = _floats(curve["auroc"])
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
        low, high = _bounds([row.get("auroc_ci") for row in record["layers"]])
        if low.size == layers.size:
            _band(ax, layers, low, high, colour, f"auroc_ci:{tag}")
    ax.axhline(
        _num(curve.get("confidence_auroc")),
        color=colour,
        linestyle="--",
        linewidth=1.0,
        gid=f"confidence_auroc:{tag}",
    )
    ba = 100 * _floats(curve["balanced_accuracy"])
    low, high = _bounds(curve["ci"])
    ax = axes["balanced_accuracy"]
    ax.plot(layers, ba, color=colour, linewidth=1.2, gid=f"balanced_accuracy:{tag}")
    _band(ax, layers, 100 * low, 100 * high, colour, f"balanced_accuracy_ci:{tag}")
    ax.axhline(
        100 * _num(curve.get("confidence_balanced_accuracy")),
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
            _floats(roc["probe"]["fpr"]),
            _floats(roc["probe"]["tpr"]),
            color=colour,
            linewidth=1.2,
            gid=f"roc_probe:{tag}",
            label=f"{label}: probe {probe_auc:.2f}" if first else None,
        )
        if "confidence" in roc:
            ax.plot(
                _floats(roc["confidence"]["fpr"]),
                _floats(roc["confidence"]["tpr"]),
                color=colour,
                linestyle="--",
                linewidth=1.0,
                gid=f"roc_confidence:{tag}",
                label=f"confidence {_num(curve.get('confidence_auroc')):.2f}" if first else None,
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
            ax.legend(loc="lower right", fontsize=_small_font())
            continue
        chance = 0.5 if name == "auroc" else 50.0
        ax.axhline(chance, color="0.5", linestyle=":", linewidth=1.0, gid="chance")
        ax.set_xlabel(LAYER_LABEL)
        _integer_ticks(ax, "x")
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
    _figure_legend(axes["auroc"].figure, [axes["auroc"]], 4, extra)


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
    colours = dict(zip([k for k, _, _ in RISK_LINES], _colours(len(RISK_LINES)), strict=True))
    rows, _ = _grid_shape(max(len(keys), 1), 3)
    n_tests: list[Any] = []
    thresholds: set[float] = set()
    with _style(style):
        fig = new_figure(style, 0.6 + 2.3 * rows)
        axes = _axes_grid(fig, max(len(keys), 1), 3)
        if not keys:
            _no_data(axes[0], "no store could be analysed")
        panels = dict(zip(keys, axes, strict=False))
        for seed, fd in data.items():
            records = _store_records(res.get(seed))
            threshold = _num(res[seed]["threshold"]) if seed in res else math.nan
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
        _figure_legend(fig, axes, 5)
    tau = ", ".join(f"{t:g}" for t in sorted(thresholds)) or "unknown"
    caption = (
        f"Risk-coverage curves of abstention on {len(keys)} model/task store(s) "
        f"({_seeds_text(seeds)}; {_n_text(n_tests)} held-out items): the probe's P(correct), the "
        f"output confidence, a random abstainer and the oracle, with the probe's operating point "
        f"at threshold {tau} marked."
    )
    return _finish("risk_coverage", fig, caption, output_dir, style)


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
    coverage = 100 * _floats(curve["coverage"])
    for key, label, style in RISK_LINES:
        if key not in curve:
            continue
        ax.plot(
            coverage,
            100 * _floats(curve[key]),
            color=colours[key],
            linestyle=style,
            linewidth=1.2 if key == "risk_probe" else 1.0,
            gid=f"{key}:{tag}",
            label=label if first else None,
        )
    if record is None:
        return
    probe = record["probe"]
    eff = _num(probe.get("effective_accuracy"))
    if math.isfinite(eff):
        ax.plot(
            100 * _num(probe["coverage"]),
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


# ---------------------------------------------------------------------------------------------
# patching_effect_by_layer

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
    data = _mapping(figure_data, "patching_layers/figure_data.json")
    res = None if results is None else _mapping(results, "patching_layers/results.json")
    layers = [int(k) for k in data["layers"]]
    offsets = [int(o) for o in data["offsets"]]
    curves, heatmaps = data["curves"], data["heatmaps"]
    with _style(style):
        fig = new_figure(style, 3.2)
        left, right = fig.subplots(1, 2, width_ratios=[1, 1])
        if not curves:
            _no_data(left, "no usable pair: nothing to plot")
        for (direction, role), (colour, line, label) in PATCH_STYLES.items():
            if direction not in curves or role not in curves[direction]:
                continue
            c = curves[direction][role]
            x = _floats(c["layer"])
            left.plot(
                x,
                _floats(c["effect"]),
                color=colour,
                linestyle=line,
                linewidth=1.3,
                label=label,
                gid=f"{direction}:{role}",
            )
            low, high = _bounds(c["effect_ci"])
            _band(left, x, low, high, colour, f"{direction}:{role}:ci")
        if curves:
            left.axhline(0.0, color="0.6", linewidth=0.7)
            left.axhline(1.0, color="0.6", linewidth=0.7)
            left.set_xlabel(LAYER_LABEL)
            left.set_ylabel("patching effect\n(share of logit difference)")
            left.set_title("effect by layer, 95% CI")
            _integer_ticks(left, "x")
            _figure_legend(fig, [left], 2)
        if "denoising" in heatmaps:
            _patching_heatmap(fig, right, heatmaps["denoising"]["effect"], layers, offsets)
        else:
            _no_data(right, "no denoising heatmap")
    n_used = res.get("n_usable") if res is not None else None
    n = f"n = {n_used} pairs" if n_used is not None else "number of pairs unknown"
    caption = (
        f"Activation patching by layer ({n}): the normalised effect of patching each layer at "
        "the differing and the final token, denoising and noising, with 95% CI bands (left), "
        "and the denoising effect for every layer and offset from the final token (right)."
    )
    return _finish("patching_effect_by_layer", fig, caption, output_dir, style)


def _patching_heatmap(
    fig: Figure, ax: Axes, effect: Any, layers: list[int], offsets: list[int]
) -> None:
    matrix = np.array([_floats(row) for row in effect], dtype=float).reshape(
        len(layers), len(offsets)
    )
    finite = matrix[np.isfinite(matrix)]
    limit = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
    mesh = ax.pcolormesh(
        _edges(offsets),
        _edges(layers),
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
    _integer_ticks(ax, "x")
    _integer_ticks(ax, "y")


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
    edits = _seeded(edits, "behavior_edit/seed{N}/results.json")
    prompts = _seeded(prompting, "patching_vs_prompting/seed{N}/results.json") if prompting else {}
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
    layer_dx = dict(zip(layers, _seed_offsets(len(layers), 0.06 * span), strict=True))
    seed_dx = dict(zip(seeds, _seed_offsets(len(seeds), 0.02 * span), strict=True))
    colours = dict(zip(layers, _colours(len(layers)), strict=True))
    with _style(style):
        fig = new_figure(style, 2.9)
        axes = _axes_grid(fig, len(attributes), 3)
        for ax, attribute in zip(axes, attributes, strict=True):
            _steering_panel(ax, attribute, edits, prompts, layers, colours, layer_dx, seed_dx)
        _figure_legend(fig, axes, 6)
    first = edits[seeds[0]]
    n = _n_text([e.get("n_report") for e in edits.values()])
    caption = (
        f"Shift of the attribute score under steering by coefficient, one line per layer "
        f"({_seeds_text(seeds)}; {n} report prompts, {first.get('samples_per_prompt', '?')} "
        "samples each; 95% CIs)"
        + (", with the prompting method's shift and CI as a horizontal band." if prompts else ".")
    )
    return _finish("steering_effect", fig, caption, output_dir, style)


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
            y = np.array([_num(g["report"]["shift"]) for g in grid])
            low, high = _bounds([g["report"]["shift_ci"] for g in grid])
            dx = seed_dx[seed]
            _interval(
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
        if attribute in edit["attributes"]:
            best = edit["attributes"][attribute]["best"]
            ax.plot(
                float(best["coefficient"]) + layer_dx.get(int(best["layer"]), 0.0),
                _num(best["report"]["shift"]),
                "*",
                color="black",
                markersize=8,
                gid=f"best:{attribute}:seed{seed}",
                label="chosen setting" if seed == next(iter(edits)) else None,
            )
    for k, (seed, result) in enumerate(prompts.items()):
        if attribute not in result["attributes"]:
            continue
        method = result["attributes"][attribute]["methods"]["prompting"]
        shift = _num(method["shift"])
        low, high = (_num(v) for v in (method.get("shift_ci") or [None, None]))
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
    ax.set_xlabel("steering coefficient (\u00d7 vector)")
    unit = SCORER_UNITS.get(kind or "", "score units")
    ax.set_ylabel(f"{attribute} score shift\n({unit})")


# ---------------------------------------------------------------------------------------------
# every figure from a results folder


@dataclass
class _Inputs:
    """What one figure reads: the call that draws it and its input files."""

    draw: Callable[[], Drawn]
    sources: list[Path]


def seed_folders(folder: Path, *required: str) -> dict[int, Path]:
    """The ``seed{N}`` sub-folders of ``folder`` that hold every ``required`` file, by seed."""
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = re.fullmatch(r"seed(\d+)", path.name)
            if match and path.is_dir() and all((path / name).is_file() for name in required):
                found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def _collect(results_dir: Path, style: Style) -> dict[str, _Inputs]:
    """Every figure whose required inputs exist, with a call that draws it."""
    r = Path(results_dir)
    xp = r / "experiments"
    found: dict[str, _Inputs] = {}
    load = load_json
    decision = r / "gate" / "decision.json"
    if decision.is_file():
        found["premortem_verdicts"] = _Inputs(
            lambda: premortem_verdicts(load(decision), style), [decision]
        )
    single = _single_folder_inputs(xp / "cross_model_extended", cross_model_heatmap, style)
    if single:
        found["cross_model_heatmap"] = single
    at = seed_folders(xp / "activation_transfer", "results.json")
    if at:
        files = [p / "results.json" for p in at.values()]
        found["transfer_gain"] = _Inputs(
            lambda: transfer_gain({s: load(p / "results.json") for s, p in at.items()}, style),
            files,
        )
    for name, folder, function in (
        ("error_prediction_roc", "error_prediction_extended", error_prediction_roc),
        ("risk_coverage", "abstention", risk_coverage),
    ):
        seeds = seed_folders(xp / folder, "figure_data.json")
        if seeds:
            found[name] = _Inputs(
                _seeded_call(function, seeds, style),
                [
                    p / f
                    for p in seeds.values()
                    for f in ("figure_data.json", "results.json")
                    if (p / f).is_file()
                ],
            )
    single = _single_folder_inputs(xp / "patching_layers", patching_effect_by_layer, style)
    if single:
        found["patching_effect_by_layer"] = single
    be = seed_folders(xp / "behavior_edit", "results.json")
    if be:
        pvp = {
            s: p
            for s, p in seed_folders(xp / "patching_vs_prompting", "results.json").items()
            if s in be
        }
        found["steering_effect"] = _Inputs(
            lambda: steering_effect(
                {s: load(p / "results.json") for s, p in be.items()},
                style,
                prompting={s: load(p / "results.json") for s, p in pvp.items()},
            ),
            [p / "results.json" for p in (*be.values(), *pvp.values())],
        )
    return found


def _seeded_call(
    function: Callable[..., Drawn], seeds: Mapping[int, Path], style: Style
) -> Callable[[], Drawn]:
    """Draw ``function`` from every seed's figure_data.json (and results.json, where present)."""

    def call() -> Drawn:
        data = {s: load_json(p / "figure_data.json") for s, p in seeds.items()}
        results = {
            s: load_json(p / "results.json")
            for s, p in seeds.items()
            if (p / "results.json").is_file()
        }
        return function(data, style, results=results)

    return call


def _single_folder_inputs(folder: Path, function: Callable[..., Drawn], style: Style) -> Any:
    """The inputs of a figure drawn from one unseeded experiment folder (figure_data.json and,
    when present, results.json), or None when the experiment did not run."""
    data = folder / "figure_data.json"
    if not data.is_file() or load_json(data).get("curves") == {}:
        return None  # did not run, or ran and had nothing to draw (its summary says why)
    results = _optional(folder / "results.json")
    return _Inputs(
        lambda: function(load_json(data), style, results=results and load_json(results)),
        [data, *([results] if results else [])],
    )


def draw_all(
    results_dir: str | Path, output_dir: str | Path, style: Style | None = None
) -> list[dict[str, Any]]:
    """Draw every figure whose inputs exist under ``results_dir``; write ``figures.json``.

    Every figure is built before any file is written, so a malformed input (a ValueError naming
    the file and the key) leaves the output folder as it was. Files of known figures that were
    not drawn this time (a branch that no longer runs, a format no longer asked for) are
    removed, so the folder holds exactly what the manifest lists. Returns the manifest: per
    figure ``name``, one entry per format (``png``, ``pdf``; file names relative to
    ``output_dir``, None for a format not written), ``caption`` and ``sources`` (input files
    relative to ``results_dir``).
    """
    style = style or Style()
    results_dir, output_dir = Path(results_dir), Path(output_dir)
    drawn: list[tuple[Drawn, list[Path]]] = []
    for name, inputs in _collect(results_dir, style).items():
        drawn.append((_build(name, inputs), inputs.sources))
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = []
    for figure, sources in drawn:
        figure.files = save_figure(figure.figure, figure.name, output_dir, style)
        manifest.append(
            {
                "name": figure.name,
                **{fmt: None for fmt in ("png", "pdf")},
                **{fmt: path.name for fmt, path in figure.files.items()},
                "caption": figure.caption,
                "sources": [p.relative_to(results_dir).as_posix() for p in sources],
            }
        )
    _remove_stale(output_dir, {p for f, _ in drawn for p in f.files.values()})
    atomic_write_json(output_dir / MANIFEST, manifest)
    return manifest


def _build(name: str, inputs: _Inputs) -> Drawn:
    """Draw one figure; an error from malformed input becomes a ValueError naming its files."""
    try:
        return inputs.draw()
    except InputError:
        raise
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as error:
        files = ", ".join(str(p) for p in inputs.sources)
        raise ValueError(
            f"{files}: malformed input for figure {name} ({type(error).__name__}: {error})"
        ) from None


def _remove_stale(output_dir: Path, keep: set[Path]) -> None:
    for name in FIGURES:
        for fmt in SAVE_FORMATS:
            path = output_dir / f"{name}.{fmt}"
            if path.is_file() and path not in keep:
                path.unlink()
