"""Phase 4: the paper draft, rendered from the statistics of the branches that ran.

The strongest result picks the line of work the paper leads with, and that line picks the venue
(:mod:`.strongest`; the venues are the plan's). The package is split by idea:

- :mod:`.formatting`: numbers, words, LaTeX escaping and the abstracts' ``[SLOTS]``;
- :mod:`.strongest`: the strongest result, its line of work and venue;
- :mod:`.rows`: one formatted row per pre-mortem and per comparison;
- :mod:`.abstract`: what the abstract templates see (conditions, slots, count-dependent sentences);
- :mod:`.context`: what the draft template sees;
- :mod:`.render`: the templates (package data), the Jinja environments, and writing the files.
"""

from __future__ import annotations

from actspace.analysis.paper.abstract import abstract_context, abstract_slots
from actspace.analysis.paper.context import (
    decision_rows,
    draft_context,
    experiment_models,
    experiment_tasks,
    figure_entries,
    flatten_config,
    markdown_tables,
    models_text,
)
from actspace.analysis.paper.formatting import (
    MISSING,
    count_phrase,
    count_word,
    effect_name,
    fill_slots,
    format_ci,
    format_effect,
    format_number,
    format_p,
    is_percentage_metric,
    join_words,
    latex_breakable,
    latex_escape,
    latex_prose,
    metric_name,
    none_of,
    number_word,
    p_expression,
    unfilled_slots,
)
from actspace.analysis.paper.render import (
    ABSTRACT_WORDS,
    default_bibliography,
    default_templates,
    latex_environment,
    render_abstract,
    render_draft,
    word_count,
    write_paper,
)
from actspace.analysis.paper.rows import comparison_rows, premortem_rows
from actspace.analysis.paper.strongest import STRONGEST_RULE, choose_strongest

__all__ = [
    "ABSTRACT_WORDS",
    "MISSING",
    "STRONGEST_RULE",
    "abstract_context",
    "abstract_slots",
    "choose_strongest",
    "comparison_rows",
    "count_phrase",
    "count_word",
    "effect_name",
    "decision_rows",
    "default_bibliography",
    "default_templates",
    "draft_context",
    "experiment_models",
    "experiment_tasks",
    "figure_entries",
    "fill_slots",
    "flatten_config",
    "format_ci",
    "format_effect",
    "format_number",
    "format_p",
    "is_percentage_metric",
    "join_words",
    "latex_breakable",
    "latex_environment",
    "latex_escape",
    "latex_prose",
    "markdown_tables",
    "metric_name",
    "models_text",
    "none_of",
    "number_word",
    "p_expression",
    "premortem_rows",
    "render_abstract",
    "render_draft",
    "unfilled_slots",
    "word_count",
    "write_paper",
]
