"""Phase 3 figures: one function per figure, drawn from the experiments' JSON outputs.

Each figure function takes already-loaded JSON data (plain dicts, exactly as the experiments wrote
them) and a :class:`Style`, builds a :class:`matplotlib.figure.Figure` and, when given an output
folder, writes ``<name>.png`` and ``<name>.pdf`` atomically. It returns a :class:`Drawn` holding
the figure itself, so that a test can read the plotted numbers back (every data artist carries a
``gid``). :func:`draw_all` draws every figure whose inputs exist under a results folder (so that
figures exist only for the branches that ran) and writes the manifest ``figures.json``.

The figures are the plan's (``actspace.plan.FIGURES``: the pre-mortems', then one per experiment
that has one), one module per branch:

- :mod:`.premortems`: ``premortem_verdicts`` (the gate's decision);
- :mod:`.cross_model` (2A): ``cross_model_heatmap``, ``transfer_gain``;
- :mod:`.error_prediction` (2B): ``error_prediction_roc``, ``risk_coverage``;
- :mod:`.patching` (2C): ``patching_effect_by_layer``, ``steering_effect``;

with :mod:`.style` (how figures look and are written), :mod:`.elements` (shared drawing pieces),
:mod:`.inputs` (JSON read and checked; the files each figure finds) and :mod:`.draw` (every figure
and the manifest). Adding a figure: set ``figure=`` on the experiment in the plan, write its
function in its branch's module, and add its inputs function to :data:`.draw.INPUTS`.
"""

from actspace.analysis.figures.cross_model import cross_model_heatmap, transfer_gain
from actspace.analysis.figures.draw import FIGURES, INPUTS, MANIFEST, draw_all
from actspace.analysis.figures.error_prediction import error_prediction_roc, risk_coverage
from actspace.analysis.figures.inputs import InputError, MissingKey, load_json, seed_folders
from actspace.analysis.figures.patching import patching_effect_by_layer, steering_effect
from actspace.analysis.figures.premortems import PREMORTEM_METRICS, premortem_verdicts
from actspace.analysis.figures.style import SAVE_FORMATS, Drawn, Style, new_figure, save_figure

__all__ = [
    "FIGURES",
    "INPUTS",
    "MANIFEST",
    "PREMORTEM_METRICS",
    "SAVE_FORMATS",
    "Drawn",
    "InputError",
    "MissingKey",
    "Style",
    "cross_model_heatmap",
    "draw_all",
    "error_prediction_roc",
    "load_json",
    "new_figure",
    "patching_effect_by_layer",
    "premortem_verdicts",
    "risk_coverage",
    "save_figure",
    "seed_folders",
    "steering_effect",
    "transfer_gain",
]
