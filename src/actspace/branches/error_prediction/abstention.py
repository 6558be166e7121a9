"""Branch 2B, experiment 3: abstain when the correctness probe doubts the model's answer.

The probe is PM2's estimator without class weights, so that its output is a probability that the
model's answer is correct; it is fitted on PM2's training items at the layer with the best inner
cross-validated log loss (or a configured layer). On the held-out items the model answers when
that probability is at least the threshold and abstains below it. Reported:

- coverage (share answered) and effective accuracy (share correct among answered) at the
  threshold, against the plain accuracy (answering everything), with a paired bootstrap interval
  of the gain;
- the output-confidence abstainer (the model's largest choice probability) at the same threshold,
  and at the probe's coverage: it answers the same number of test items as the probe, its most
  confident ones (:func:`matched_coverage`), with a paired interval of the probe's effective
  accuracy minus the confidence's;
- the full risk-coverage curve (risk = error rate among the answered items, items answered in
  order of decreasing score) and its area (AURC, lower is better) for the probe, the output
  confidence, a random abstainer (whose expected AURC is exactly the error rate) and the oracle.

Success (:func:`abstention_criteria`) is the plan's rule, the gain over answering everything
with its interval above zero, AND the obvious baseline: the probe's effective accuracy beats the
output confidence's at the same coverage (paired interval above zero); a probe that only
re-learns the model's confidence does not succeed. Nothing is chosen on the test items: the
probe's layer and penalty are chosen on the training items, the threshold is configured.

Ties in a score are resolved in expectation (answering tied items in random order), so a
constant score gives the random abstainer's flat curve exactly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from actspace.branches.error_prediction.intervals import CI_LEVEL, defined_ci, difference
from actspace.branches.error_prediction.probe import (
    inner_cv_score,
    make_probe,
    positive_probability,
)
from actspace.branches.error_prediction.steps import layer_choice, store_split
from actspace.core import criteria
from actspace.core.resampling import bootstrap_ci, paired_difference_ci, verdict
from actspace.core.results import binary_comparison, now
from actspace.core.splits import OneSidedAnswers
from actspace.core.store import NamedStore, stored_layers
from actspace.methods.probes import max_choice_probability
from actspace.plan import experiment

EXPERIMENT = experiment("abstention").name


# --------------------------------------------------------------------------------------------
# Risk and coverage
# --------------------------------------------------------------------------------------------


def risk_coverage(correct: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve: answer the ``k`` highest-scoring items, for k = 1..n.

    Returns ``(coverage, risk)``, each [n]: ``coverage[k-1] = k / n`` and ``risk[k-1]`` the
    expected error rate among the ``k`` answered items, with tied scores answered in random order.
    """
    y = np.asarray(correct).astype(bool)
    s = np.asarray(score, dtype=float)
    if y.shape != s.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(
            f"correct and score must be equal-length 1-d arrays, got {y.shape}, {s.shape}"
        )
    n = y.size
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    errors = (~y[order]).astype(float)
    starts = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
    group = np.cumsum(starts) - 1
    group_errors = np.bincount(group, weights=errors)
    group_size = np.bincount(group).astype(float)
    before = np.r_[0.0, np.cumsum(group_errors)[:-1]]
    position = np.arange(n) - np.flatnonzero(starts)[group]
    expected = before[group] + (position + 1) * group_errors[group] / group_size[group]
    answered = np.arange(1, n + 1)
    return answered / n, expected / answered


def aurc(correct: np.ndarray, score: np.ndarray) -> float:
    """Area under the risk-coverage curve (mean risk over the n coverage levels)."""
    return float(np.mean(risk_coverage(correct, score)[1]))


def oracle_aurc(correct: np.ndarray) -> float:
    """The smallest AURC any ordering reaches: every correct answer first."""
    y = np.asarray(correct).astype(bool)
    return aurc(y, y.astype(float))


