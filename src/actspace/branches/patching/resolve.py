"""Branch 2C's sections of the configuration, resolved and checked before any job runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.core.schema import check_layers, check_name
from actspace.plan import RESULTS

#: Where the synthetic world's files are (written by the prepare phase).
WORLD = f"{RESULTS}/world"


def resolve(config: dict[str, Any], depths: Mapping[str, int | None]) -> None:
    """Fill 2C's null choices from PM3 and the world; refuse undefined names and deep layers.

    patching_layers patches PM3's model on PM3's prompt pairs unless told otherwise; behavior_edit
    steers PM3's model, reads the world's contrast sets and neutral prompts, and measures its
    accuracy side effect on the first task.
    """
    pm3 = config["premortems"]["pm3"]
    experiments = config["experiments"]
    pl, be = experiments["patching_layers"], experiments["behavior_edit"]
    pl["model"] = pl["model"] or pm3["model"]
    pl["n_pairs"] = pl["n_pairs"] or pm3["n_pairs"]
    pl["pairs"] = pl["pairs"] or pm3["pairs"] or f"{WORLD}/prompt_pairs.jsonl"
    be["model"] = be["model"] or pm3["model"]
    be["side_task"] = be["side_task"] or next(iter(config["tasks"]))
    be["attribute_sets"] = be["attribute_sets"] or f"{WORLD}/attributes.jsonl"
    be["prompts"] = be["prompts"] or f"{WORLD}/neutral_prompts.jsonl"
    check_name(be["model"], config["models"], "experiments.behavior_edit.model", "model")
    check_name(pl["model"], config["models"], "experiments.patching_layers.model", "model")
    check_name(be["side_task"], config["tasks"], "experiments.behavior_edit.side_task", "task")
    if pl["layers"]:
        check_layers("experiments.patching_layers.layers", pl["model"], pl["layers"], depths)
    if be["layers"]:
        check_layers(
            "experiments.behavior_edit.layers", be["model"], be["layers"], depths, lowest=1
        )


def side_task_file(section: Mapping[str, Any]) -> str | None:
    """The task file of a resolved behavior_edit section's accuracy side effect (None when
    ``side_task_items`` is 0, which switches that side effect off)."""
    if section["side_task_items"] <= 0:
        return None
    return f"{RESULTS}/tasks/{section['side_task']}.jsonl"
