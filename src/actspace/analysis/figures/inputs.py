"""What a figure reads: JSON files checked as they are read, and the inputs found on disk.

A missing key in an input raises :class:`MissingKey` (a ``ValueError``) naming the file and the key
path. Each figure has an inputs function (:data:`Collector`): given the results folder, the folder
of the experiment the plan says it draws (``plan.Experiment.figure``) and a :class:`Style`, it
returns the call that draws the figure and the files it reads (:class:`Inputs`), or None when the
experiment did not run, so that figures exist only for the branches that ran.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actspace import plan
from actspace.analysis.figures.style import Drawn, Style


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


def expect_object(data: Any, label: str) -> JsonDict:
    """``data`` (a figure's input) as a tracked dict, or an InputError saying it is not a JSON
    object."""
    if not isinstance(data, Mapping):
        raise InputError(f"{label}: expected a JSON object, got {type(data).__name__}")
    return tracked(data, label)


def expect_seeds(runs: Mapping[int, Any], label: str) -> dict[int, JsonDict]:
    """Per-seed inputs (``label`` with ``{N}`` for the seed), tracked, in seed order; at least
    one."""
    if not runs:
        raise InputError(f"{label}: no seed to draw")
    return {
        int(seed): expect_object(runs[seed], label.replace("{N}", str(seed)))
        for seed in sorted(runs)
    }


# ---------------------------------------------------------------------------------------------
# the inputs found under a results folder


@dataclass
class Inputs:
    """What one figure reads: the call that draws it and its input files."""

    draw: Callable[[], Drawn]
    sources: list[Path]


#: A figure's inputs function: (results folder, the folder it reads, style) -> its inputs or None.
Collector = Callable[[Path, Path, Style], Inputs | None]


def experiment_dir(results_dir: str | Path, name: str) -> Path:
    """An experiment's folder under ``results_dir`` (for a seeded one, the folder of its seeds)."""
    experiment = plan.experiment(name)
    folder = Path(experiment.folder("0")).parent if experiment.seeded else Path(experiment.folder())
    return Path(results_dir) / folder.relative_to(plan.RESULTS)


def seed_folders(folder: Path, *required: str) -> dict[int, Path]:
    """The ``seed{N}`` sub-folders of ``folder`` that hold every ``required`` file, by seed."""
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = re.fullmatch(r"seed(\d+)", path.name)
            if match and path.is_dir() and all((path / name).is_file() for name in required):
                found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def one_folder(function: Callable[..., Drawn]) -> Collector:
    """The inputs function of a figure drawn from one unseeded experiment folder:
    ``function(figure_data, style, results=...)`` on its figure_data.json and, when present, its
    results.json; None when the experiment did not run or had nothing to draw."""

    def collect(results_dir: Path, folder: Path, style: Style) -> Inputs | None:
        data = folder / "figure_data.json"
        if not data.is_file() or load_json(data).get("curves") == {}:
            return None  # did not run, or ran and had nothing to draw (its summary says why)
        results = _optional_file(folder / "results.json")
        return Inputs(
            lambda: function(load_json(data), style, results=results and load_json(results)),
            [data, *([results] if results else [])],
        )

    return collect


def every_seed(function: Callable[..., Drawn]) -> Collector:
    """The inputs function of a figure drawn from every seed of a seeded experiment:
    ``function({seed: figure_data}, style, results={seed: results})`` on the seeds that wrote
    figure_data.json (and their results.json, where present); None when no seed did."""

    def collect(results_dir: Path, folder: Path, style: Style) -> Inputs | None:
        seeds = seed_folders(folder, "figure_data.json")
        if not seeds:
            return None
        return Inputs(
            _seeded_call(function, seeds, style),
            [
                p / f
                for p in seeds.values()
                for f in ("figure_data.json", "results.json")
                if (p / f).is_file()
            ],
        )

    return collect


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


def _optional_file(path: Path) -> Path | None:
    return path if path.is_file() else None
