"""Branch 2B's sections of the configuration, resolved and checked before any job runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actspace.core.checks import check_pooling, check_section_layers, check_stored_layers
from actspace.core.schema import check_name
from actspace.plan import branch_experiments


def resolve(config: dict[str, Any], depths: Mapping[str, int | None]) -> None:
    """Each 2B experiment reads the stores of its models x tasks (null: every configured one);
    its pooling must be extracted, and its layers within every one of its models."""
    for name in branch_experiments("2B"):
        section = config["experiments"][name]
        section["models"] = list(section.get("models") or config["models"])
        section["tasks"] = list(section.get("tasks") or config["tasks"])
        for key, defined, kind in (
            ("models", config["models"], "model"),
            ("tasks", config["tasks"], "task"),
        ):
            for index, value in enumerate(section[key]):
                check_name(value, defined, f"experiments.{name}.{key}[{index}]", kind)
        check_pooling(f"experiments.{name}.pooling", section["pooling"], config)
        for key in ("layer", "layers"):
            if key in section:
                check_section_layers(
                    f"experiments.{name}.{key}", section["models"], section[key], depths
                )
                check_stored_layers(f"experiments.{name}.{key}", section[key], config)


def store_pairs(section: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (model, task) stores a resolved 2B section reads: its models x tasks."""
    return [(model, task) for model in section["models"] for task in section["tasks"]]
