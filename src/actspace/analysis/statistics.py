"""Phase 3 statistics: effect sizes, CIs and p-values of every experiment's main comparison.

Each experiment's ``results.json`` carries its headline (``metric``, ``value``, ``ci``, ``n``,
``success``) and a ``comparison`` block with the per-unit data behind it (or a list of such
headlines under ``headlines``, one per attribute). The comparison block is:

``kind``      ``paired`` (``a`` and ``b`` on the same units), ``two_groups`` (``a`` and ``b``
              independent groups) or ``one_sample`` (``values`` against ``null_value``);
``binary``    whether the values are 0/1 outcomes; ``scale`` multiplies reported differences
              (100 for accuracy points).

From it this module computes the difference, a seeded percentile bootstrap 95% CI of it, an effect
size and a p-value:

- paired: d_z = mean(a - b) / sd(a - b); McNemar's test for binary outcomes (exact binomial when
  fewer than 25 discordant pairs), else a sign-flip permutation test;
- two groups: Cohen's d with the pooled standard deviation; a permutation test of group labels;
- one sample: d = (mean - null) / sd; a sign-flip permutation test of ``values - null``.

With fewer than 50 units the small-sample correction J = 1 - 3 / (4 df - 1) is applied and the
effect is reported as Hedges' g (g_z when paired). Where several seeds ran, each headline also
gets its per-seed values, mean and standard deviation.

The Holm family is the held-out tests only (one per headline, primary seed): a headline whose
``held_out`` is not True chose what it tests (a layer, a cell) on the units it is then tested on,
so its p-value is not that of a pre-registered test. It keeps its raw p-value, gets no Holm p, and
says why it is out (``excluded_from_family``); ``holm`` lists the family and the excluded.
Each entry also carries the headline's ``criteria`` (see :mod:`actspace.core.criteria`) and the
names of the failed ones, so that the summary and the paper can say which part failed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from actspace import plan
from actspace.core import criteria as _criteria
from actspace.core.io import read_json
from actspace.core.resampling import bootstrap_ci
from actspace.gate.decision import NO_VALUE, no_value

SMALL_SAMPLE = 50
COMPARISON_KINDS = ("paired", "two_groups", "one_sample")
#: Why only held-out tests are Holm-corrected together (statistics.json quotes it).
FAMILY_RULE = (
    "A test whose units chose what it tests is not pre-registered, so it stays out of the "
    "family: only held-out tests with a p-value are Holm-corrected together."
)
#: The headline keys that say how a result was chosen and what its success is made of.
HEADLINE_RECORD_KEYS = ("criteria", "held_out", "selection")
_PATH = re.compile(r"experiments/(?P<experiment>[a-z_]+)/(?:seed(?P<seed>\d+)/)?results\.json$")


def _floats(values: Any, where: str) -> np.ndarray:
    array = np.asarray(values if values is not None else [], dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{where} must be a flat list of numbers")
    return array


def _small_sample_correction(df: int) -> float:
    return 1.0 - 3.0 / (4.0 * df - 1.0) if df > 1 else math.nan


def _standardised(mean: float, sd: float, n: int, df: int, paired: bool) -> dict[str, Any]:
    d = mean / sd if sd > 0 else math.nan
    small = n < SMALL_SAMPLE
    value = d * _small_sample_correction(df) if small else d
    if paired:
        name = "hedges_g_z" if small else "cohens_d_z"
    else:
        name = "hedges_g" if small else "cohens_d"
    return {"name": name, "value": float(value), "uncorrected_d": float(d)}


def _permutation_p(data: tuple[np.ndarray, ...], kind: str, n_resamples: int, seed: int) -> float:
    result = _scipy_stats.permutation_test(
        data,
        _difference_axis,
        permutation_type="independent" if kind == "two_groups" else "samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def _mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[str, float]:
    a, b = a.astype(bool), b.astype(bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    discordant = table[0][1] + table[1][0]
    if discordant == 0:
        return "McNemar (no discordant pairs)", 1.0
    exact = discordant < 25
    p = float(mcnemar(table, exact=exact, correction=True).pvalue)
    return ("McNemar exact" if exact else "McNemar chi-square"), p


def comparison_statistics(
    comparison: Mapping[str, Any],
    *,
    n_bootstrap: int,
    n_permutations: int,
    seed: int,
) -> dict[str, Any]:
    """Difference, bootstrap CI, effect size and p-value of one comparison block.

    ``n_bootstrap`` and ``n_permutations`` are the ``analysis.statistics`` settings; ``seed`` seeds
    both resamplings.
    """
    kind = comparison.get("kind")
    if kind not in COMPARISON_KINDS:
        raise ValueError(
            f"comparison kind must be one of {', '.join(COMPARISON_KINDS)}, got {kind!r}"
        )
    scale = float(comparison.get("scale", 1.0))
    binary = bool(comparison.get("binary", False))
    if kind == "one_sample":
        values = _floats(comparison.get("values"), "comparison.values")
        null = float(comparison.get("null_value", 0.0))
        data: tuple[np.ndarray, ...] = (values - null,)
        n = int(values.size)
    else:
        a = _floats(comparison.get("a"), "comparison.a")
        b = _floats(comparison.get("b"), "comparison.b")
        if kind == "paired" and a.size != b.size:
            raise ValueError(f"paired comparison needs equal lengths, got {a.size} and {b.size}")
        data = (a - b,) if kind == "paired" else (a, b)
        n = int(a.size) if kind == "paired" else int(a.size + b.size)
    out: dict[str, Any] = {
        "kind": kind,
        "n": n,
        "difference": math.nan,
        "ci": [math.nan, math.nan],
        "effect_size": {"name": None, "value": math.nan},
        "test": None,
        "p_value": None,
    }
    if any(array.size < 2 for array in data):
        out["note"] = "fewer than 2 units on a side: no interval, effect size or test"
        if all(array.size for array in data):
            out["difference"] = scale * float(_difference(data))
        return out

    out["difference"] = scale * float(_difference(data))
    low, high = bootstrap_ci(
        _difference_axis,
        *data,
        n_resamples=n_bootstrap,
        seed=seed,
        paired=len(data) == 1,
    )
    out["ci"] = [scale * low, scale * high]
    if len(data) == 1:
        diff = data[0]
        out["effect_size"] = _standardised(
            float(diff.mean()), float(diff.std(ddof=1)), n, n - 1, paired=kind == "paired"
        )
    else:
        a, b = data
        pooled = math.sqrt(
            ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2)
        )
        out["effect_size"] = _standardised(
            float(a.mean() - b.mean()), pooled, n, a.size + b.size - 2, paired=False
        )
    if kind == "paired" and binary:
        out["test"], out["p_value"] = _mcnemar(
            _floats(comparison["a"], "a"), _floats(comparison["b"], "b")
        )
    elif float(np.ptp(np.concatenate(data))) == 0.0 and len(data) == 1 and data[0][0] == 0:
        out["test"], out["p_value"] = "sign-flip permutation (all differences zero)", 1.0
    else:
        out["test"] = (
            "permutation of group labels" if kind == "two_groups" else "sign-flip permutation"
        )
        out["p_value"] = _permutation_p(data, kind, n_permutations, seed)
    return out


def _difference(data: tuple[np.ndarray, ...]) -> float:
    return float(data[0].mean() if len(data) == 1 else data[0].mean() - data[1].mean())


def _difference_axis(*arrays: np.ndarray, axis: int = -1) -> np.ndarray:
    if len(arrays) == 1:
        return np.mean(arrays[0], axis=axis)
    return np.mean(arrays[0], axis=axis) - np.mean(arrays[1], axis=axis)


def locate(path: str | Path) -> tuple[str, int | None]:
    """``(experiment, seed)`` of a ``.../experiments/{experiment}[/seed{N}]/results.json`` path."""
    match = _PATH.search(Path(path).as_posix())
    if not match or match["experiment"] not in plan.EXPERIMENT_NAMES:
        raise ValueError(
            f"{path}: not an experiment results file (expected experiments/<name>[/seed<N>]/"
            f"results.json with name one of {', '.join(plan.EXPERIMENT_NAMES)})"
        )
    return match["experiment"], int(match["seed"]) if match["seed"] else None


def headlines(results: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """The headline(s) of one results dict, each with metric, value, ci, n, success, comparison."""
    heads = results.get("headlines")
    if heads is None:
        heads = [{key: results.get(key) for key in ("metric", "value", "ci", "n", "success")}]
        heads[0]["comparison"] = results.get("comparison")
        heads[0]["label"] = None
        heads[0]["verdict"] = results.get("verdict")
        heads[0]["success_rule"] = results.get("metric_description")
        heads[0].update({key: results[key] for key in HEADLINE_RECORD_KEYS if key in results})
    for head in heads:
        # value and ci may be None (an experiment with nothing to measure); the metric may not
        missing = [key for key in ("metric", "value", "ci") if key not in head]
        if missing or head["metric"] is None:
            raise ValueError(f"{where}: the headline lacks {(missing or ['metric'])[0]!r}")
    return list(heads)


def _seed_summary(values: Sequence[float | None]) -> dict[str, Any]:
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return {
        "seed_mean": float(finite.mean()) if finite.size else None,
        "seed_sd": float(finite.std(ddof=1)) if finite.size >= 2 else None,
    }


def experiment_statistics(
    result_files: Sequence[str | Path],
    *,
    n_bootstrap: int,
    n_permutations: int,
    alpha: float,
    seed: int,
    primary_seed: int | None = None,
) -> dict[str, Any]:
    """One entry per experiment headline, across seeds, with Holm-corrected p-values.

    ``n_bootstrap``, ``n_permutations`` and ``alpha`` are the ``analysis.statistics`` settings.
    ``primary_seed`` is the seed whose run gives each headline's value and test (None: the lowest
    seed that ran).
    """
    runs: dict[str, dict[int | None, dict[str, Any]]] = {}
    for path in result_files:
        experiment, run_seed = locate(path)
        runs.setdefault(experiment, {})[run_seed] = {"path": Path(path), "data": read_json(path)}
    order = [e for e in plan.EXPERIMENT_NAMES if e in runs]
    entries: list[dict[str, Any]] = []
    for experiment in order:
        by_seed = runs[experiment]
        seeds = sorted(by_seed, key=lambda s: -1 if s is None else s)
        main = primary_seed if primary_seed in by_seed else seeds[0]
        primary = by_seed[main]
        per_seed_heads = {s: headlines(by_seed[s]["data"], str(by_seed[s]["path"])) for s in seeds}
        for index, head in enumerate(per_seed_heads[main]):
            label = head.get("label")
            entry: dict[str, Any] = {
                "id": experiment if label is None else f"{experiment}:{label}",
                "experiment": experiment,
                "label": label,
                "branch": plan.experiment_branch(experiment),
                "metric": head["metric"],
                "value": head["value"],
                "ci": head["ci"],
                "n": head.get("n"),
                "success": head.get("success"),
                "success_rule": head.get("success_rule"),
                "verdict": head.get("verdict"),
                "seed": main,
                "source": primary["path"].as_posix(),
                **_criteria_record(head, f"{primary['path']} ({label or experiment})"),
            }
            comparison = head.get("comparison")
            if comparison:
                stats = comparison_statistics(
                    comparison, n_bootstrap=n_bootstrap, n_permutations=n_permutations, seed=seed
                )
                entry["comparison"] = {
                    "description": comparison.get("description"),
                    "label_a": comparison.get("label_a"),
                    "label_b": comparison.get("label_b"),
                    "unit": comparison.get("unit"),
                    **stats,
                }
                entry["effect_size"] = stats["effect_size"]
                entry["test"] = stats["test"]
                entry["p_value"] = stats["p_value"]
            else:
                entry["comparison"] = None
                entry["effect_size"] = {"name": None, "value": None}
                entry["test"] = None
                entry["p_value"] = None
            if len(seeds) > 1:
                values = {
                    str(s): per_seed_heads[s][index]["value"]
                    if index < len(per_seed_heads[s])
                    else None
                    for s in seeds
                }
                entry["seeds"] = values
                entry.update(_seed_summary(list(values.values())))
            else:
                entry["seeds"] = None
                entry["seed_mean"] = entry["seed_sd"] = None
            entries.append(entry)
    return {
        "comparisons": entries,
        "holm": _holm(entries, alpha),
        "settings": {
            "n_bootstrap": n_bootstrap,
            "n_permutations": n_permutations,
            "seed": seed,
            "primary_seed": primary_seed,
            "small_sample": SMALL_SAMPLE,
        },
    }


def _criteria_record(head: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A headline's criteria, the names of the failed ones, ``held_out`` and ``selection``.

    A headline without ``held_out`` is treated as not held out (``held_out_recorded`` False says
    so): a test is in the Holm family only when the experiment says its choice was held out.
    Raises ValueError when ``success`` disagrees with its criteria.
    """
    parts = [dict(c) for c in head.get("criteria") or []]
    if parts and head.get("success") != _criteria.success(parts):
        raise ValueError(
            f"{where}: success is {head.get('success')!r} but its criteria give "
            f"{_criteria.success(parts)!r} (success must be criteria.success(criteria))"
        )
    recorded = head.get("held_out") is not None
    return {
        "criteria": parts,
        "failed_criteria": [c.get("name") for c in _criteria.failed(parts)],
        "held_out": head.get("held_out") is True,
        "held_out_recorded": recorded,
        "selection": head.get("selection"),
    }


