"""Branch 2C's sections of the configuration, resolved and checked before any job runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.core.schema import check_layers, check_name


def resolve(config: dict[str, Any], depths: Mapping[str, int | None]) -> None:
    """Fill 2C's null choices from PM3 and the world; refuse undefined names and deep layers."""
    pm3 = config["premortems"]["pm3"]
    experiments = config["experiments"]
    pl, be = experiments["patching_layers"], experiments["behavior_edit"]
    pl["model"] = pl["model"] or pm3["model"]
    pl["n_pairs"] = pl["n_pairs"] or pm3["n_pairs"]
    be["model"] = be["model"] or pm3["model"]
    be["side_task"] = be["side_task"] or next(iter(config["tasks"]))
    check_name(be["model"], config["models"], "experiments.behavior_edit.model", "model")
    check_name(pl["model"], config["models"], "experiments.patching_layers.model", "model")
    check_name(be["side_task"], config["tasks"], "experiments.behavior_edit.side_task", "task")
    if pl["layers"]:
        check_layers("experiments.patching_layers.layers", pl["model"], pl["layers"], depths)
    if be["layers"]:
        check_layers(
            "experiments.behavior_edit.layers", be["model"], be["layers"], depths, lowest=1
        )
