"""Every figure from a results folder, and the manifest ``figures.json``.

:func:`draw_all` draws, in the plan's order (:data:`FIGURES`), every figure whose inputs exist
under a results folder, so that figures exist only for the branches that ran. Which experiment
feeds which figure is the plan's (``plan.Experiment.figure``); :data:`INPUTS` says how each
figure finds its files in that experiment's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actspace import plan
from actspace.analysis.figures.cross_model import cross_model_heatmap, transfer_inputs
from actspace.analysis.figures.error_prediction import error_prediction_roc, risk_coverage
from actspace.analysis.figures.inputs import (
    Collector,
    InputError,
    Inputs,
    every_seed,
    experiment_dir,
    one_folder,
)
from actspace.analysis.figures.patching import patching_effect_by_layer, steering_inputs
from actspace.analysis.figures.premortems import premortem_inputs
from actspace.analysis.figures.style import SAVE_FORMATS, Drawn, Style, save_figure
from actspace.core.io import atomic_write_json

#: The figures, in the order :func:`draw_all` draws them and the manifest lists them.
FIGURES = plan.FIGURES
MANIFEST = "figures.json"

#: How each of the plan's figures finds its inputs in the folder of the experiment that feeds it.
INPUTS: dict[str, Collector] = {
    "premortem_verdicts": premortem_inputs,
    "cross_model_heatmap": one_folder(cross_model_heatmap),
    "transfer_gain": transfer_inputs,
    "error_prediction_roc": every_seed(error_prediction_roc),
    "risk_coverage": every_seed(risk_coverage),
    "patching_effect_by_layer": one_folder(patching_effect_by_layer),
    "steering_effect": steering_inputs,
}


def source_folder(results_dir: Path, figure: str) -> Path:
    """The folder a figure reads: that of the experiment whose ``figure`` it is in the plan, or
    the results folder itself for a figure no experiment draws (the pre-mortems')."""
    for experiment in plan.EXPERIMENTS:
        if experiment.figure == figure:
            return experiment_dir(results_dir, experiment.name)
    return results_dir


def _collect(results_dir: Path, style: Style) -> dict[str, Inputs]:
    """Every figure whose required inputs exist, with a call that draws it."""
    missing = [name for name in FIGURES if name not in INPUTS]
    if missing:
        raise KeyError(f"no inputs function for the plan's figure(s) {', '.join(missing)}")
    found: dict[str, Inputs] = {}
    for name in FIGURES:
        inputs = INPUTS[name](results_dir, source_folder(results_dir, name), style)
        if inputs is not None:
            found[name] = inputs
    return found


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


def _build(name: str, inputs: Inputs) -> Drawn:
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
    """Remove the files of known figures that are not in ``keep``."""
    for name in FIGURES:
        for fmt in SAVE_FORMATS:
            path = output_dir / f"{name}.{fmt}"
            if path.is_file() and path not in keep:
                path.unlink()