def random_aurc(correct: np.ndarray, n_draws: int, seed: int = 0) -> np.ndarray:
    """AURCs of ``n_draws`` random abstainers (uniform random scores)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(correct).astype(bool)
    return np.array([aurc(y, rng.random(y.size)) for _ in range(n_draws)])


def effective_accuracy(correct: np.ndarray, answered: np.ndarray, axis: int = -1) -> Any:
    """Share correct among the answered items (NaN when none is answered)."""
    y = np.asarray(correct, dtype=float)
    a = np.asarray(answered, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sum(y * a, axis=axis) / np.sum(a, axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def accuracy_gain(correct: np.ndarray, answered: np.ndarray, axis: int = -1) -> Any:
    """Effective accuracy minus plain accuracy (answering everything)."""
    y = np.asarray(correct, dtype=float)
    return effective_accuracy(y, answered, axis=axis) - np.mean(y, axis=axis)


def answers(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Which items are answered: those whose P(correct) reaches the threshold."""
    return np.asarray(prob, dtype=float) >= threshold


def answered_vs_abstained(
    correct: np.ndarray, prob: np.ndarray, threshold: float, *, where: str
) -> dict[str, Any]:
    """The main comparison: correctness of the answered items (a) vs the abstained ones (b)."""
    y = np.asarray(correct).astype(bool)
    answered = answers(prob, threshold)
    description = (
        f"correctness of the held-out items the probe lets the model answer (P(correct) >= "
        f"{threshold:g}) against the items it abstains on ({where}); a permutation of the group "
        "labels is the random abstainer at the same coverage"
    )
    if answered.all():
        description += "; no item is abstained, so b is empty"
    elif not answered.any():
        description += "; no item is answered, so a is empty"
    return binary_comparison(
        y[answered],
        y[~answered],
        description=description,
        label_a="answered",
        label_b="abstained",
        kind="two_groups",
    )


