"""Phase 4: the paper draft, rendered from the statistics of the branches that ran.

The strongest result picks the line of work the paper leads with, and that line picks the venue
(:data:`VENUES`). Two kinds of template live in ``paper/templates``:

- ``abstract_{2A,2B,2C}.txt.j2``: plain-text abstracts, one per line of work, written as prose with
  bracketed slots such as ``[MODELS]`` or ``[CI]``. Jinja (standard delimiters) chooses between
  sentences (success, failure, no criterion); the slots are then filled from :func:`abstract_slots`.
  A slot the code does not know stays in the text, and :func:`unfilled_slots` reports it.
- ``draft.tex.j2``: the LaTeX draft, rendered with LaTeX-safe delimiters (``\\BLOCK{...}``,
  ``\\VAR{...}``, ``\\#{...}``) so that they never clash with TeX braces. Every ``\\VAR{...}`` is
  escaped for LaTeX unless it is already :class:`markupsafe.Markup` (the output of the
  ``latex_escape`` filter), so text from data can never inject TeX.

Numbers are formatted here, once: three significant digits, percentages for accuracy-like levels,
``p < 0.001`` below a thousandth, and ``n/a`` for anything missing.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from actspace.core.io import atomic_path, atomic_write_json, atomic_write_text, read_json

#: Venue pair per line of work: the first is the target, the second the alternative.
VENUES: dict[str, tuple[str, str]] = {
    "2A": ("NeurIPS", "ICLR"),
    "2B": ("ACL", "EMNLP"),
    "2C": ("ICLR", "ICML"),
}

#: Branch of each experiment, for comparisons that do not name their branch.
EXPERIMENT_BRANCH: dict[str, str] = {
    "cross_model_extended": "2A",
    "activation_transfer": "2A",
    "error_prediction_extended": "2B",
    "unsupervised_error": "2B",
    "abstention": "2B",
    "patching_layers": "2C",
    "behavior_edit": "2C",
    "patching_vs_prompting": "2C",
}

#: The pre-mortem whose verdict opens each branch (DESIGN.md decision table).
BRANCH_PREMORTEM: dict[str, str] = {"2A": "pm1", "2B": "pm2", "2C": "pm3"}

#: What each line of work is about, for titles and prose.
BRANCH_TOPICS: dict[str, str] = {
    "2A": "cross-model similarity and activation transfer",
    "2B": "predicting a model's errors from its activations",
    "2C": "activation patching and behavior editing",
}

BRANCH_TITLES: dict[str, str] = {
    "2A": "Do Small Language Models Share an Activation Space? "
    "Cross-Model Similarity and Activation Transfer under a Gated Protocol",
    "2B": "Reading a Language Model's Errors from Its Activations: "
    "Supervised and Unsupervised Probes, and Abstention",
    "2C": "Where One Layer Carries the Answer: "
    "Activation Patching, Steering and Prompting under a Gated Protocol",
}

STRONGEST_RULE = (
    "Among the comparisons that met their pre-registered success criterion, the strongest result "
    "is the one with the smallest Holm-corrected p-value (ties: the larger absolute effect size, "
    "then the comparison id); if none met its criterion, the same order is applied to all "
    "comparisons, and the draft says that no experiment met its success criterion. A missing "
    "Holm-corrected p-value ranks after every present one. The line of work (2A, 2B, 2C) of the "
    "strongest result selects the venue: NeurIPS (alternative ICLR) for 2A, ACL (alternative "
    "EMNLP) for 2B, ICLR (alternative ICML) for 2C."
)

#: Default location of the templates: paper/templates at the repository root.
DEFAULT_TEMPLATES = Path(__file__).resolve().parents[2] / "paper" / "templates"

MISSING = "n/a"

#: Bibliography keys for well-known hub models and task types (cited in Methods when configured).
MODEL_CITATIONS: dict[str, str] = {
    "gpt2": "radford2019language",
    "pythia": "biderman2023pythia",
    "opt-": "zhang2022opt",
}
TASK_CITATIONS: dict[str, str] = {
    "hellaswag": "zellers2019hellaswag",
    "truthfulqa_mc1": "lin2022truthfulqa",
    "truthfulqa_mc2": "lin2022truthfulqa",
    "mmlu": "hendrycks2021measuring",
}

#: The decision table of the gate (PM1, PM2, PM3) -> branches; INCONCLUSIVE counts as FAIL.
DECISION_TABLE: tuple[tuple[str, str, str, str], ...] = (
    ("FAIL", "FAIL", "FAIL", "X (abort)"),
    ("FAIL", "FAIL", "PASS", "2C"),
    ("FAIL", "PASS", "FAIL", "2B"),
    ("FAIL", "PASS", "PASS", "2B, 2C"),
    ("PASS", "FAIL", "FAIL", "2A"),
    ("PASS", "FAIL", "PASS", "2A, 2C"),
    ("PASS", "PASS", "FAIL", "2A, 2B"),
    ("PASS", "PASS", "PASS", "2A, 2B, 2C"),
)

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# --------------------------------------------------------------------------------------------
# Formatting


def format_number(value: Any, *, percent: bool = False) -> str:
    """Three significant digits (``0.400``, ``1.20``, ``15.3``, ``150``); ``n/a`` when missing.

    ``percent`` shows a proportion as a percentage (``0.625`` -> ``62.5%``).
    """
    if value is None or isinstance(value, bool):
        return MISSING
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return MISSING
    if percent:
        return format_number(100.0 * x) + "%"
    if x == 0:
        return "0"
    if isinstance(value, int) or (abs(x) >= 100 and x.is_integer()):
        return f"{round(x):,}"
    if abs(x) < 1e-3:
        return f"{x:.2e}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    decimals = 2 - math.floor(math.log10(abs(x)))
    return f"{x:.{decimals}f}"


def format_p(p: Any) -> str:
    """A p-value as ``0.031`` (three decimals) or ``< 0.001``; ``n/a`` when missing."""
    if p is None or isinstance(p, bool):
        return MISSING
    x = float(p)
    if not math.isfinite(x):
        return MISSING
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def p_expression(p: Any, symbol: str = "p") -> str:
    """``p = 0.031``, ``p < 0.001`` or ``p n/a``, for running text."""
    text = format_p(p)
    if text == MISSING:
        return f"{symbol} {MISSING}"
    return f"{symbol} {text}" if text.startswith("<") else f"{symbol} = {text}"


def is_percentage_metric(metric: str | None, values: Iterable[Any] = ()) -> bool:
    """Whether a metric is a level of an accuracy or rate, shown as a percentage.

    Differences, gains, shifts and ratios stay in their own units (an accuracy gain in points is
    already a percentage-point number), and so does anything outside [0, 1].
    """
    if not metric:
        return False
    name = metric.lower()
    level = any(word in name for word in ("accuracy", "rate", "coverage", "proportion", "share"))
    relative = any(
        word in name for word in ("point", "gain", "difference", "shift", "ratio", "change in")
    )
    if not level or relative:
        return False
    numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return all(0.0 <= v <= 1.0 for v in numbers)


def format_ci(ci: Sequence[Any] | None, *, percent: bool = False) -> str:
    """``[0.260, 0.550]``; ``n/a`` when the interval or either bound is missing."""
    if not ci or len(ci) != 2 or any(bound is None for bound in ci):
        return MISSING
    low, high = (format_number(bound, percent=percent) for bound in ci)
    if MISSING in (low, high):
        return MISSING
    return f"[{low}, {high}]"


def format_effect(effect: Mapping[str, Any] | None) -> str:
    """``d_z = 0.110``; ``n/a`` when missing."""
    if not effect or effect.get("value") is None:
        return MISSING
    name = effect.get("name") or "effect size"
    return f"{name} = {format_number(effect['value'])}"


def number_word(n: int) -> str:
    """``two`` for small counts, digits otherwise."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def count_word(n: int) -> str:
    """``none`` for zero, else :func:`number_word` (``none met``, ``two did not``)."""
    return "none" if n == 0 else number_word(n)


