"""The parts of unsupervised_error's success: the plan's ratio, then three controls CCS must beat.

A CCS direction that predicts the model's errors is only worth something if it does better than
what needs no search at all (Farquhar et al. 2023; Emmons 2023):

1. the plan: CCS reaches ``success_ratio`` (0.8) of the supervised contrast probe's balanced
   accuracy, the interval of the ratio lying above it;
2. a random direction: the *expected* balanced accuracy of a seeded random unit direction used
   as CCS's direction, everything else as CCS has it (normalisation, loss-fitted scale, sign
   and bias, sign rule, decision rule: :meth:`actspace.methods.ccs.CCS.fit_along`). The
   expectation, not the best of the draws: picking the best random direction would pick it on
   the test labels CCS never sees, and its bar would rise with the number of draws. The
   question the control answers is whether CCS's search over directions found more than an
   arbitrary direction treated the same way;
3. the top principal component of the training contrast differences (Emmons 2023: CCS often
   comes down to it), used as CCS's direction in the same way;
4. the model's output confidence (its top-1 choice probability, thresholded on the training
   items: PM2's control), which needs no activations at all.

Each control is "beaten" when the paired interval of CCS's balanced accuracy minus the
control's, over the same held-out items (resampling whole groups where items share one), lies
above 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from actspace.branches.error_prediction.intervals import CI_LEVEL, hit_balanced_accuracy, item_ci
from actspace.core import criteria
from actspace.methods.probes import balanced_accuracy


def ratio_of_balanced_accuracy(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, axis: int = -1
) -> np.ndarray | float:
    """Balanced accuracy of ``pred_a`` over that of ``pred_b``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(
            balanced_accuracy(y, pred_a, axis=axis),
            np.asarray(balanced_accuracy(y, pred_b, axis=axis)),
        )


def hit_gain(
    y: np.ndarray, hits_a: np.ndarray, hits_b: np.ndarray, axis: int = -1
) -> np.ndarray | float:
    """Balanced accuracy from ``hits_a`` minus that from ``hits_b`` (per-item hits in [0, 1])."""
    return hit_balanced_accuracy(y, hits_a, axis=axis) - hit_balanced_accuracy(y, hits_b, axis=axis)


def _hits(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return (np.asarray(pred).astype(bool) == np.asarray(y).astype(bool)).astype(float)


def ccs_criteria(
    y_test: np.ndarray,
    *,
    ccs_pred: np.ndarray,
    supervised_pred: np.ndarray,
    random_hits: np.ndarray | None,
    n_random: int,
    pc_pred: np.ndarray,
    confidence_pred: np.ndarray,
    success_ratio: float,
    groups: np.ndarray | None,
    n_bootstrap: int,
    seed: int,
) -> list[dict[str, Any]]:
    """The four parts, in order: plan ratio, random directions, top PC, output confidence.

    ``random_hits`` is, per held-out item, the share of the random directions that predict its
    correctness right (None without random directions: that part cannot be measured).
    ``groups`` are the held-out items' groups (None: each its own).
    """
    y = np.asarray(y_test).astype(bool)
    level = f"{100 * CI_LEVEL:g}%"
    unit = "held-out items" + (
        " (whole groups resampled where items share one)" if groups is not None else ""
    )

    def ci(statistic: Any, *arrays: np.ndarray) -> list[float | None]:
        return item_ci(statistic, *arrays, groups=groups, n_resamples=n_bootstrap, seed=seed)

    ccs_hits = _hits(y, ccs_pred)
    ccs_ba = float(balanced_accuracy(y, ccs_pred))
    sup_ba = float(balanced_accuracy(y, supervised_pred))

    def over(name: str, what: str, hits: np.ndarray | None) -> dict[str, Any]:
        if hits is None:
            value, interval = None, [None, None]
        else:
            value = ccs_ba - float(hit_balanced_accuracy(y, hits))
            interval = ci(hit_gain, y, ccs_hits, hits)
        return criteria.criterion(
            name,
            kind="control",
            rule=(
                f"CCS beats {what}: the paired {level} bootstrap interval over {unit} of CCS's "
                "balanced accuracy minus the control's lies above 0"
            ),
            value=value,
            ci=interval,
            bound=0.0,
        )

    return [
        criteria.criterion(
            "ccs_over_supervised",
            kind="plan",
            rule=(
                f"CCS reaches {success_ratio:g} of the supervised probe: the {level} bootstrap "
                f"interval over {unit} of CCS's balanced accuracy divided by the supervised "
                f"contrast probe's, at the headline layer, lies above {success_ratio:g}"
            ),
            value=ccs_ba / sup_ba if sup_ba > 0 else None,
            ci=ci(ratio_of_balanced_accuracy, y, np.asarray(ccs_pred), np.asarray(supervised_pred)),
            bound=success_ratio,
        ),
        over(
            "beats_random_direction",
            f"a random direction (the expected balanced accuracy over {n_random} seeded random "
            "unit directions, each used as CCS's direction with scale, sign and bias fitted by "
            "the CCS loss on the training items, and CCS's sign and decision rules)",
            random_hits,
        ),
        over(
            "beats_top_principal_component",
            "the top principal component of the training contrast differences (Emmons 2023), "
            "used as CCS's direction in the same way",
            _hits(y, pc_pred),
        ),
        over(
            "beats_output_confidence",
            "the output confidence (top-1 choice probability, thresholded on the training items)",
            _hits(y, confidence_pred),
        ),
    ]


def part_verdict(part: Mapping[str, Any]) -> str:
    """PASS when the part passed, FAIL when its whole interval lies below its bound, else
    INCONCLUSIVE (not measured, or an interval across the bound)."""
    if part["passed"] is True:
        return "PASS"
    high = part["ci"][1]
    if part["passed"] is False and high is not None and high < part["bound"]:
        return "FAIL"
    return "INCONCLUSIVE"


def overall_verdict(parts: Sequence[Mapping[str, Any]]) -> str:
    """PASS exactly when :func:`actspace.core.criteria.success` is True; FAIL when any part's
    interval lies wholly below its bound; else INCONCLUSIVE."""
    verdicts = [part_verdict(p) for p in parts]
    if criteria.success(parts) is True:
        return "PASS"
    return "FAIL" if "FAIL" in verdicts else "INCONCLUSIVE"