def selective(
    correct: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    *,
    n_bootstrap: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Answer when ``prob >= threshold``: coverage, effective accuracy and the gain, with CIs."""
    y = np.asarray(correct).astype(bool)
    answered = answers(prob, threshold)
    n_answered = int(answered.sum())
    plain = float(y.mean())
    eff = effective_accuracy(y, answered) if n_answered else float("nan")
    gain_ci: list[float | None] = [None, None]
    eff_ci: list[float | None] = [None, None]
    if n_answered > 0:
        # Resamples that answer no item leave the effective accuracy undefined: left out.
        gain_ci = defined_ci(accuracy_gain, y, answered, n_resamples=n_bootstrap, seed=seed)
        eff_ci = defined_ci(effective_accuracy, y, answered, n_resamples=n_bootstrap, seed=seed)
    low, high = gain_ci
    return {
        "threshold": float(threshold),
        "n": int(y.size),
        "n_answered": n_answered,
        "coverage": n_answered / y.size,
        "effective_accuracy": eff,
        "effective_accuracy_ci": eff_ci,
        "plain_accuracy": plain,
        "gain": eff - plain if n_answered else None,
        "gain_ci": gain_ci,
        "gain_verdict": verdict(low, high, 0.0)
        if low is not None and high is not None
        else "INCONCLUSIVE",
    }


def at_coverage(correct: np.ndarray, score: np.ndarray, coverage: float) -> float | None:
    """Expected effective accuracy when the top ``coverage`` share of items by score answer."""
    y = np.asarray(correct).astype(bool)
    k = int(round(coverage * y.size))
    if k < 1:
        return None
    return float(1.0 - risk_coverage(y, score)[1][k - 1])


def top_k_answers(score: np.ndarray, k: int) -> np.ndarray:
    """Answer weights when the ``k`` highest-scoring items answer: 1 above the k-th score, 0
    below, and the k-th score's tied items share the remaining answers (their expectation in a
    random order), so the weights sum to ``k``."""
    s = np.asarray(score, dtype=float)
    if not 0 <= k <= s.size:
        raise ValueError(f"k must lie in 0..{s.size}, got {k}")
    if k == 0:
        return np.zeros(s.size)
    cut = np.sort(s)[::-1][k - 1]
    weights = (s > cut).astype(float)
    tied = s == cut
    weights[tied] = (k - weights.sum()) / tied.sum()
    return weights


def matched_coverage(
    correct: np.ndarray,
    prob: np.ndarray,
    confidence: np.ndarray,
    threshold: float,
    *,
    n_bootstrap: int,
    seed: int = 0,
) -> dict[str, Any]:
    """The probe against the output confidence at the probe's coverage, paired over items.

    The probe answers the ``k`` test items whose P(correct) reaches the threshold; the confidence
    baseline answers the same number, its ``k`` most confident test items (:func:`top_k_answers`).
    The bootstrap resamples items with both answer sets fixed (each is a fixed rule per item: a
    cut-off on its score), and the interval is of the difference of effective accuracies.
    """
    y = np.asarray(correct).astype(bool)
    by_probe = answers(prob, threshold).astype(float)
    k = int(by_probe.sum())
    by_confidence = top_k_answers(confidence, k)
    record: dict[str, Any] = {
        "coverage": k / y.size,
        "n_answered": k,
        "probe": None,
        "confidence": None,
        "random": float(y.mean()),
        "probe_minus_confidence": None,
        "probe_minus_confidence_ci": [None, None],
    }
    if k == 0:
        return record
    probe_eff = effective_accuracy(y, by_probe)
    confidence_eff = effective_accuracy(y, by_confidence)
    ci = defined_ci(
        difference(effective_accuracy, 2),
        y,
        by_probe,
        y,
        by_confidence,
        n_resamples=n_bootstrap,
        seed=seed,
    )
    return record | {
        "probe": probe_eff,
        "confidence": confidence_eff,
        "probe_minus_confidence": probe_eff - confidence_eff,
        "probe_minus_confidence_ci": ci,
    }


def abstention_criteria(
    probe: Mapping[str, Any], matched: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The parts of success: beat answering everything (the plan), then beat the output
    confidence at the same coverage (the control). ``probe`` is :func:`selective` of the probe,
    ``matched`` is :func:`matched_coverage`. A probe that answers no item fails the plan's part:
    abstaining on everything does not answer better than answering everything."""
    answered = probe["n_answered"] > 0
    return [
        criteria.criterion(
            "beats_answering_everything",
            kind="plan",
            rule=(
                f"answering only when P(correct) >= {probe['threshold']:g}, effective accuracy "
                "beats answering every item: the 95% interval of the gain lies above 0"
            ),
            value=probe["gain"],
            ci=probe["gain_ci"],
            bound=0.0,
            passed=None if answered else False,
        ),
        criteria.criterion(
            "beats_confidence_at_same_coverage",
            kind="control",
            rule=(
                f"at the same coverage ({matched['n_answered']} answered test items), the "
                "probe's effective accuracy beats answering the model's most confident items "
                "(largest choice probability): the paired 95% interval over items of the "
                "difference lies above 0"
            ),
            value=matched["probe_minus_confidence"],
            ci=matched["probe_minus_confidence_ci"],
            bound=0.0,
            passed=None if answered else False,
        ),
    ]


def headline_verdict(parts: Sequence[Mapping[str, Any]]) -> str:
    """PASS when every part passed; FAIL when a failed part's interval lies wholly below its
    bound; INCONCLUSIVE otherwise (a part unmeasured, or an interval across its bound)."""
    if criteria.success(parts):
        return "PASS"
    for part in criteria.failed(parts):
        high = part["ci"][1]
        if high is not None and high < part["bound"]:
            return "FAIL"
    return "INCONCLUSIVE"


# --------------------------------------------------------------------------------------------
# One store
# --------------------------------------------------------------------------------------------