def join_words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = [str(item) for item in items]
    if not items:
        return MISSING
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


# --------------------------------------------------------------------------------------------
# LaTeX escaping and leftover detection

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    # Braced so that a cell or line starting with "[" is never read as an optional argument.
    "[": "{[}",
    "]": "{]}",
    '"': "''",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "±": r"$\pm$",
    "×": r"$\times$",
    "→": r"$\rightarrow$",
    "−": "-",
    "–": "--",
    "—": "---",
    "…": r"\ldots{}",
    "‘": "`",
    "’": "'",
    "“": "``",
    "”": "''",
}
_LATEX_PATTERN = re.compile("|".join(re.escape(char) for char in _LATEX_SPECIALS))


def latex_escape(value: Any) -> Markup:
    """Escape text for LaTeX; ``None`` becomes ``n/a``. Idempotent on its own output (Markup)."""
    if isinstance(value, Markup):
        return value
    text = MISSING if value is None else str(value)
    return Markup(_LATEX_PATTERN.sub(lambda match: _LATEX_SPECIALS[match.group(0)], text))


def latex_breakable(value: Any) -> Markup:
    """Escape, and allow line breaks after dots, slashes and underscores (long keys, ids)."""
    text = str(latex_escape(value))
    text = re.sub(r"(\.(?=[A-Za-z])|/|\\_)", r"\1\\allowbreak{}", text)
    return Markup(text)


