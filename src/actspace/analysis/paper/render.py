"""Rendering and writing the paper: the templates (package data), the Jinja environments, the files.

Two kinds of template live in ``actspace/templates`` (found through :mod:`importlib.resources`, so
an installed package finds them):

- ``branches/<branch>/abstract.txt.j2``: plain-text abstracts, one per line of work, written as
  prose with bracketed slots such as ``[MODELS]`` or ``[CI]``. Jinja (standard delimiters) chooses
  between sentences (success, failure, no criterion); the slots are then filled from
  :func:`~actspace.analysis.paper.context.abstract_slots`. A slot the code does not know stays in
  the text, and :func:`~actspace.analysis.paper.formatting.unfilled_slots` reports it.
- ``draft.tex.j2``: the LaTeX draft, rendered with LaTeX-safe delimiters (``\\BLOCK{...}``,
  ``\\VAR{...}``, ``\\#{...}``) so that they never clash with TeX braces. Every ``\\VAR{...}`` is
  escaped for LaTeX unless it is already :class:`markupsafe.Markup` (the output of the
  ``latex_escape`` filter), so text from data can never inject TeX. It includes one block per
  line of work (``branches/<branch>/introduction.tex.j2``, ``contribution.tex.j2``), per
  pre-mortem (``premortems/<name>.tex.j2``) and per experiment (``experiments/<name>.tex.j2``),
  by the names in the plan.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from actspace.analysis.paper.abstract import abstract_context, abstract_slots
from actspace.analysis.paper.context import draft_context, figure_entries
from actspace.analysis.paper.formatting import (
    count_phrase,
    fill_slots,
    join_words,
    latex_breakable,
    latex_escape,
    latex_prose,
    number_word,
    unfilled_slots,
)
from actspace.analysis.paper.strongest import choose_strongest
from actspace.core.io import atomic_path, atomic_write_json, atomic_write_text, read_json

#: The plan's limit on the abstract's length, in words.
ABSTRACT_WORDS = 200
#: How many versions of the abstract the templates can write, from full (0) to shortest.
BREVITY_LEVELS = 3


def default_templates() -> Path:
    """The package's templates folder (``actspace/templates``)."""
    return Path(str(resources.files("actspace") / "templates"))


def default_bibliography() -> Path:
    """The package's bibliography (``actspace/templates/related_work.bib``)."""
    return default_templates() / "related_work.bib"


def _templates(templates_dir: str | Path | None) -> Path:
    folder = Path(templates_dir) if templates_dir is not None else default_templates()
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
    env.filters["prose"] = latex_prose
    env.filters["breakable"] = latex_breakable
    env.filters["and_join"] = join_words
    env.filters["words"] = number_word
    env.filters["count"] = count_phrase
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
    """The abstract (plain text) for the strongest result's line of work, slots filled.

    The plan allows :data:`ABSTRACT_WORDS` words. The templates drop their optional sentences
    (``brevity`` 1: the tally and the closing line; 2: also the pre-mortem's numbers) only when
    the full text would be longer, as long model lists or criterion rules can make it.
    """
    folder = _templates(templates_dir)
    branch = choose_strongest(statistics)["branch"]
    env = _text_environment(folder)
    context = abstract_context(statistics, config)
    slots = abstract_slots(statistics, config)
    for brevity in range(BREVITY_LEVELS):
        text = _render(env, f"branches/{branch}/abstract.txt.j2", {**context, "brevity": brevity})
        text = _tidy_paragraphs(fill_slots(text, slots))
        if word_count(text) <= ABSTRACT_WORDS:
            break
    return text


def word_count(text: str) -> int:
    """Words as a reader counts them: runs of characters between spaces."""
    return len(text.split())


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
    templates_dir: str | Path | None,
    bib_path: str | Path | None,
    output_dir: str | Path,
    *,
    summary_table_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write abstract.txt, draft.tex, related_work.bib, figures/ and paper.json to ``output_dir``.

    ``templates_dir`` and ``bib_path`` default (None) to the package's templates and bibliography.
    ``summary_table_path`` defaults to ``summary_table.md`` beside the statistics (optional).
    Raises ValueError when an input is missing or a template leaves a slot unfilled; nothing is
    written until both texts are complete. ``paper.json`` is written last. Returns its content.
    """
    statistics_path, config_path = Path(statistics_path), Path(config_path)
    bib_path = Path(bib_path) if bib_path is not None else default_bibliography()
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
        # When nothing succeeded: the closest result, reported as a negative one, and the
        # parts of its criterion that failed.
        "closest": bool(strongest.get("closest", not strongest["succeeded"])),
        "failed_criteria": list(strongest.get("failed_criteria") or []),
        "held_out": (strongest.get("comparison") or {}).get("held_out"),
        # How the venue was chosen: here and as a comment in draft.tex, not in the body.
        "rule": strongest["rule"],
        "branches": (statistics.get("decision") or {}).get("branches") or [],
        "figures": [entry["file"] for entry in figure_entries(manifest)],
    }
    atomic_write_json(output / "paper.json", summary)
    return summary
