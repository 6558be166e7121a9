"""The pre-mortems' sections of the configuration, resolved and checked before any job runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.core.checks import PAIRS_FILE, check_file, check_pooling, check_stored_layers
from actspace.core.schema import ConfigError, check_layers, check_name
from actspace.methods.patching import band_range, interior_layers, patched_layers


def resolve(config: dict[str, Any], depths: Mapping[str, int | None]) -> None:
    """Fill each pre-mortem's null model and task choices; refuse what cannot run."""
    models, tasks = config["models"], config["tasks"]
    first_model, first_task = next(iter(models)), next(iter(tasks))
    pm1, pm2, pm3 = (config["premortems"][name] for name in ("pm1", "pm2", "pm3"))

    # With one configured model and no list given, PM1 runs on it and records why it has no value
    # (INCONCLUSIVE); a list written by hand must name two or more models (the schema says so).
    if pm1["models"] is None:
        pm1["models"] = list(models)
    for index, name in enumerate(pm1["models"]):
        check_name(name, models, f"premortems.pm1.models[{index}]", "model")
    pm1["task"] = pm1["task"] or first_task
    check_name(pm1["task"], tasks, "premortems.pm1.task", "task")

    for key, section in (("pm2", pm2), ("pm3", pm3)):
        section["model"] = section["model"] or first_model
        check_name(section["model"], models, f"premortems.{key}.model", "model")
    pm2["task"] = pm2["task"] or first_task
    check_name(pm2["task"], tasks, "premortems.pm2.task", "task")
    if pm2["val_fraction"] > 0.5:
        raise ConfigError(
            "premortems.pm2.val_fraction: at most 0.5 (the rest of each training fold fits the "
            f"layer-choice probes), got {pm2['val_fraction']}"
        )
    if isinstance(pm2["layer"], int):
        check_layers("premortems.pm2.layer", pm2["model"], [pm2["layer"]], depths)
        check_stored_layers("premortems.pm2.layer", pm2["layer"], config)
    if pm3["layers"]:
        check_layers("premortems.pm3.layers", pm3["model"], pm3["layers"], depths)
    _check_layer_band(pm3, depths.get(pm3["model"]))
    for key, section in (("pm1", pm1), ("pm2", pm2)):
        check_pooling(f"premortems.{key}.pooling", section["pooling"], config)
    if pm3["pairs"] is not None:
        check_file("premortems.pm3.pairs", pm3["pairs"], PAIRS_FILE)


def _check_layer_band(pm3: Mapping[str, Any], n_blocks: int | None) -> None:
    """Refuse a layer band that is empty or, when the model's depth is known, holds no patched
    layer besides the known-answer cell at the configured position."""
    low, high = pm3["layer_band"]
    if not low < high:
        raise ConfigError(f"premortems.pm3.layer_band: low must be below high, got {[low, high]}")
    if n_blocks is None:
        return
    patched = patched_layers(pm3["layers"], n_blocks) or range(n_blocks + 1)
    if not interior_layers(patched, n_blocks, (low, high), pm3["position"]):
        first, last = band_range((low, high), n_blocks)
        raise ConfigError(
            f"premortems.pm3.layer_band: {[low, high]} spans layers {first}..{last} of model "
            f"{pm3['model']!r} ({n_blocks} blocks), which hold no patched layer besides the "
            f"known-answer cell at the {pm3['position']} position; widen the band"
        )