_SLOT = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")
_ESCAPED_SLOT = re.compile(r"\{\[\}([A-Z][A-Z0-9_]*)\{\]\}")
_JINJA_REMNANTS = (
    re.compile(r"\{\{-?\s*[A-Za-z_][\w.]*"),
    re.compile(r"\{%-?\s*(?:if|elif|else|endif|for|endfor|set|macro|block|raw)\b"),
    re.compile(r"\\VAR\{"),
    re.compile(r"\\BLOCK\{"),
)


def unfilled_slots(text: str) -> list[str]:
    """Leftover ``[UPPER_CASE]`` slots (also LaTeX-escaped) and unrendered Jinja, in order."""
    found = [f"[{m.group(1)}]" for m in _SLOT.finditer(text)]
    found += [f"[{m.group(1)}]" for m in _ESCAPED_SLOT.finditer(text)]
    for pattern in _JINJA_REMNANTS:
        found += [m.group(0) for m in pattern.finditer(text)]
    return list(dict.fromkeys(found))


def fill_slots(text: str, slots: Mapping[str, str]) -> str:
    """Replace each known ``[SLOT]`` by its value in one pass; unknown slots stay visible."""
    return _SLOT.sub(lambda m: str(slots.get(m.group(1), m.group(0))), text)


# --------------------------------------------------------------------------------------------
# The strongest result


def _branch_of(comparison: Mapping[str, Any]) -> str:
    branch = comparison.get("branch") or EXPERIMENT_BRANCH.get(comparison.get("experiment", ""))
    if branch not in VENUES:
        raise ValueError(
            f"comparison {comparison.get('id')!r} has no known branch "
            f"(got {branch!r}; allowed: {', '.join(VENUES)})"
        )
    return branch


def _abs_effect(comparison: Mapping[str, Any]) -> float:
    effect = comparison.get("effect_size") or {}
    value = effect.get("value") if isinstance(effect, Mapping) else None
    if value is None or not math.isfinite(float(value)):
        return -math.inf
    return abs(float(value))


def _strength_key(comparison: Mapping[str, Any]) -> tuple[bool, float, float, str]:
    p = comparison.get("p_holm")
    missing = p is None or not math.isfinite(float(p))
    return (missing, 0.0 if missing else float(p), -_abs_effect(comparison), str(comparison["id"]))


def choose_strongest(statistics: Mapping[str, Any]) -> dict[str, Any]:
    """Pick the result the paper leads with, and with it the line of work and the venue.

    Rule (:data:`STRONGEST_RULE`): among comparisons whose ``success`` is true, the smallest
    Holm-corrected p (ties: the larger |effect size|, then the id); if none succeeded, the same
    order over all comparisons. A comparison that met its criterion beats any that did not, however
    small the other's p: the criterion was fixed before the data, the p-value was not.

    Returns ``{comparison, id, branch, venue, alternative_venue, succeeded, rule}``.
    Raises ValueError when there are no comparisons (the abort path writes no paper).
    """
    comparisons = list(statistics.get("comparisons") or [])
    if not comparisons:
        raise ValueError("statistics has no comparisons: no experiment branch ran, so no paper")
    for index, comparison in enumerate(comparisons):
        if "id" not in comparison:
            raise ValueError(f"comparison {index} has no 'id'")
    succeeded = [c for c in comparisons if c.get("success") is True]
    best = min(succeeded or comparisons, key=_strength_key)
    branch = _branch_of(best)
    venue, alternative = VENUES[branch]
    return {
        "comparison": dict(best),
        "id": best["id"],
        "branch": branch,
        "venue": venue,
        "alternative_venue": alternative,
        "succeeded": bool(succeeded),
        "rule": STRONGEST_RULE,
    }


# --------------------------------------------------------------------------------------------
# What the templates see


def _model_display(name: str, spec: Mapping[str, Any] | None, *, detail: bool = False) -> str:
    """A hub model by its id, others by name; ``detail`` adds a built-in organism's family."""
    spec = spec or {}
    if spec.get("source") == "hub" and spec.get("id"):
        return str(spec["id"])
    if detail and spec.get("source") == "organism":
        family = spec.get("family")
        return f"{name} (built-in organism, {family} family)" if family else name
    return name


