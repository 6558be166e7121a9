"""The pieces every pre-mortem's ``summary.md`` is written with: numbers, intervals, verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from actspace.premortems.common import topic


def fmt(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` decimals; ``n/a`` for None, NaN and infinities."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def fmt_ci(ci: Sequence[float | None]) -> str:
    """An interval as ``[low, high]``."""
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def header(results: Mapping[str, Any]) -> list[str]:
    """The opening lines of a PM1 or PM2 summary: date, metric, result, threshold, both verdicts."""
    level = int(round(100 * float(results["ci_level"])))
    pm = results["premortem"]
    return [
        f"# Pre-mortem {pm[2:]}: {topic(pm)}",
        "",
        f"- Date: {results['date']}",
        f"- Duration: {fmt(results['duration_s'], 1)} s",
        f"- Metric: {results['metric']} ({results['metric_description']})",
        f"- Result: {fmt(results['value'])}, {level}% CI {fmt_ci(results['ci'])}, "
        f"n = {results['n']}",
        f"- Threshold: {fmt(results['threshold'], 2)}",
        f"- Plan verdict: **{results['plan_verdict']}**",
        f"- Controlled verdict: **{results['controlled_verdict']}**",
        "",
    ]
