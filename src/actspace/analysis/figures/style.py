"""How figures look (:class:`Style`), and how a figure is made and written (:class:`Drawn`).

Figures are drawn on :class:`~matplotlib.figure.Figure` objects with the Agg canvas, never through
``pyplot``: nothing touches the global backend or keeps figures alive after they are dropped.
Sizes are fixed (no ``bbox_inches="tight"``), so a PNG is exactly ``width_in * dpi`` pixels wide.
The style's defaults are the schema's (``analysis.figures``), its only source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from actspace.core.io import atomic_path
from actspace.core.schema import load_schema

#: File formats a figure may be written in.
SAVE_FORMATS = ("png", "pdf", "svg")


def _schema_defaults() -> dict[str, Any]:
    """The defaults of the configuration's ``analysis.figures`` section."""
    section = load_schema()["properties"]["analysis"]["properties"]["figures"]["properties"]
    return {key: spec["default"] for key, spec in section.items()}


_DEFAULTS = _schema_defaults()


@dataclass(frozen=True)
class Style:
    """How figures look: resolution, font size, width (the paper's text width) and formats."""

    dpi: int = _DEFAULTS["dpi"]
    font_size: float = _DEFAULTS["font_size"]
    width_in: float = _DEFAULTS["width_in"]
    formats: tuple[str, ...] = ("png", "pdf")  #: not configured: the workflow draws PNG and PDF

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


def rc_params(style: Style) -> dict[str, Any]:
    """Matplotlib settings for ``style``: font sizes, resolution, no top or right spine."""
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


def small_font() -> float:
    """Two points below the style's font size (cell values, threshold notes)."""
    return max(float(matplotlib.rcParams["font.size"]) - 2, 1.0)


@contextmanager
def styled(style: Style) -> Iterator[None]:
    """Draw (or save) under ``style``'s settings, leaving the global ones as they were."""
    with matplotlib.rc_context(rc_params(style)):
        yield


def new_figure(style: Style, height_in: float) -> Figure:
    """A constrained-layout Figure ``style.width_in`` wide, on the Agg canvas."""
    fig = Figure(figsize=(style.width_in, height_in), dpi=style.dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, name: str, output_dir: str | Path, style: Style) -> dict[str, Path]:
    """Write ``fig`` as ``output_dir/name.<format>`` for each of the style's formats, atomically."""
    files: dict[str, Path] = {}
    with styled(style):
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


def finish(
    name: str, fig: Figure, caption: str, output_dir: str | Path | None, style: Style
) -> Drawn:
    """The drawn figure, written to ``output_dir`` when one is given."""
    drawn = Drawn(name, fig, caption)
    if output_dir is not None:
        drawn.files = save_figure(fig, name, output_dir, style)
    return drawn
