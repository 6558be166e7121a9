"""Optional experiment tracking with Weights & Biases.

With ``tracking: {wandb: {project: ...}}`` in the configuration, the workflow's ``track`` rule logs
every experiment that ran (and the pre-mortems) as one W&B run each: its ``config.json`` as the run
configuration, its headline and the statistics step's numbers as metrics, and the figures drawn from
it as images. Runs of one study share a group. ``wandb`` is imported only here, and only when the
rule runs, so a study without the key never imports it (it is the optional ``tracking`` extra).
Set ``mode: offline`` (or ``WANDB_MODE=offline``) to log without a network and sync later with
``wandb sync``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from actspace import plan
from actspace.core.io import read_json


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return float(value)
    return None


def entry_metrics(entry: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of one statistics entry (an experiment headline or a pre-mortem) to log."""
    out: dict[str, float] = {}
    for key in ("value", "n", "threshold", "p_value", "p_holm", "success", "seed_mean", "seed_sd"):
        number = _number(entry.get(key))
        if number is not None:
            out[key] = number
    ci = entry.get("ci") or []
    if len(ci) == 2:
        for name, bound in zip(("ci_low", "ci_high"), ci, strict=True):
            number = _number(bound)
            if number is not None:
                out[name] = number
    effect = entry.get("effect_size") or {}
    number = _number(effect.get("value"))
    if number is not None:
        out[f"effect_{effect.get('name')}"] = number
    return out


def _run_name(source: str, experiment: str) -> str:
    """``activation_transfer/seed42`` from ``.../experiments/activation_transfer/seed42/...``."""
    parts = Path(source).parent.parts
    return "/".join(parts[parts.index(experiment) :]) if experiment in parts else experiment


def _runs(statistics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One run per pre-mortem and per experiment results file, with its metrics by label."""
    runs: dict[str, dict[str, Any]] = {}
    for pm, info in statistics.get("premortems", {}).items():
        runs[pm] = {
            "name": pm,
            "job_type": "premortem",
            "config_file": None,
            "metrics": {f"{pm}/{k}": v for k, v in entry_metrics(info).items()},
            "experiment": pm,
        }
    for entry in statistics.get("comparisons", []):
        source = entry["source"]
        run = runs.setdefault(
            source,
            {
                "name": _run_name(source, entry["experiment"]),
                "job_type": entry["branch"],
                "config_file": str(Path(source).with_name("config.json")),
                "metrics": {},
                "experiment": entry["experiment"],
            },
        )
        prefix = entry["id"].replace(":", "/")
        run["metrics"].update({f"{prefix}/{k}": v for k, v in entry_metrics(entry).items()})
    return list(runs.values())


def _figures_for(experiment: str, manifest: Sequence[Mapping[str, Any]], folder: Path) -> dict:
    out = {}
    for figure in manifest:
        sources = " ".join(figure.get("sources", []))
        premortem = experiment in plan.PREMORTEM_NAMES
        if experiment in sources or (premortem and "decision" in sources):
            out[f"figures/{figure['name']}"] = folder / figure["png"]
    return out


def track_study(
    statistics: Mapping[str, Any],
    manifest: Sequence[Mapping[str, Any]],
    figures_dir: str | Path,
    *,
    project: str,
    entity: str | None,
    group: str | None,
    mode: str,
    seed: int,
    run_dir: str | Path | None = None,
    study_config: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Log every pre-mortem and experiment as a W&B run; returns what was logged per run.

    ``project``, ``entity``, ``group`` and ``mode`` are the ``tracking.wandb`` section; a null
    ``group`` groups the runs by the study's ``seed`` (``seed42``).
    """
    try:
        import wandb
    except ImportError:
        raise ValueError(
            "tracking.wandb is configured but the wandb package is not installed "
            "(pip install -e '.[tracking]'), or remove tracking.wandb from the configuration"
        ) from None
    init = {"project": project, "entity": entity, "group": group or f"seed{seed}", "mode": mode,
            "dir": str(run_dir) if run_dir else None, "reinit": "create_new"}  # fmt: skip
    try:
        return [
            _log_run(wandb, run_spec, init, manifest, Path(figures_dir), study_config)
            for run_spec in _runs(statistics)
        ]
    finally:
        # run.finish() can return before wandb's service has written an offline run's file;
        # teardown waits for it, so the files are complete when the rule (or a test) reads them.
        wandb.teardown()


def _log_run(
    wandb: Any,
    run_spec: Mapping[str, Any],
    init: Mapping[str, Any],
    manifest: Sequence[Mapping[str, Any]],
    figures_dir: Path,
    study_config: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Log one run: its configuration, its metrics (also as its summary) and its figures."""
    config = dict(study_config or {})
    if run_spec["config_file"] and Path(run_spec["config_file"]).is_file():
        config = {"experiment": read_json(run_spec["config_file"]), "study": config}
    run = wandb.init(name=run_spec["name"], job_type=run_spec["job_type"], config=config, **init)
    figures = _figures_for(run_spec["experiment"], manifest, figures_dir)
    images = {key: wandb.Image(str(path)) for key, path in figures.items() if path.is_file()}
    run.log({**run_spec["metrics"], **images})
    for key, value in run_spec["metrics"].items():
        run.summary[key] = value
    run.finish()
    return {
        "name": run_spec["name"],
        "id": run.id,
        "metrics": run_spec["metrics"],
        "figures": sorted(images),
    }
