"""What the draft template sees (the abstract's slots are :mod:`.abstract`'s).

Everything is plain text here, except the LaTeX comment that carries the venue-selection rule;
the LaTeX template escapes what it prints. The plan
(:mod:`actspace.plan`) gives the pre-mortem behind each line of work, the paper title and topic of
each branch, the order of the experiments and the decision table.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from markupsafe import Markup

from actspace import plan
from actspace.analysis.paper.formatting import MISSING, join_words
from actspace.analysis.paper.rows import comparison_rows, criterion_rows, premortem_rows
from actspace.analysis.paper.strongest import choose_strongest

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


def _branches_text(branches: Sequence[str]) -> str:
    return ", ".join(f"{b} (abort)" if b == plan.ABORT else b for b in branches)


def decision_rows(premortems: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The plan's decision table, one row per verdict combination; the row that applied to the
    effective verdicts (INCONCLUSIVE counts as FAIL) is marked."""
    effective = {row["key"]: "PASS" if row["verdict"] == "PASS" else "FAIL" for row in premortems}
    applied = [effective.get(name) for name in plan.PREMORTEM_NAMES]
    return [
        {"verdicts": verdicts, "branches": _branches_text(branches), "applied": verdicts == applied}
        for verdicts, branches in plan.decision_table()
    ]


def latex_comment(text: str, width: int = 96) -> Markup:
    """``text`` as LaTeX comment lines (``% ...``): kept in the source, never typeset."""
    lines = textwrap.wrap(" ".join(str(text).split()), width) or [""]
    return Markup("\n".join(f"% {line}" for line in lines))


def _ids(entries: Any) -> list[str]:
    return [str(e.get("id") if isinstance(e, Mapping) else e) for e in entries or []]


def holm_context(statistics: Mapping[str, Any], comparisons: Sequence[Mapping[str, Any]]):
    """The Holm family as the Statistics section states it: its size, the tests left out of it
    (by name, with the reason statistics.json gives) and its rule."""
    holm = statistics.get("holm") or {}
    names = {str(row["id"]): row["name"] for row in comparisons}
    family = holm.get("family")
    excluded = []
    for entry in holm.get("excluded") or []:
        cid = _ids([entry])[0]
        reason = entry.get("reason") if isinstance(entry, Mapping) else None
        excluded.append({"name": names.get(cid, cid.replace("_", " ")), "reason": reason or ""})
    return {
        "n": len(family) if family is not None else holm.get("n_comparisons") or len(comparisons),
        "excluded": excluded,
        "rule": str(holm.get("rule") or "").strip(),
        "alpha": _scalar_text(float(holm.get("alpha", 0.05))),
    }


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
    order = list(plan.EXPERIMENT_NAMES)
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
    best_row = next((dict(r) for r in comparisons if r["id"] == strongest.get("id")), None)
    if best_row is not None and strongest.get("failed_criteria"):
        best_row["failed"] = criterion_rows(strongest["failed_criteria"])
    lead = plan.branch(strongest["branch"])
    holm_info = holm_context(statistics, comparisons)
    return {
        "title": lead.paper_title,
        "topic": lead.topic,
        "abstract": abstract.strip(),
        "venue": strongest["venue"],
        "alternative_venue": strongest["alternative_venue"],
        "branch": strongest["branch"],
        "rule_comment": latex_comment(
            "How the venue was chosen (also in paper.json, key 'rule'): " + strongest["rule"]
        ),
        "any_success": strongest["succeeded"],
        "closest": bool(strongest.get("closest", not strongest["succeeded"])),
        "selected_successes": [
            r for r in comparisons if r["success"] is True and r["held_out"] is False
        ],
        "best": best_row,
        "branches": [str(b) for b in decision.get("branches") or []],
        "forced": [str(k).upper() for k in decision.get("forced") or []],
        "criterion": str(decision.get("criterion") or MISSING),
        "other_criterion": (decision.get("other_criterion") or {}).get("criterion") or MISSING,
        "other_branches": [
            str(b) for b in (decision.get("other_criterion") or {}).get("branches") or []
        ],
        "premortems": premortems,
        "decision_labels": [pm.label for pm in plan.PREMORTEMS],
        "decision_rows": decision_rows(premortems),
        "plan_premortems": [pm.name for pm in plan.PREMORTEMS],
        "premortem_subjects": [pm.subject for pm in plan.PREMORTEMS],
        "comparisons": comparisons,
        "failures": [r for r in comparisons if r["negative"] or r["inconclusive"]],
        "successes": [r for r in comparisons if r["success"] is True],
        "inconclusive_premortems": [r for r in premortems if r["inconclusive"]],
        "experiments": experiments,
        "with_criteria": [r for r in comparisons if r["criteria"]],
        "holm": holm_info,
        "holm_alpha": holm_info["alpha"],
        "holm_n": holm_info["n"],
        "models": models,
        "tasks": tasks,
        "seeds": [str(s) for s in config.get("seeds") or [config.get("seed", 42)]],
        "citations": _citations(config),
        "figures": figure_entries(figures_manifest),
        "summary_tables": markdown_tables(summary_table_md or ""),
        "hyperparameters": flatten_config(config),
    }