def _has_p(entry: Mapping[str, Any]) -> bool:
    p = entry.get("p_value")
    return p is not None and math.isfinite(float(p))


def exclusion_reason(entry: Mapping[str, Any]) -> str | None:
    """Why an entry is not in the Holm family; None when it is in it."""
    if not _has_p(entry):
        return "no p-value (no per-unit comparison was tested)"
    if not entry.get("held_out_recorded", True):
        return "the headline does not record held_out, so it is treated as not held out"
    if entry.get("held_out") is not True:
        selection = str(entry.get("selection") or "").strip().rstrip(".")
        return "not held out: the units it is tested on also chose it" + (
            f" ({selection})" if selection else ""
        )
    return None


def _holm(entries: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """Holm-correct the held-out tests (the family); mark every other entry with its reason.

    ``excluded`` lists the tests (entries with a p-value) kept out of the family; an entry with
    no p-value is not a test, and its ``excluded_from_family`` says so.
    """
    family = []
    for entry in entries:
        entry["p_holm"] = None
        entry["reject_holm"] = None
        entry["excluded_from_family"] = exclusion_reason(entry)
        entry["in_holm_family"] = entry["excluded_from_family"] is None
        if entry["in_holm_family"]:
            family.append(entry)
    if family:
        reject, corrected, _, _ = multipletests([e["p_value"] for e in family], alpha, "holm")
        for entry, p, r in zip(family, corrected, reject, strict=True):
            entry["p_holm"] = float(p)
            entry["reject_holm"] = bool(r)
    return {
        "method": "holm",
        "alpha": alpha,
        "n_comparisons": len(family),
        "family": [e["id"] for e in family],
        "excluded": [
            {"id": e["id"], "reason": e["excluded_from_family"]}
            for e in entries
            if _has_p(e) and not e["in_holm_family"]
        ],
        "rule": FAMILY_RULE,
    }


def premortem_table(decision: Mapping[str, Any]) -> dict[str, Any]:
    """The pre-mortems as the decision records them: both measured verdicts, the control and the
    controlled comparison, the verdict the gate used (``verdict``) and whether it was forced.

    A pre-mortem that measured nothing keeps ``value`` None and gains the ``reason`` the gate
    recorded (INCONCLUSIVE with no value).
    """
    out: dict[str, Any] = {}
    subjects = {pm.name: pm.subject for pm in plan.PREMORTEMS}
    for pm, info in decision["premortems"].items():
        out[pm] = {
            "name": subjects.get(pm, pm),
            "metric": info.get("metric"),
            "value": info.get("value"),
            "ci": info.get("ci"),
            "threshold": info.get("threshold"),
            "plan_verdict": info.get("plan_verdict"),
            "controlled_verdict": info.get("controlled_verdict"),
            "control": info.get("control"),
            "controlled": info.get("controlled"),
            "verdict": info.get("verdict"),
            "measured_verdict": info.get("measured_verdict", info.get("verdict")),
            "forced": bool(info.get("forced")),
            "n": info.get("n"),
        }
        if no_value(info):
            out[pm]["reason"] = str(info.get("reason") or NO_VALUE)
    return out


def build_statistics(
    decision: Mapping[str, Any],
    result_files: Sequence[str | Path],
    *,
    n_bootstrap: int,
    n_permutations: int,
    alpha: float,
    seed: int,
    primary_seed: int | None = None,
) -> dict[str, Any]:
    """The whole ``statistics.json``: the decision, the pre-mortems and the comparisons.

    The keywords are the ``analysis.statistics`` section with the study's ``seed`` (see
    :func:`experiment_statistics`).
    """
    stats = experiment_statistics(
        result_files,
        n_bootstrap=n_bootstrap,
        n_permutations=n_permutations,
        alpha=alpha,
        seed=seed,
        primary_seed=primary_seed,
    )
    return {
        "decision": {
            "criterion": decision.get("criterion"),
            "branches": list(decision["branches"]),
            "forced": list(decision.get("forced", [])),
            "disagree": list(decision.get("disagree", [])),
            "other_criterion": decision.get("other_criterion"),
        },
        "premortems": premortem_table(decision),
        **stats,
    }
