"""Numbers, words and LaTeX for the paper: every value the texts show is formatted here, once.

Three significant digits, percentages for accuracy-like levels, ``p < 0.001`` below a thousandth,
and ``n/a`` for anything missing. Text from data is escaped for LaTeX (:func:`latex_escape`), and
the bracketed ``[SLOTS]`` of the abstracts are filled and checked (:func:`fill_slots`,
:func:`unfilled_slots`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from markupsafe import Markup

from actspace import plan

MISSING = "n/a"

#: Effect sizes as a reader names them (statistics.json stores identifiers), and their TeX.
EFFECT_SIZES: dict[str, tuple[str, str]] = {
    "hedges_g_z": ("Hedges' g_z", r"Hedges' $g_z$"),
    "hedges_g": ("Hedges' g", r"Hedges' $g$"),
    "cohens_d_z": ("Cohen's d_z", r"Cohen's $d_z$"),
    "cohens_d": ("Cohen's d", r"Cohen's $d$"),
    "cohens_h": ("Cohen's h", r"Cohen's $h$"),
}

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


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


def metric_unit(metric: str | None, values: Iterable[Any] = ()) -> tuple[float, bool]:
    """(scale, percent) to show a metric's values in its unit.

    A registered metric (:data:`actspace.plan.METRICS`) brings its own; any other name falls
    back to :func:`is_percentage_metric`. ``percent`` values are proportions shown as ``62.0%``
    (:func:`format_number` multiplies them); other values are multiplied by ``scale``.
    """
    if metric in plan.METRIC_NAMES:
        entry = plan.metric(metric)
        return (1.0, True) if entry.percent else (entry.scale, False)
    return 1.0, is_percentage_metric(metric, values)


def format_in_unit(value: Any, scale: float = 1.0, *, percent: bool = False) -> str:
    """:func:`format_number` of ``value * scale`` (``n/a`` when missing)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and scale != 1.0:
        value = float(value) * scale
    return format_number(value, percent=percent)


def metric_name(metric: str | None) -> str:
    """The metric as prose and tables name it, with its unit (``n/a`` when missing)."""
    return plan.metric_text(metric) if metric else MISSING


def effect_name(name: str | None) -> str:
    """``Hedges' g_z`` for ``hedges_g_z``; an unknown name with its underscores as spaces."""
    if not name:
        return "effect size"
    known = EFFECT_SIZES.get(str(name))
    return known[0] if known else str(name).replace("_", " ")


def format_effect(effect: Mapping[str, Any] | None) -> str:
    """``Hedges' g_z = 1.21``; ``n/a`` when missing."""
    if not effect or effect.get("value") is None:
        return MISSING
    text = format_number(effect["value"])
    if text == MISSING:
        return MISSING
    return f"{effect_name(effect.get('name'))} = {text}"


def number_word(n: int) -> str:
    """``two`` for small counts, digits otherwise."""
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


def count_word(n: int) -> str:
    """``none`` for zero, else :func:`number_word` (``none met``, ``two did not``)."""
    return "none" if n == 0 else number_word(n)


def count_phrase(n: int, singular: str, plural: str | None = None) -> str:
    """``one comparison``, ``two comparisons``, ``12 comparisons``, ``no comparisons``."""
    noun = singular if n == 1 else (plural or f"{singular}s")
    return f"{'no' if n == 0 else number_word(n)} {noun}"


def none_of(n: int, singular: str, plural: str | None = None) -> str:
    """The subject of "... met its criterion" when none did: ``neither comparison`` for two,
    ``none of the three comparisons`` otherwise, ``the one comparison`` for one (the verb after
    "the one" reads "did not ...", so callers avoid n == 1 where the verb is positive)."""
    if n == 1:
        return f"the one {singular}"
    if n == 2:
        return f"neither {singular}"
    return f"none of the {count_phrase(n, singular, plural)}"


def capitalized(text: str) -> str:
    """The first letter upper-cased, the rest kept (``CCS`` stays ``CCS``)."""
    return text[:1].upper() + text[1:]


def join_words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = [str(item) for item in items]
    if not items:
        return MISSING
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


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


def latex_prose(value: Any) -> Markup:
    """Escape running text for LaTeX, and typeset the effect-size names as math
    (``Hedges' g_z`` -> ``Hedges' $g_z$``)."""
    text = str(latex_escape(value))
    for plain, tex in EFFECT_SIZES.values():
        text = text.replace(str(latex_escape(plain)), tex)
    return Markup(text)


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
