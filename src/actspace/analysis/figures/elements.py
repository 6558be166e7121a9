"""Small drawing pieces every figure shares: numbers from JSON, intervals, grids, legends.

Confidence intervals are drawn as given (bounds, never symmetric error bars), so an interval that
does not contain its point estimate is drawn faithfully. ``null`` in the JSON (NaN when the
experiment wrote it) leaves a gap and is never drawn as zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

LAYER_LABEL = "layer (0 = embeddings)"


def floats(values: Any) -> np.ndarray:
    """Numbers from JSON as floats; null becomes NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def ci_bounds(cis: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of a list of ``[low, high]`` pairs (null -> NaN)."""
    rows = [(np.nan, np.nan) if ci is None else tuple(ci) for ci in cis]
    arr = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    if arr.size == 0:
        return np.zeros(0), np.zeros(0)
    return arr[:, 0], arr[:, 1]


def num(value: Any) -> float:
    """A number from JSON as a float; null becomes NaN."""
    return math.nan if value is None else float(value)


def ci_lines(ax: Axes, x: Any, low: Any, high: Any, gid: str, **kwargs: Any) -> None:
    """Vertical confidence intervals from ``low`` to ``high`` at ``x`` (NaN bounds: none)."""
    x, low, high = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, low, high))
    keep = np.isfinite(low) & np.isfinite(high) & np.isfinite(x)
    if keep.any():
        lines = ax.vlines(x[keep], low[keep], high[keep], **{"linewidth": 1.0, **kwargs})
        lines.set_gid(gid)


def ci_band(ax: Axes, x: Any, low: Any, high: Any, colour: str, gid: str) -> None:
    """A shaded confidence band (gaps where a bound is NaN)."""
    x, low, high = (np.asarray(v, dtype=float) for v in (x, low, high))
    ok = np.isfinite(low) & np.isfinite(high)
    if ok.any():
        band = ax.fill_between(x, low, high, where=ok, color=colour, alpha=0.2, linewidth=0)
        band.set_gid(gid)


def grid_shape(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels: as few rows as ``max_cols`` allows, evenly filled."""
    rows = max(1, math.ceil(n / max(1, max_cols)))
    return rows, max(1, math.ceil(n / rows))


def axes_grid(fig: Figure | Any, n: int, max_cols: int, **kwargs: Any) -> list[Axes]:
    """``n`` axes in a grid (the unused cells hidden)."""
    rows, cols = grid_shape(n, max_cols)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, **kwargs)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return list(axes[:n])


def cycle_colours(n: int) -> list[str]:
    """The first ``n`` colours of the colour cycle (repeating when there are more)."""
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(n)]


def seed_offsets(k: int, width: float) -> np.ndarray:
    """Horizontal offsets that set ``k`` seeds' points side by side within ``width``."""
    if k == 1:
        return np.zeros(1)
    return np.linspace(-width / 2, width / 2, k)


def seeds_text(seeds: Sequence[int]) -> str:
    """``seed 0`` or ``3 seeds``, for captions."""
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"


def n_text(values: Sequence[Any]) -> str:
    """``n = 120`` or ``n = 118-122`` over seeds or stores."""
    ns = sorted({int(v) for v in values if v is not None})
    if not ns:
        return "n unknown"
    return f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"


def integer_ticks(ax: Axes, axis: str = "x", nbins: int = 6) -> None:
    """Ticks on whole numbers only (layers, offsets)."""
    locator = MaxNLocator(integer=True, nbins=nbins)
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(locator)


def figure_legend(fig: Figure, axes: Sequence[Axes], ncol: int, extra: Sequence = ()) -> None:
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


def no_data(ax: Axes, text: str) -> None:
    """A note in place of a panel's data, without ticks."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def cell_edges(centres: Sequence[int]) -> np.ndarray:
    """Cell edges around integer layer indices (contiguous or not)."""
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mids = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mids[0] - c[0])], mids, [c[-1] + (c[-1] - mids[-1])]])
