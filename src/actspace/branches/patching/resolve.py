"""Branch 2C's sections of the configuration, resolved and checked before any job runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.core.checks import PAIRS_FILE, WORLD_FILES, check_extra, check_file
from actspace.core.schema import check_layers, check_name
from actspace.methods.steering_sets import builtin_files
from actspace.plan import RESULTS

#: What the files behavior_edit reads are, in words.
ATTRIBUTES_FILE = "a JSONL file of contrast texts {id, attribute, polarity, text, pair}"
PROMPTS_FILE = "a JSONL file of neutral prompts {id, prompt}"


def resolve(config: dict[str, Any], depths: Mapping[str, int | None]) -> None:
    """Fill 2C's null choices from PM3 and the world; refuse undefined names, deep layers and
    files named here that do not exist.

    patching_layers patches PM3's model on PM3's prompt pairs, split as PM3 splits them, unless
    told otherwise; behavior_edit
    steers PM3's model, reads the contrast sets and neutral prompts that ``builtin_sets`` names
    (the world's for an organism, the shipped English sets for any other model, under ``auto``),
    and measures its accuracy side effect on the first task.
    """
    pm3 = config["premortems"]["pm3"]
    experiments = config["experiments"]
    pl, be = experiments["patching_layers"], experiments["behavior_edit"]
    for section, key, what in (
        (pl, "pairs", PAIRS_FILE),
        (be, "attribute_sets", ATTRIBUTES_FILE),
        (be, "prompts", PROMPTS_FILE),
    ):
        if section[key] is not None:
            name = "patching_layers" if section is pl else "behavior_edit"
            check_file(f"experiments.{name}.{key}", section[key], what)
    pl["model"] = pl["model"] or pm3["model"]
    pl["n_pairs"] = pl["n_pairs"] or pm3["n_pairs"]
    pl["selection_fraction"] = pl["selection_fraction"] or pm3["selection_fraction"]
    pl["pairs"] = pl["pairs"] or pm3["pairs"] or WORLD_FILES["pairs"]
    be["model"] = be["model"] or pm3["model"]
    be["side_task"] = be["side_task"] or next(iter(config["tasks"]))
    check_name(be["model"], config["models"], "experiments.behavior_edit.model", "model")
    shipped = builtin_files(be["builtin_sets"], config["models"][be["model"]]["source"])
    for key in ("attribute_sets", "prompts"):
        be[key] = be[key] or (shipped[key] if shipped else WORLD_FILES[key])
    if "toxicity" in be["attributes"] and be["scorers"]["toxicity"]["kind"] == "offline":
        check_extra("experiments.behavior_edit.scorers.toxicity.kind", "profanity_check", "scorers")
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