def _task_display(name: str, spec: Mapping[str, Any] | None) -> str:
    """``facts (built-in)``, ``truthfulqa (truthfulqa_mc1)``, or the name when it is the type."""
    kind = (spec or {}).get("type")
    if kind == "builtin":
        return f"{name} (built-in)"
    return name if not kind or kind == name else f"{name} ({kind})"


def _listed(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(item) for item in value if isinstance(item, str)]
    return []


def experiment_models(config: Mapping[str, Any], experiment: str | None) -> list[str]:
    """The model names an experiment's configuration names, or every configured model."""
    section = (config.get("experiments") or {}).get(experiment or "", {}) or {}
    names: list[str] = []
    for key in ("models", "source", "target", "model"):
        names += [name for name in _listed(section.get(key)) if name not in names]
    return names or list((config.get("models") or {}).keys())


def experiment_tasks(config: Mapping[str, Any], experiment: str | None) -> list[str]:
    """The task names an experiment's configuration names, or every configured task."""
    section = (config.get("experiments") or {}).get(experiment or "", {}) or {}
    names: list[str] = []
    for key in ("tasks", "task", "side_task"):
        names += [name for name in _listed(section.get(key)) if name not in names]
    return names or list((config.get("tasks") or {}).keys())


def models_text(config: Mapping[str, Any], names: Sequence[str]) -> str:
    """``gpt2, EleutherAI/pythia-70m and tiny_gpt2``: hub models by id, the others by name."""
    specs = config.get("models") or {}
    return join_words([_model_display(name, specs.get(name)) for name in names])


def _premortem_forced(key: str, premortem: Mapping[str, Any], decision: Mapping[str, Any]) -> bool:
    forced = {str(name).lower() for name in decision.get("forced") or []}
    return bool(premortem.get("forced")) or key.lower() in forced


