"""The pre-mortems' sections of the configuration, resolved and checked before any job runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.core.checks import PAIRS_FILE, check_file, check_pooling
from actspace.core.schema import ConfigError, check_layers, check_name


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
    if pm2["test_fraction"] + pm2["val_fraction"] >= 1:
        raise ConfigError(
            "premortems.pm2.val_fraction: test_fraction + val_fraction must be below 1 "
            f"(got {pm2['test_fraction']} + {pm2['val_fraction']})"
        )
    if isinstance(pm2["layer"], int):
        check_layers("premortems.pm2.layer", pm2["model"], [pm2["layer"]], depths)
    if pm3["layers"]:
        check_layers("premortems.pm3.layers", pm3["model"], pm3["layers"], depths)
    for key, section in (("pm1", pm1), ("pm2", pm2)):
        check_pooling(f"premortems.{key}.pooling", section["pooling"], config)
    if pm3["pairs"] is not None:
        check_file("premortems.pm3.pairs", pm3["pairs"], PAIRS_FILE)
