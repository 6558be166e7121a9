"""Branch 2A's sections of the configuration, resolved and checked before any job runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.core.checks import check_pooling, check_section_layers, check_stored_layers
from actspace.core.schema import ConfigError, check_name


def resolve(config: dict[str, Any], depths: Mapping[str, int | None]) -> None:
    """Fill null model/task choices of cross_model_extended and activation_transfer; refuse
    undefined names, impossible splits, poolings not extracted and layers beyond a model."""
    models, tasks = list(config["models"]), list(config["tasks"])
    xm = config["experiments"]["cross_model_extended"]
    xm["models"] = list(xm["models"] or models)
    xm["task"] = xm["task"] or tasks[0]
    xt = config["experiments"]["activation_transfer"]
    xt["source"] = xt["source"] or models[0]
    xt["target"] = xt["target"] or models[min(1, len(models) - 1)]
    xt["task"] = xt["task"] or tasks[0]
    for index, name in enumerate(xm["models"]):
        check_name(
            name, config["models"], f"experiments.cross_model_extended.models[{index}]", "model"
        )
    check_name(xm["task"], config["tasks"], "experiments.cross_model_extended.task", "task")
    for key in ("source", "target"):
        check_name(xt[key], config["models"], f"experiments.activation_transfer.{key}", "model")
    check_name(xt["task"], config["tasks"], "experiments.activation_transfer.task", "task")
    if xt["test_fraction"] + xt["val_fraction"] >= 1:
        raise ConfigError(
            "experiments.activation_transfer.val_fraction: test_fraction + val_fraction must be "
            f"below 1 (got {xt['test_fraction']} + {xt['val_fraction']})"
        )
    check_pooling("experiments.cross_model_extended.pooling", xm["pooling"], config)
    if "last" not in config["extract"]["poolings"]:
        raise ConfigError(
            "extract.poolings: experiments.activation_transfer reads the stores' 'last' pooling "
            "(it injects at the last context token); add last to extract.poolings"
        )
    check_section_layers(
        "experiments.activation_transfer.source_layer", [xt["source"]], xt["source_layer"], depths
    )
    check_section_layers(
        "experiments.activation_transfer.target_layer",
        [xt["target"]],
        xt["target_layer"],
        depths,
        lowest=1,
    )
    for key in ("source_layer", "target_layer"):
        check_stored_layers(f"experiments.activation_transfer.{key}", xt[key], config)