def premortem_rows(
    statistics: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One formatted row per pre-mortem, forced verdicts marked.

    ``verdict`` is the effective verdict (measured, or forced); where a pre-mortem is marked forced
    but its record still carries the measured verdict, the forced one is taken from the
    configuration's ``gate.force``.
    """
    decision = statistics.get("decision") or {}
    force = ((config or {}).get("gate") or {}).get("force") or {}
    rows = []
    for key, pm in sorted((statistics.get("premortems") or {}).items()):
        metric = pm.get("metric")
        percent = is_percentage_metric(metric, [pm.get("value"), *(pm.get("ci") or [])])
        forced = _premortem_forced(key, pm, decision)
        verdict = pm.get("verdict") or MISSING
        measured = pm.get("measured_verdict") or verdict
        if forced and force.get(key) in ("PASS", "FAIL"):
            verdict = force[key]
        rows.append(
            {
                "key": key,
                "label": key.upper(),
                "name": pm.get("name") or key,
                "metric": metric or MISSING,
                "value": format_number(pm.get("value"), percent=percent),
                "ci": format_ci(pm.get("ci"), percent=percent),
                "threshold": format_number(pm.get("threshold"), percent=percent),
                "verdict": verdict,
                "measured_verdict": measured,
                "forced": forced,
                "inconclusive": "INCONCLUSIVE" in (verdict, measured),
                "n": format_number(pm.get("n")),
            }
        )
    return rows


def comparison_rows(statistics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One formatted row per comparison, with what the Analysis section needs to discuss it."""
    alpha = float((statistics.get("holm") or {}).get("alpha", 0.05))
    rows = []
    for c in statistics.get("comparisons") or []:
        ci = c.get("ci")
        percent = is_percentage_metric(c.get("metric"), [c.get("value"), *(ci or [])])
        p_holm = c.get("p_holm")
        significant = p_holm is not None and float(p_holm) < alpha
        ci_has_zero = (
            bool(ci) and len(ci) == 2 and None not in ci and float(ci[0]) <= 0.0 <= float(ci[1])
        )
        seeds = c.get("seeds") or {}
        rows.append(
            {
                "id": c.get("id"),
                "experiment": c.get("experiment") or c.get("id"),
                "branch": c.get("branch") or EXPERIMENT_BRANCH.get(c.get("experiment", ""), ""),
                "claim": c.get("claim")
                or f"{c.get('experiment') or c.get('id')} shows the effect it was designed to find",
                "metric": c.get("metric") or MISSING,
                "value": format_number(c.get("value"), percent=percent),
                "ci": format_ci(ci, percent=percent),
                "has_ci": format_ci(ci, percent=percent) != MISSING,
                "ci_has_zero": ci_has_zero,
                "test": c.get("test") or MISSING,
                "p": format_p(c.get("p_value")),
                "p_text": p_expression(c.get("p_value")),
                "p_holm": format_p(p_holm),
                "p_holm_text": p_expression(p_holm, "Holm-corrected p"),
                "has_p": c.get("p_value") is not None,
                "has_p_holm": p_holm is not None,
                "significant": significant,
                "effect": format_effect(c.get("effect_size")),
                "n": format_number(c.get("n")),
                "success": c.get("success"),
                "success_rule": c.get("success_rule") or MISSING,
                "has_rule": bool(c.get("success_rule")),
                "verdict": c.get("verdict"),
                "n_seeds": len(seeds),
                "seed_mean": format_number(c.get("seed_mean"), percent=percent),
                "seed_sd": format_number(c.get("seed_sd"), percent=percent),
                "source": c.get("source") or MISSING,
                "negative": c.get("success") is False,
                # No criterion and not significant after correction: neither effect nor absence.
                "inconclusive": c.get("verdict") == "INCONCLUSIVE"
                or (c.get("success") is None and p_holm is not None and not significant),
            }
        )
    return rows


def _count_phrase(n: int, singular: str, plural: str) -> str:
    return f"{number_word(n)} {singular if n == 1 else plural}"


def abstract_slots(statistics: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, str]:
    """The values of the abstracts' bracketed slots, as plain text.

    Every slot is filled from ``statistics.json`` (the strongest comparison, its branch's
    pre-mortem, the Holm family) or the configuration (models, tasks, seeds).
    """
    strongest = choose_strongest(statistics)
    best = strongest["comparison"]
    row = next(r for r in comparison_rows(statistics) if r["id"] == strongest["id"])
    pm_key = BRANCH_PREMORTEM[strongest["branch"]]
    pm_row = next((r for r in premortem_rows(statistics, config) if r["key"] == pm_key), None)
    comparisons = statistics.get("comparisons") or []
    n_success = sum(1 for c in comparisons if c.get("success") is True)
    n_failed = sum(1 for c in comparisons if c.get("success") is False)
    n_open = len(comparisons) - n_success - n_failed
    holm = statistics.get("holm") or {}
    n_holm = holm.get("n_comparisons") or len(comparisons)
    models = experiment_models(config, best.get("experiment"))
    tasks = experiment_tasks(config, best.get("experiment"))
    seeds = config.get("seeds") or [config.get("seed", 42)]
    branches = (statistics.get("decision") or {}).get("branches") or [strongest["branch"]]
    return {
        "MODELS": models_text(config, models),
        "N_MODELS": _count_phrase(len(models), "language model", "language models"),
        "TASKS": join_words(tasks),
        "N_TASKS": _count_phrase(len(tasks), "task", "tasks"),
        "CLAIM": row["claim"].rstrip("."),
        "METRIC": row["metric"],
        "VALUE": row["value"],
        "CI": row["ci"],
        "P": row["p_text"],
        "P_HOLM": row["p_holm_text"],
        "TEST": row["test"],
        "EFFECT": row["effect"],
        "N": row["n"],
        "SUCCESS_RULE": row["success_rule"],
        "COMPARISON": str(strongest["id"]),
        "N_COMPARISONS": _count_phrase(len(comparisons), "comparison", "comparisons"),
        "N_HOLM": str(n_holm),
        "ALPHA": format_number(holm.get("alpha", 0.05)),
        "N_SUCCESS": count_word(n_success),
        "N_FAILED": count_word(n_failed),
        "N_OPEN": count_word(n_open),
        "N_SEEDS": _count_phrase(len(seeds), "seed", "seeds"),
        "SEED_MEAN": row["seed_mean"],
        "SEED_SD": row["seed_sd"],
        "BRANCHES": join_words([str(b) for b in branches]),
        "PM_LABEL": pm_row["label"] if pm_row else pm_key.upper(),
        "PM_NAME": pm_row["name"] if pm_row else MISSING,
        "PM_METRIC": pm_row["metric"] if pm_row else MISSING,
        "PM_VALUE": pm_row["value"] if pm_row else MISSING,
        "PM_CI": pm_row["ci"] if pm_row else MISSING,
        "PM_THRESHOLD": pm_row["threshold"] if pm_row else MISSING,
        "PM_VERDICT": pm_row["measured_verdict"] if pm_row else MISSING,
        "PM_EFFECTIVE": pm_row["verdict"] if pm_row else MISSING,
    }


def abstract_context(statistics: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """What the abstract templates' Jinja conditions test (the prose itself lives in slots)."""
    strongest = choose_strongest(statistics)
    row = next(r for r in comparison_rows(statistics) if r["id"] == strongest["id"])
    pm_key = BRANCH_PREMORTEM[strongest["branch"]]
    pm_row = next((r for r in premortem_rows(statistics, config) if r["key"] == pm_key), None)
    comparisons = statistics.get("comparisons") or []
    return {
        "success": row["success"],
        "any_success": strongest["succeeded"],
        "has_ci": row["has_ci"],
        "has_p": row["has_p"],
        "has_p_holm": row["has_p_holm"],
        "has_effect": row["effect"] != MISSING,
        "has_n": row["n"] != MISSING,
        "significant": row["significant"],
        "ci_has_zero": row["ci_has_zero"],
        "has_seeds": row["n_seeds"] > 1 and row["seed_sd"] != MISSING,
        "has_premortem": pm_row is not None,
        "pm_forced": bool(pm_row and pm_row["forced"]),
        "pm_inconclusive": bool(pm_row and pm_row["inconclusive"]),
        "n_comparisons": len(comparisons),
        "n_failed": sum(1 for c in comparisons if c.get("success") is False),
        "n_open": sum(1 for c in comparisons if c.get("success") is None),
    }


def _templates(templates_dir: str | Path | None) -> Path:
    folder = Path(templates_dir) if templates_dir is not None else DEFAULT_TEMPLATES
    if not folder.is_dir():
        raise ValueError(f"templates folder not found: {folder}")
    return folder


def _text_environment(folder: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def _latex_finalize(value: Any) -> Any:
    """Autoescape for LaTeX: everything a ``\\VAR{}`` prints is escaped unless already Markup."""
    return value if isinstance(value, Markup) else latex_escape(value)


def latex_environment(folder: str | Path) -> jinja2.Environment:
    """A Jinja environment whose delimiters do not clash with LaTeX, escaping by default."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(folder)),
        block_start_string=r"\BLOCK{",
        block_end_string="}",
        variable_start_string=r"\VAR{",
        variable_end_string="}",
        comment_start_string=r"\#{",
        comment_end_string="}",
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_latex_finalize,
    )
    env.filters["latex_escape"] = latex_escape
    env.filters["breakable"] = latex_breakable
    env.filters["and_join"] = join_words
    env.filters["words"] = number_word
    return env


def _render(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateNotFound as error:
        raise ValueError(f"template not found: {error.name} in {env.loader.searchpath}") from None
    except jinja2.TemplateError as error:
        raise ValueError(f"template {name}: {error}") from None


def _tidy_paragraphs(text: str) -> str:
    """Collapse each paragraph's whitespace (templates are wrapped for reading)."""
    paragraphs = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p) + "\n"


def render_abstract(
    statistics: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    templates_dir: str | Path | None = None,
) -> str:
    """The abstract (plain text) for the strongest result's line of work, slots filled."""
    folder = _templates(templates_dir)
    branch = choose_strongest(statistics)["branch"]
    text = _render(
        _text_environment(folder), f"abstract_{branch}.txt.j2", abstract_context(statistics, config)
    )
    return _tidy_paragraphs(fill_slots(text, abstract_slots(statistics, config)))


def _scalar_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Every leaf of the configuration as (dotted key, value text), in the configuration's order.

    Lists of scalars stay one value (``[42, 123]``); lists of mappings are indexed (``key.0.x``);
    empty mappings and lists are kept (``{}``, ``[]``) so that no key silently disappears.
    """
    rows: list[tuple[str, str]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += flatten_config(value, f"{name}.") if value else [(name, "{}")]
        elif isinstance(value, list | tuple):
            if any(isinstance(item, Mapping | list | tuple) for item in value):
                for index, item in enumerate(value):
                    if isinstance(item, Mapping):
                        rows += flatten_config(item, f"{name}.{index}.")
                    else:
                        rows.append((f"{name}.{index}", _scalar_text(item)))
            else:
                rows.append((name, "[" + ", ".join(_scalar_text(v) for v in value) + "]"))
        else:
            rows.append((name, _scalar_text(value)))
    return rows


def markdown_tables(markdown: str) -> list[dict[str, Any]]:
    """The pipe tables of a Markdown text, as {header, rows}; other text is ignored.

    Emphasis and code marks are dropped: the cells are escaped for LaTeX by the template.
    """
    tables: list[dict[str, Any]] = []
    block: list[list[str]] = []

    def flush() -> None:
        if len(block) >= 2 and all(re.fullmatch(r":?-{2,}:?", c.strip()) for c in block[1]):
            width = len(block[0])
            body = [(r + [""] * width)[:width] for r in block[2:]]
            tables.append({"header": block[0], "rows": body})
        block.clear()

    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [re.sub(r"\*\*|__|`", "", c).strip() for c in stripped.strip("|").split("|")]
            block.append(cells)
        else:
            flush()
    flush()
    return tables


def _citations(config: Mapping[str, Any]) -> dict[str, list[str]]:
    models, tasks = [], []
    for spec in (config.get("models") or {}).values():
        model_id = str((spec or {}).get("id", "")).lower()
        for needle, key in MODEL_CITATIONS.items():
            if (spec or {}).get("source") == "hub" and needle in model_id and key not in models:
                models.append(key)
    for spec in (config.get("tasks") or {}).values():
        key = TASK_CITATIONS.get(str((spec or {}).get("type", "")))
        if key and key not in tasks:
            tasks.append(key)
    return {"models": models, "tasks": tasks}


def _figure_target(manifest_entry: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(source path relative to the manifest folder, file name beside the draft) of a figure."""
    source = manifest_entry.get("pdf") or manifest_entry.get("png")
    if not source:
        return None, None
    path = Path(str(source))
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem)
    return str(path), f"{stem}{path.suffix.lower()}"


def figure_entries(figures_manifest: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The manifest's figures as the draft shows them: file beside the draft, caption, label."""
    entries = []
    for index, figure in enumerate(figures_manifest or []):
        source, target = _figure_target(figure)
        if target is None:
            continue
        name = str(figure.get("name") or Path(target).stem)
        entries.append(
            {
                "name": name,
                "label": "fig:" + (re.sub(r"[^A-Za-z0-9_-]", "-", name) or str(index)),
                "source": source,
                "file": f"figures/{target}",
                "caption": figure.get("caption") or name.replace("_", " "),
            }
        )
    return entries


def _decision_rows(premortems: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    effective = {row["key"]: "PASS" if row["verdict"] == "PASS" else "FAIL" for row in premortems}
    applied = tuple(effective.get(key) for key in ("pm1", "pm2", "pm3"))
    return [
        {"pm1": a, "pm2": b, "pm3": c, "branches": branches, "applied": (a, b, c) == applied}
        for a, b, c, branches in DECISION_TABLE
    ]


def draft_context(
    statistics: Mapping[str, Any],
    figures_manifest: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any],
    summary_table_md: str,
    abstract: str,
) -> dict[str, Any]:
    """Everything the draft template reads; plain text, escaped by the template."""
    strongest = choose_strongest(statistics)
    comparisons = comparison_rows(statistics)
    premortems = premortem_rows(statistics, config)
    decision = statistics.get("decision") or {}
    holm = statistics.get("holm") or {}
    order = list(EXPERIMENT_BRANCH)
    experiments = sorted(
        {row["experiment"] for row in comparisons},
        key=lambda name: (order.index(name) if name in order else len(order), name),
    )
    models = [
        {
            "name": name,
            "display": _model_display(name, spec, detail=True),
            "source": (spec or {}).get("source"),
        }
        for name, spec in (config.get("models") or {}).items()
    ]
    tasks = [
        {"name": name, "display": _task_display(name, spec)}
        for name, spec in (config.get("tasks") or {}).items()
    ]
    best_row = next(r for r in comparisons if r["id"] == strongest["id"])
    return {
        "title": BRANCH_TITLES[strongest["branch"]],
        "topic": BRANCH_TOPICS[strongest["branch"]],
        "abstract": abstract.strip(),
        "venue": strongest["venue"],
        "alternative_venue": strongest["alternative_venue"],
        "branch": strongest["branch"],
        "rule": strongest["rule"],
        "any_success": strongest["succeeded"],
        "best": best_row,
        "branches": [str(b) for b in decision.get("branches") or []],
        "forced": [str(k).upper() for k in decision.get("forced") or []],
        "premortems": premortems,
        "decision_rows": _decision_rows(premortems),
        "comparisons": comparisons,
        "failures": [r for r in comparisons if r["negative"] or r["inconclusive"]],
        "successes": [r for r in comparisons if r["success"] is True],
        "inconclusive_premortems": [r for r in premortems if r["inconclusive"]],
        "experiments": experiments,
        "holm_alpha": _scalar_text(float(holm.get("alpha", 0.05))),
        "holm_n": holm.get("n_comparisons") or len(comparisons),
        "models": models,
        "tasks": tasks,
        "seeds": [str(s) for s in config.get("seeds") or [config.get("seed", 42)]],
        "citations": _citations(config),
        "figures": figure_entries(figures_manifest),
        "summary_tables": markdown_tables(summary_table_md or ""),
        "hyperparameters": flatten_config(config),
    }


def render_draft(
    statistics: Mapping[str, Any],
    figures_manifest: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any],
    summary_table_md: str,
    *,
    templates_dir: str | Path | None = None,
    abstract: str | None = None,
) -> str:
    """The LaTeX draft for the venue the strongest result selects."""
    folder = _templates(templates_dir)
    if abstract is None:
        abstract = render_abstract(statistics, config, templates_dir=folder)
    context = draft_context(statistics, figures_manifest, config, summary_table_md, abstract)
    return _render(latex_environment(folder), "draft.tex.j2", context)


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def write_paper(
    statistics_path: str | Path,
    figures_manifest_path: str | Path | None,
    config_path: str | Path,
    templates_dir: str | Path,
    bib_path: str | Path,
    output_dir: str | Path,
    *,
    summary_table_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write abstract.txt, draft.tex, related_work.bib, figures/ and paper.json to ``output_dir``.

    ``summary_table_path`` defaults to ``summary_table.md`` beside the statistics (optional).
    Raises ValueError when an input is missing or a template leaves a slot unfilled; nothing is
    written until both texts are complete. ``paper.json`` is written last. Returns its content.
    """
    statistics_path, config_path, bib_path = (
        Path(statistics_path),
        Path(config_path),
        Path(bib_path),
    )
    output = Path(output_dir)
    for label, path in (
        ("statistics", statistics_path),
        ("config", config_path),
        ("bib", bib_path),
    ):
        if not path.is_file():
            raise ValueError(f"{label} file not found: {path}")
    statistics = read_json(statistics_path)
    config = read_json(config_path)
    manifest: list[dict[str, Any]] = []
    figures_root = None
    if figures_manifest_path is not None:
        figures_manifest_path = Path(figures_manifest_path)
        if not figures_manifest_path.is_file():
            raise ValueError(f"figures manifest not found: {figures_manifest_path}")
        manifest = read_json(figures_manifest_path)
        if not isinstance(manifest, list):
            raise ValueError(f"{figures_manifest_path}: expected a list of figures")
        figures_root = figures_manifest_path.parent
    if summary_table_path is None:
        summary_table_path = statistics_path.parent / "summary_table.md"
        summary_md = summary_table_path.read_text("utf-8") if summary_table_path.is_file() else ""
    else:
        if not Path(summary_table_path).is_file():
            raise ValueError(f"summary table not found: {summary_table_path}")
        summary_md = Path(summary_table_path).read_text("utf-8")

    abstract = render_abstract(statistics, config, templates_dir=templates_dir)
    draft = render_draft(
        statistics, manifest, config, summary_md, templates_dir=templates_dir, abstract=abstract
    )
    for name, text in (("abstract.txt", abstract), ("draft.tex", draft)):
        leftover = unfilled_slots(text)
        if leftover:
            raise ValueError(f"{name}: unfilled template slots: {', '.join(leftover)}")

    copies = []
    for entry in figure_entries(manifest):
        source = figures_root / entry["source"] if figures_root else Path(entry["source"])
        if not source.is_file():
            raise ValueError(f"figure {entry['name']!r}: file not found: {source}")
        copies.append((source, output / entry["file"]))

    for source, target in copies:
        _copy_atomic(source, target)
    _copy_atomic(bib_path, output / "related_work.bib")
    atomic_write_text(output / "abstract.txt", abstract)
    atomic_write_text(output / "draft.tex", draft)
    strongest = choose_strongest(statistics)
    summary = {
        "venue": strongest["venue"],
        "alternative_venue": strongest["alternative_venue"],
        "branch": strongest["branch"],
        "strongest_comparison": strongest["id"],
        "any_success": strongest["succeeded"],
        "rule": strongest["rule"],
        "branches": (statistics.get("decision") or {}).get("branches") or [],
        "figures": [entry["file"] for entry in figure_entries(manifest)],
    }
    atomic_write_json(output / "paper.json", summary)
    return summary