def analyse_store(
    named: NamedStore,
    *,
    threshold: float,
    layer: int | None,
    pooling: str,
    n_samples: int | None,
    test_fraction: float,
    cv_folds: int,
    Cs: int | Sequence[float],
    n_bootstrap: int,
    n_random: int,
    seed: int,
) -> dict[str, Any]:
    """Selective answering with the probe's P(correct) on one store's held-out items."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    store = named.store
    n_layers = int(store.n_layers)
    if layer is not None and not 0 <= int(layer) <= n_layers:
        raise ValueError(f"layer {layer} out of range 0..{n_layers} for {named.model}")
    split = store_split(store, n_samples=n_samples, test_fraction=test_fraction, seed=seed)
    candidates = stored_layers(store) if layer is None else [int(layer)]
    best: tuple[float, int, np.ndarray, float] | None = None
    cv_by_layer = []
    for k in candidates:
        X = np.asarray(store.layer(k, pooling), dtype=np.float64)[split.items]
        probe = make_probe(balanced=False, cv_folds=cv_folds, Cs=Cs, seed=seed)
        probe.fit(X[split.train], split.y_train)
        score = inner_cv_score(probe)
        cv_by_layer.append({"layer": k, "inner_cv_log_loss": -score})
        if best is None or score > best[0]:
            best = (score, k, positive_probability(probe, X[split.test]), probe.C_)
    assert best is not None
    _, chosen, prob, C = best

    y = split.y_test
    logliks = store.logliks()
    confidence = max_choice_probability([logliks[int(i)] for i in split.items[split.test]])
    probe_sel = selective(y, prob, threshold, n_bootstrap=n_bootstrap, seed=seed)
    conf_sel = selective(y, confidence, threshold, n_bootstrap=n_bootstrap, seed=seed)
    matched = matched_coverage(y, prob, confidence, threshold, n_bootstrap=n_bootstrap, seed=seed)
    parts = abstention_criteria(probe_sel, matched)

    draws = random_aurc(y, n_draws=n_random, seed=seed)
    probe_aurc = aurc(y, prob)
    conf_aurc = aurc(y, confidence)
    diff_ci = paired_difference_ci(
        aurc, (y, prob), (y, confidence), n_resamples=n_bootstrap, seed=seed
    )
    random_diff_ci = bootstrap_ci(
        lambda yy, pp: aurc(yy, pp) - float(np.mean(~yy.astype(bool))),
        y,
        prob,
        n_resamples=n_bootstrap,
        seed=seed,
    )
    return {
        "model": named.model,
        "task": named.task,
        "n_layers": n_layers,
        "n_items": int(split.y.size),
        "n_train": int(split.train.size),
        "n_test": int(split.test.size),
        "layer": chosen,
        "layer_selection": "configured"
        if layer is not None
        else "best inner-CV log loss of the unweighted probe on training items",
        **criteria.held_out_record(
            True,
            (
                f"layer {chosen} "
                + ("is configured" if layer is not None else "has the best inner-CV log loss")
                + f" and the probe's penalty the best inner-CV score, both on the "
                f"{split.train.size} training items; the threshold {threshold:g} is configured; "
                f"the {split.test.size} test items choose nothing"
            ),
        ),
        "inner_cv": cv_by_layer,
        "probe_C": C,
        "plain_accuracy": float(y.mean()),
        "probe": probe_sel,
        "criteria": parts,
        "success": criteria.success(parts),
        "verdict": headline_verdict(parts),
        "confidence_same_threshold": conf_sel,
        "matched_coverage": matched,
        "aurc": {
            "probe": probe_aurc,
            "probe_ci": list(bootstrap_ci(aurc, y, prob, n_resamples=n_bootstrap, seed=seed)),
            "confidence": conf_aurc,
            "confidence_ci": list(
                bootstrap_ci(aurc, y, confidence, n_resamples=n_bootstrap, seed=seed)
            ),
            "random_expected": float(np.mean(~y)),
            "random_draws_mean": float(draws.mean()),
            "random_draws_sd": float(draws.std(ddof=1)) if draws.size > 1 else None,
            "random_draws_p05": float(np.quantile(draws, 0.05)),
            "random_draws_p95": float(np.quantile(draws, 0.95)),
            "oracle": oracle_aurc(y),
            "probe_minus_confidence": probe_aurc - conf_aurc,
            "probe_minus_confidence_ci": list(diff_ci),
            "probe_minus_random": probe_aurc - float(np.mean(~y)),
            "probe_minus_random_ci": list(random_diff_ci),
        },
        "comparison": answered_vs_abstained(
            y, prob, threshold, where=f"{named.model} on {named.task}, layer {chosen}"
        ),
        "_curves": {
            "probe": risk_coverage(y, prob),
            "confidence": risk_coverage(y, confidence),
            "oracle": risk_coverage(y, y.astype(float)),
        },
    }


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


def run_abstention(
    stores: Sequence[NamedStore],
    *,
    threshold: float,
    layer: int | str | None,
    pooling: str,
    n_samples: int | None,
    test_fraction: float,
    cv_folds: int,
    Cs: int | Sequence[float],
    n_bootstrap: int,
    n_random: int,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Selective answering on every store; returns (results, figure data with the curves).

    The keywords are the keys of ``experiments.abstention`` (``layer``: an index, or
    ``auto``/None for the best inner-CV log loss on the training items). The headline is the
    first analysable store's effective-accuracy gain at the threshold.
    """
    if not stores:
        raise ValueError("abstention needs at least one store")
    layer = layer_choice(layer)
    started, date = time.perf_counter(), now()
    records: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    for named in stores:
        try:
            record = analyse_store(
                named,
                threshold=threshold,
                layer=layer,
                pooling=pooling,
                n_samples=n_samples,
                test_fraction=test_fraction,
                cv_folds=cv_folds,
                Cs=Cs,
                n_bootstrap=n_bootstrap,
                n_random=n_random,
                seed=seed,
            )
        except OneSidedAnswers as error:
            records.append({"model": named.model, "task": named.task, "skipped": str(error)})
            continue
        raw = record.pop("_curves")
        curves.append(
            {
                "model": named.model,
                "task": named.task,
                "coverage": raw["probe"][0],
                **{f"risk_{name}": pair[1] for name, pair in raw.items()},
                "risk_random": np.full(raw["probe"][0].shape, record["aurc"]["random_expected"]),
            }
        )
        records.append(record)
    analysed = [r for r in records if "skipped" not in r]
    primary = analysed[0] if analysed else None
    results = {
        "experiment": EXPERIMENT,
        "metric": "effective_accuracy_gain_at_threshold",
        "value": primary["probe"]["gain"] if primary else None,
        "ci": primary["probe"]["gain_ci"] if primary else [None, None],
        "ci_level": CI_LEVEL,
        "threshold": float(threshold),
        "verdict": primary["verdict"] if primary else "INCONCLUSIVE",
        "success": primary["success"] if primary else None,
        "criteria": primary["criteria"] if primary else [],
        **(
            {key: primary[key] for key in ("held_out", "selection")}
            if primary
            else criteria.held_out_record(False, "no store could be analysed")
        ),
        "primary": {"model": primary["model"], "task": primary["task"]} if primary else None,
        "n": primary["n_test"] if primary else 0,
        "seed": seed,
        "date": date,
        "duration_s": round(time.perf_counter() - started, 3),
        "n_stores": len(records),
        "n_analysed": len(analysed),
        "n_success": int(sum(r["success"] is True for r in analysed)),
        "settings": {
            "threshold": threshold,
            "layer": "auto" if layer is None else int(layer),
            "pooling": pooling,
            "n_samples": n_samples,
            "test_fraction": test_fraction,
            "cv_folds": cv_folds,
            "Cs": Cs if isinstance(Cs, int) else list(Cs),
            "n_bootstrap": n_bootstrap,
            "n_random": n_random,
        },
        "stores": records,
        "comparison": primary["comparison"] if primary else None,
    }
    return results, {"curves": curves}
