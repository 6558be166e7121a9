"""What the pre-mortems share: their record's headline, item selection, and their parameters.

Every pre-mortem's ``results.json`` opens with the same keys (:func:`headline`), named after the
plan's registry (:mod:`actspace.plan`). The entry functions (``run_pm1``, ``run_pm2``,
``run_pm3``) take the keys of their configuration section (``premortems.<pm>`` in the schema) as
keyword-only arguments without defaults, so the schema stays the only source of defaults;
:func:`actspace.core.cli.call_params` lets a script hand a whole resolved section to such a function
without naming its keys a second time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from actspace import plan
from actspace.core.resampling import verdict
from actspace.core.store import StoreLike


def record_name(pm: str) -> str:
    """The pre-mortem's ``name`` in its records: its rule without the ``pmN_`` prefix
    (``pm1_cross_model`` -> ``cross_model``)."""
    return plan.premortem(pm).rule.removeprefix(f"{pm}_")


def topic(pm: str) -> str:
    """What the pre-mortem measures, for headings: its title without the ``PMN`` prefix."""
    return plan.premortem(pm).title.removeprefix(f"{pm.upper()} ")


def control_record(
    name: str, description: str, value: float | None, ci: Sequence[float | None]
) -> dict[str, Any]:
    """What a trivial explanation already gives on the same items (the pre-mortem's control)."""
    return {
        "name": name,
        "description": description,
        "value": value,
        "ci": [ci[0], ci[1]],
    }


def controlled_test(
    statistic: str, value: float | None, ci: Sequence[float | None], bound: float
) -> dict[str, Any]:
    """The comparison the controlled verdict decides on: ``statistic`` (for PM1 and PM2 the
    paired difference metric - control, bound 0) must have its whole interval above ``bound``."""
    low = ci[0]
    passed = low is not None and bool(np.isfinite(low)) and float(low) > bound
    return {
        "statistic": statistic,
        "value": value,
        "ci": [ci[0], ci[1]],
        "bound": float(bound),
        "passed": passed,
    }


def controlled_verdict(plan_verdict: str, controlled: Mapping[str, Any] | None) -> str:
    """PASS only when the plan's rule passes AND the metric beats its control.

    A plan verdict other than PASS stands as it is (FAIL stays FAIL, INCONCLUSIVE stays
    INCONCLUSIVE); a plan PASS whose comparison with the control does not lie above its bound
    is a FAIL: the metric is no better than what the trivial explanation gives.
    """
    if plan_verdict != "PASS":
        return plan_verdict
    return "PASS" if controlled is not None and controlled["passed"] else "FAIL"


def headline(
    pm: str,
    *,
    value: float,
    ci: Sequence[float],
    ci_level: float,
    threshold: float,
    n: int,
    started: float,
    date: str,
    description: str,
    control: Mapping[str, Any] | None,
    controlled: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The keys every pre-mortem record opens with, in their order.

    ``plan_verdict`` is the plan's threshold rule on ``ci``; ``controlled_verdict`` adds the
    comparison with the control (:func:`controlled_verdict`). Which of the two the gate uses is
    ``gate.criterion``'s choice, made by the gate, not here. ``started`` is the
    ``time.perf_counter()`` reading at the start of the run: the duration is measured when the
    headline is built, after the computation.
    """
    low, high = ci
    plan_rule = verdict(low, high, threshold)
    return {
        "premortem": pm,
        "name": record_name(pm),
        "metric": plan.premortem(pm).metric,
        "value": value,
        "ci": [low, high],
        "ci_level": ci_level,
        "threshold": float(threshold),
        "plan_verdict": plan_rule,
        "control": dict(control) if control is not None else None,
        "controlled": dict(controlled) if controlled is not None else None,
        "controlled_verdict": controlled_verdict(plan_rule, controlled),
        "n": int(n),
        "duration_s": round(time.perf_counter() - started, 3),
        "date": date,
        "metric_description": description,
    }


def no_value_headline(
    pm: str,
    *,
    reason: str,
    threshold: float,
    ci_level: float,
    started: float,
    date: str,
    description: str,
) -> dict[str, Any]:
    """A pre-mortem's record when it cannot be measured: no value, INCONCLUSIVE under both
    criteria, and the reason, so that the gate, the abort report and the summary say why, and
    the rest of the plan goes on."""
    record = headline(
        pm,
        value=float("nan"),
        ci=(float("nan"), float("nan")),
        ci_level=ci_level,
        threshold=threshold,
        n=0,
        started=started,
        date=date,
        description=description,
        control=None,
        controlled=None,
    )
    record.update(
        value=None,
        ci=[None, None],
        plan_verdict="INCONCLUSIVE",
        controlled_verdict="INCONCLUSIVE",
        reason=reason,
    )
    return record


# --- items of an activation store ----------------------------------------------------------------


def n_items(store: StoreLike) -> int:
    """Items in a store (from ``n_items`` where the store has it, else from layer 0)."""
    n = getattr(store, "n_items", None)
    return int(n) if n is not None else int(store.layer(0).shape[0])


def item_ids(store: StoreLike) -> list[str] | None:
    """The item ids of a store's scores, or None when the store (or any row) has none."""
    scores = getattr(store, "scores", None)
    if scores is None:
        return None
    rows = scores()
    ids = [row.get("id") for row in rows]
    return None if any(i is None for i in ids) else [str(i) for i in ids]


def subsample(n: int, n_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted item indices: all items, or a seeded random subset of ``n_samples``."""
    if n_samples is None or n_samples >= n:
        return np.arange(n)
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    return np.sort(rng.choice(n, size=n_samples, replace=False))


def check_fraction(name: str, value: float) -> None:
    """Refuse a fraction outside the open interval (0, 1), naming it."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value}")


# --- parameters: a resolved section handed to an entry function ----------------------------------
