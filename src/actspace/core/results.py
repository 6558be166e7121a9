"""What every experiment's results.json shares: its timestamp and its ``comparison`` block.

An experiment records the per-unit data of its main comparison (``comparison``), from which Phase 3
computes effect sizes, intervals and p-values; the block's format is defined here, below every
phase, so that experiments need not import Phase 3.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Mapping
from typing import Any

import numpy as np


def now() -> str:
    """The current UTC time, to the second, as results.json records it."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def binary_comparison(
    a: np.ndarray,
    b: np.ndarray,
    *,
    description: str,
    label_a: str,
    label_b: str,
    kind: str = "paired",
) -> dict[str, Any]:
    """A ``comparison`` block of 0/1 outcomes per item (right/wrong), reported in points."""
    return {
        "description": description,
        "kind": kind,
        "unit": "item",
        "a": [float(v) for v in np.asarray(a, dtype=bool)],
        "b": [float(v) for v in np.asarray(b, dtype=bool)],
        "label_a": label_a,
        "label_b": label_b,
        "binary": True,
        "scale": 100.0,
    }


def no_value_result(
    experiment: str, metric: str, reason: str, *, started: float, date: str, **extra: Any
) -> dict[str, Any]:
    """An experiment's record when it cannot be measured on this study (for example a cross-model
    experiment on a study with one model): no value, no success, and the reason in one sentence.
    Statistics, the summary and the paper report it as not measured; the rest of the plan goes on.
    """
    return {
        "experiment": experiment,
        "metric": metric,
        "value": None,
        "ci": [None, None],
        "n": 0,
        "success": None,
        "reason": reason,
        **extra,
        "duration_s": round(time.perf_counter() - started, 3),
        "date": date,
    }


def no_value_summary(title: str, results: Mapping[str, Any]) -> str:
    """The summary page of a record from :func:`no_value_result`."""
    return f"# {title}\n\nNot measured: {results['reason']}.\n"
