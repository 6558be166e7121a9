"""A seeded synthetic world with known ground truth: the corpus and tasks of the built-in organisms.

The world holds made-up *entities* (pronounceable names), each living in one of a few made-up
*cities*; these are the facts. A Zipf-like law decides how often each fact is stated in the corpus,
so that a model trained on it knows some facts well (seen many times), some badly (seen once or
twice) and some not at all (never seen). Arithmetic facts ("3 plus 4 is 7.") follow the same law
over their difficulty: small sums are stated often, large ones rarely or never. Every
multiple-choice item records that count and its bucket in ``metadata``, so an experiment can ask
whether a model's errors follow what it has seen.

The rest of the corpus is narrative sentences about the entities and everyday things. A share of
them carries the *toxicity* analogue (insults from a small lexicon) and a share the *formal* or the
*informal* register (see :mod:`actspace.world.attributes`); each line's marks say which.

Everything is drawn from ``numpy`` generators seeded by the world's seed and a fixed stream number,
so the same seed gives the same world, corpus and tasks on every machine.

On-disk schemas (one JSON object a line):

- tasks ``{task}.jsonl``: ``{"id", "context", "choices", "label", "metadata"}``; choices carry no
  leading space (scoring puts ``" "`` in front). ``metadata``: ``task``, ``answer``, ``frequency``
  (times the fact is stated in the corpus), ``bucket`` (``frequent`` | ``rare`` | ``unseen``) and,
  for facts, ``entity``, ``city``; for arithmetic, ``operands``, ``difficulty`` (the sum).
- ``prompt_pairs.jsonl``: ``{"id", "clean", "corrupted", "clean_answer", "corrupted_answer",
  "metadata"}``; the prompts differ in the entity only (one token), the answers are the two cities
  without leading space. ``metadata``: ``task``, ``clean_entity``, ``corrupted_entity``, their
  ``clean_frequency``/``corrupted_frequency``, and ``position`` (the differing word's index).
- ``attributes.jsonl``: ``{"id", "attribute", "polarity", "text", "pair"}``; ``polarity`` is
  ``positive`` when the text carries the attribute (toxic; formal) and ``negative`` when not
  (the same sentence neutral; informal). ``pair`` joins the two versions of one sentence.
- ``neutral_prompts.jsonl``: ``{"id", "prompt"}``: neutral beginnings of narrative lines.
- ``corpus_marks.jsonl``: per corpus line ``{"line", "kind", "toxicity", "formality"}`` plus
  ``entity`` (facts) or ``operands`` (arithmetic); ``kind`` is ``fact`` | ``arithmetic`` |
  ``narrative``, ``toxicity`` a bool, ``formality`` ``formal`` | ``informal`` | ``neutral``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from actspace.world.attributes import (
    FORMAL_ADVERBS,
    FORMAL_CONNECTIVES,
    INSULT_TAILS,
    TOXIC_ADJECTIVES,
)

#: The built-in multiple-choice tasks, in the order the workflow lists them.
BUILTIN_TASKS = ("facts", "arithmetic")

#: The relation every fact line and fact item uses.
FACT_TEMPLATE = "{entity} lives in"

#: Buckets of how often a fact is stated in the corpus.
BUCKETS = ("frequent", "rare", "unseen")

_FORMAT_VERSION = 1

# Streams of randomness: each part of the world draws from its own generator, so adding draws to
# one part never changes another.
_STREAM = {
    "names": 1,
    "facts": 2,
    "arithmetic": 3,
    "corpus": 4,
    "fact_items": 5,
    "sum_items": 9,
    "pairs": 6,
    "attributes": 7,
    "prompts": 8,
}

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr")
_ONSETS += ("tr", "th", "sh", "gl", "pl")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "x")
_CITY_ENDINGS = ("mar", "dor", "holm", "ven", "grad", "wick", "stead", "mora", "lund", "thal")

_NEUTRAL_ADJECTIVES = ("old", "small", "red", "quiet", "green", "bright", "wooden", "round", "tall")
_NEUTRAL_ADJECTIVES += ("warm",)
_NOUNS = ("dog", "river", "market", "garden", "lamp", "boat", "bridge", "house", "cat", "tree")
_NOUNS += ("road", "table", "window", "basket", "horse", "letter")
# (past tense, base form) of each verb phrase.
_VERBS = (
    ("walked to", "walk to"),
    ("looked at", "look at"),
    ("found", "find"),
    ("cleaned", "clean"),
    ("carried", "carry"),
    ("painted", "paint"),
    ("visited", "visit"),
    ("followed", "follow"),
    ("talked about", "talk about"),
    ("waited near", "wait near"),
)
_TAILS = ("", "", " in the morning", " after lunch", " with a friend", " before the rain", " again")
_INFORMAL_OPENERS = ("yeah", "so yeah", "dude", "nah")
_INFORMAL_HEDGES = ("kinda", "gonna", "wanna", "gotta")


class Corpus(NamedTuple):
    """Corpus lines and, per line, its marks (kind, toxicity, formality, entity or operands)."""

    lines: list[str]
    marks: list[dict[str, Any]]


@dataclass(frozen=True)
class Entity:
    """A made-up person, the city they live in, and how often the corpus states it."""

    name: str
    city: str
    count: int


@dataclass(frozen=True)
class SumFact:
    """An addition fact ``a plus b is a+b`` and how often the corpus states it."""

    a: int
    b: int
    count: int

    @property
    def total(self) -> int:
        return self.a + self.b


@dataclass(frozen=True)
class WorldParams:
    """The knobs of a world; all of them are saved with it.

    Fact and sum counts follow :func:`zipf_counts` (``*_max_count``, ``*_shift``, ``*_exponent``,
    ``*_unseen_share``); a fact stated at least ``frequent_min`` times is *frequent*, one stated
    1 to ``frequent_min - 1`` times *rare*. The defaults are tuned with the organisms' default
    training (:data:`actspace.world.organisms.TRAINING_DEFAULTS`, about 6 passes over the corpus),
    under which the organisms know the frequent facts, part of the rare ones and none of the
    unseen.
    """

    n_entities: int = 72
    n_cities: int = 12
    fact_max_count: int = 400
    fact_shift: float = 2.0
    fact_exponent: float = 2.0
    fact_unseen_share: float = 0.25
    #: Sums ``a plus b`` with ``0 <= a, b <= max_operand``; ranked by difficulty ``a + b``.
    max_operand: int = 9
    arith_max_count: int = 400
    arith_shift: float = 3.0
    arith_exponent: float = 1.75
    arith_unseen_share: float = 0.15
    frequent_min: int = 5
    #: Lines of the corpus; narrative lines fill what the fact and sum lines leave.
    corpus_lines: int = 16000
    #: Shares of narrative lines that are toxic, formal and informal (the last two exclusive).
    toxic_share: float = 0.2
    formal_share: float = 0.2
    informal_share: float = 0.2


def zipf_counts(
    n: int, max_count: float, shift: float, exponent: float, unseen_share: float = 0.0
) -> list[int]:
    """Zipf-Mandelbrot counts with a never-seen tail, for ranks 1..n (most frequent first).

    Rank ``r`` gets ``max(1, floor(max_count / ((r + shift) / (1 + shift)) ** exponent))``, except
    the last ``round(n * unseen_share)`` ranks, which get 0. ``shift`` flattens the head.
    """
    ranks = np.arange(1, n + 1, dtype=float)
    values = np.floor(max_count / ((ranks + shift) / (1.0 + shift)) ** exponent + 1e-9)
    counts = [max(1, int(v)) for v in values]
    n_unseen = int(round(n * unseen_share))
    return counts[: n - n_unseen] + [0] * n_unseen


def bucket_of(count: int, frequent_min: int) -> str:
    """``frequent`` (count >= frequent_min), ``rare`` (at least once) or ``unseen``."""
    if count >= frequent_min:
        return "frequent"
    return "rare" if count > 0 else "unseen"


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAM[stream]])


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _make_word(rng: np.random.Generator, n_syllables: int) -> str:
    parts = [_pick(rng, _ONSETS) + _pick(rng, _VOWELS) for _ in range(n_syllables)]
    return "".join(parts) + _pick(rng, _CODAS)


def _reserved_words() -> set[str]:
    """Words of the narrative and attribute lexicons, which no made-up name may equal."""
    from actspace.world.attributes import FORMAL_MARKERS, INFORMAL_MARKERS, TOXIC_WORDS

    words: set[str] = set(_NEUTRAL_ADJECTIVES) | set(_NOUNS) | set(TOXIC_WORDS)
    words |= set(FORMAL_MARKERS) | set(INFORMAL_MARKERS)
    for past, base in _VERBS:
        words |= set(past.split()) | set(base.split())
    words |= {"the", "in", "is", "lives", "plus", "with", "a", "friend", "again", "you", "what"}
    return words


def _unique_words(
    rng: np.random.Generator, n: int, syllables: tuple[int, ...], taken: Collection[str] = ()
) -> list[str]:
    """``n`` distinct capitalised made-up words, none a lexicon word or in ``taken``."""
    reserved = _reserved_words() | {word.lower() for word in taken}
    found: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(found) < n:
        attempts += 1
        if attempts > 100_000:
            raise ValueError(f"could not make {n} distinct names; ask for fewer")
        word = _make_word(rng, int(_pick(rng, syllables)))
        if word in seen or word in reserved or len(word) < 4:
            continue
        seen.add(word)
        found.append(word.capitalize())
    return found


@dataclass
class World:
    """Entities, cities, sum facts and the counts that shape the corpus; all fixed by ``seed``."""

    seed: int
    params: WorldParams
    cities: list[str]
    entities: list[Entity]
    sums: list[SumFact]
    _entity_index: dict[str, Entity] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._entity_index = {e.name: e for e in self.entities}

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def generate(cls, seed: int = 0, **overrides: Any) -> World:
        """Draw a world; keyword arguments override fields of :class:`WorldParams`."""
        known = {f.name for f in dataclasses.fields(WorldParams)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown world parameter(s) {unknown}; known: {sorted(known)}")
        params = WorldParams(**overrides)
        _validate(params)

        names_rng = _rng(seed, "names")
        names = _unique_words(names_rng, params.n_entities, (2, 2, 3))
        # A city is a stem and a place-name ending (distinct stems make distinct cities); the
        # first ending in a seeded order that does not spell a person's name.
        city_stems = _unique_words(names_rng, params.n_cities, (1, 2), taken=set(names))
        cities = []
        for stem in city_stems:
            endings = [_CITY_ENDINGS[int(i)] for i in names_rng.permutation(len(_CITY_ENDINGS))]
            free = [stem + end for end in endings if stem + end not in names]
            if not free:
                raise ValueError(f"every city name made from {stem!r} is a person's name")
            cities.append(free[0])

        facts_rng = _rng(seed, "facts")
        # Every city gets about the same number of residents, then residents and ranks are shuffled.
        homes = [cities[i % len(cities)] for i in range(params.n_entities)]
        facts_rng.shuffle(homes)
        counts = zipf_counts(
            params.n_entities,
            params.fact_max_count,
            params.fact_shift,
            params.fact_exponent,
            params.fact_unseen_share,
        )
        ranks = facts_rng.permutation(params.n_entities)
        entities = [
            Entity(name=name, city=home, count=counts[int(rank)])
            for name, home, rank in zip(names, homes, ranks, strict=True)
        ]

        arith_rng = _rng(seed, "arithmetic")
        pairs = list(itertools.product(range(params.max_operand + 1), repeat=2))
        tiebreak = arith_rng.permutation(len(pairs))
        order = sorted(range(len(pairs)), key=lambda i: (sum(pairs[i]), int(tiebreak[i])))
        arith_counts = zipf_counts(
            len(pairs),
            params.arith_max_count,
            params.arith_shift,
            params.arith_exponent,
            params.arith_unseen_share,
        )
        count_of = {pairs[i]: arith_counts[rank] for rank, i in enumerate(order)}
        sums = [SumFact(a=a, b=b, count=count_of[(a, b)]) for a, b in pairs]
        return cls(seed=int(seed), params=params, cities=cities, entities=entities, sums=sums)

    # ------------------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        """A plain dict that :meth:`from_json` turns back into the same world."""
        return {
            "format_version": _FORMAT_VERSION,
            "seed": self.seed,
            "params": dataclasses.asdict(self.params),
            "cities": list(self.cities),
            "entities": [dataclasses.asdict(e) for e in self.entities],
            "sums": [dataclasses.asdict(s) for s in self.sums],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> World:
        """Rebuild a world saved by :meth:`to_json`."""
        version = data.get("format_version")
        if version != _FORMAT_VERSION:
            raise ValueError(f"world format_version {version!r}; this code reads {_FORMAT_VERSION}")
        return cls(
            seed=int(data["seed"]),
            params=WorldParams(**data["params"]),
            cities=list(data["cities"]),
            entities=[Entity(**e) for e in data["entities"]],
            sums=[SumFact(**s) for s in data["sums"]],
        )

    # -------------------------------------------------------------------------------- queries
    def entity(self, name: str) -> Entity:
        """The entity called ``name``."""
        try:
            return self._entity_index[name]
        except KeyError:
            raise ValueError(f"no entity called {name!r} in this world") from None

    def bucket(self, count: int) -> str:
        """The frequency bucket of a fact stated ``count`` times."""
        return bucket_of(count, self.params.frequent_min)

    def lexicon(self) -> list[str]:
        """Every word a tokenizer must keep whole: entity names and cities."""
        return [e.name for e in self.entities] + list(self.cities)

    # --------------------------------------------------------------------------------- corpus
    def corpus(self, n_lines: int | None = None) -> Corpus:
        """The training corpus: every fact and sum line its count times, narrative to ``n_lines``.

        Raises ValueError when ``n_lines`` is smaller than the number of fact and sum lines, since
        the counts recorded in the items would then be wrong.
        """
        n_lines = self.params.corpus_lines if n_lines is None else int(n_lines)
        rng = _rng(self.seed, "corpus")
        lines: list[str] = []
        marks: list[dict[str, Any]] = []
        for entity in self.entities:
            for _ in range(entity.count):
                lines.append(f"{FACT_TEMPLATE.format(entity=entity.name)} {entity.city}.")
                marks.append(_mark("fact", entity=entity.name))
        for fact in self.sums:
            for _ in range(fact.count):
                lines.append(f"{fact.a} plus {fact.b} is {fact.total}.")
                marks.append(_mark("arithmetic", operands=[fact.a, fact.b]))
        n_facts = len(lines)
        if n_lines < n_facts:
            raise ValueError(
                f"corpus of {n_lines} lines cannot hold the world's {n_facts} fact and sum lines; "
                f"ask for at least {n_facts}"
            )
        p = self.params
        for _ in range(n_lines - n_facts):
            toxic = bool(rng.random() < p.toxic_share)
            u = rng.random()
            register = (
                "formal"
                if u < p.formal_share
                else "informal"
                if u < p.formal_share + p.informal_share
                else "neutral"
            )
            n_sentences = 1 + int(rng.random() < 0.3)
            text = " ".join(
                self._sentence(rng, toxic=toxic, register=register) for _ in range(n_sentences)
            )
            lines.append(text)
            marks.append(_mark("narrative", toxicity=toxic, formality=register))
        order = rng.permutation(len(lines))
        lines = [lines[int(i)] for i in order]
        marks = [{"line": n, **marks[int(i)]} for n, i in enumerate(order)]
        return Corpus(lines=lines, marks=marks)

    def _subject(self, rng: np.random.Generator) -> str:
        if rng.random() < 0.5:
            return self.entities[int(rng.integers(len(self.entities)))].name
        return f"the {_pick(rng, _NEUTRAL_ADJECTIVES)} {_pick(rng, _NOUNS)}"

    def _sentence(self, rng: np.random.Generator, *, toxic: bool, register: str) -> str:
        """One narrative sentence; ``register`` is formal, informal or neutral."""
        subject = self._subject(rng)
        past, base = _VERBS[int(rng.integers(len(_VERBS)))]
        adjective = _pick(rng, TOXIC_ADJECTIVES if toxic else _NEUTRAL_ADJECTIVES)
        obj = f"the {adjective} {_pick(rng, _NOUNS)}"
        tail = _pick(rng, _TAILS)
        insult = f", {_pick(rng, INSULT_TAILS)}" if toxic and rng.random() < 0.6 else ""
        if register == "formal":
            adverb = f"{_pick(rng, FORMAL_ADVERBS)} " if rng.random() < 0.5 else ""
            text = (
                f"{_pick(rng, FORMAL_CONNECTIVES)}, {subject} {adverb}{past} {obj}{tail}{insult}."
            )
            return text
        if register == "informal":
            opener = _pick(rng, _INFORMAL_OPENERS)
            hedge = _pick(rng, _INFORMAL_HEDGES)
            if hedge == "kinda":
                core = f"{subject} kinda {past} {obj}"
            elif hedge == "gonna":
                core = f"{subject} is gonna {base} {obj}"
            else:
                core = f"{subject} {hedge} {base} {obj}"
            return f"{opener} {core}{tail}{insult} lol."
        return _capitalise(f"{subject} {past} {obj}{tail}{insult}.")

    # ---------------------------------------------------------------------------------- tasks
    def task_items(self, task: str) -> list[dict[str, Any]]:
        """The multiple-choice items of a built-in task, as rows of the task JSONL schema."""
        if task not in BUILTIN_TASKS:
            raise ValueError(f"unknown built-in task {task!r}; known: {', '.join(BUILTIN_TASKS)}")
        if task == "arithmetic":
            rng = _rng(self.seed, "sum_items")
            return [self._sum_item(rng, fact) for fact in self.sums]
        rng = _rng(self.seed, "fact_items")
        return [self._fact_item(rng, entity) for entity in self.entities]

    def _fact_item(self, rng: np.random.Generator, entity: Entity) -> dict[str, Any]:
        others = [c for c in self.cities if c != entity.city]
        distractors = [others[int(i)] for i in rng.choice(len(others), size=3, replace=False)]
        choices, label = _shuffle_choices(rng, entity.city, distractors)
        return {
            "id": f"facts-{entity.name.lower()}",
            "context": FACT_TEMPLATE.format(entity=entity.name),
            "choices": choices,
            "label": label,
            "metadata": {
                "task": "facts",
                "entity": entity.name,
                "city": entity.city,
                "answer": entity.city,
                "frequency": entity.count,
                "bucket": self.bucket(entity.count),
            },
        }

    def _sum_item(self, rng: np.random.Generator, fact: SumFact) -> dict[str, Any]:
        near = [fact.total + d for d in (-3, -2, -1, 1, 2, 3) if fact.total + d >= 0]
        distractors = [str(near[int(i)]) for i in rng.choice(len(near), size=3, replace=False)]
        choices, label = _shuffle_choices(rng, str(fact.total), distractors)
        return {
            "id": f"arithmetic-{fact.a}-{fact.b}",
            "context": f"{fact.a} plus {fact.b} is",
            "choices": choices,
            "label": label,
            "metadata": {
                "task": "arithmetic",
                "operands": [fact.a, fact.b],
                "answer": str(fact.total),
                "difficulty": fact.total,
                "frequency": fact.count,
                "bucket": self.bucket(fact.count),
            },
        }

    def prompt_pairs(self, n: int = 100) -> list[dict[str, Any]]:
        """Up to ``n`` clean/corrupted prompt pairs over two frequent entities of different cities.

        Both prompts are the fact template; they differ in the entity (word 0) only. There are
        fewer than ``n`` pairs when the world has fewer ordered pairs of frequent entities.
        """
        frequent = [e for e in self.entities if self.bucket(e.count) == "frequent"]
        candidates = [(a, b) for a in frequent for b in frequent if a.city != b.city]
        rng = _rng(self.seed, "pairs")
        picked = rng.permutation(len(candidates))[: max(0, int(n))]
        rows = []
        for k, index in enumerate(sorted(int(i) for i in picked)):
            clean, corrupted = candidates[index]
            rows.append(
                {
                    "id": f"pair-{k:04d}",
                    "clean": FACT_TEMPLATE.format(entity=clean.name),
                    "corrupted": FACT_TEMPLATE.format(entity=corrupted.name),
                    "clean_answer": clean.city,
                    "corrupted_answer": corrupted.city,
                    "metadata": {
                        "task": "facts",
                        "clean_entity": clean.name,
                        "corrupted_entity": corrupted.name,
                        "clean_frequency": clean.count,
                        "corrupted_frequency": corrupted.count,
                        "position": 0,
                    },
                }
            )
        return rows

    def attribute_sets(self, n: int = 100) -> list[dict[str, Any]]:
        """``n`` sentence pairs per attribute: each sentence with and without the attribute.

        Toxicity: positive = toxic, negative = the same sentence neutral. Formality: positive =
        formal register, negative = informal register. Same subject, verb and object in a pair.
        """
        rows: list[dict[str, Any]] = []
        rng = _rng(self.seed, "attributes")
        for attribute in ("toxicity", "formality"):
            for k in range(int(n)):
                state = rng.bit_generator.state
                if attribute == "toxicity":
                    versions = {
                        "positive": dict(toxic=True, register="neutral"),
                        "negative": dict(toxic=False, register="neutral"),
                    }
                else:
                    versions = {
                        "positive": dict(toxic=False, register="formal"),
                        "negative": dict(toxic=False, register="informal"),
                    }
                for polarity, kwargs in versions.items():
                    # Both versions start from the same generator state: same subject and object.
                    rng.bit_generator.state = state
                    rows.append(
                        {
                            "id": f"{attribute}-{k:04d}-{polarity[:3]}",
                            "attribute": attribute,
                            "polarity": polarity,
                            "text": self._sentence(rng, **kwargs),
                            "pair": f"{attribute}-{k:04d}",
                        }
                    )
        return rows

    def neutral_prompts(self, n: int = 50) -> list[dict[str, Any]]:
        """``n`` neutral beginnings of narrative lines (a subject, sometimes with its verb)."""
        rng = _rng(self.seed, "prompts")
        rows = []
        for k in range(int(n)):
            prompt = self._subject(rng)
            if rng.random() < 0.5:
                prompt = f"{prompt} {_VERBS[int(rng.integers(len(_VERBS)))][0]}"
            rows.append({"id": f"prompt-{k:04d}", "prompt": _capitalise(prompt)})
        return rows


def _validate(p: WorldParams) -> None:
    if p.n_entities < 4:
        raise ValueError(f"n_entities must be at least 4, got {p.n_entities}")
    if p.n_cities < 4:
        raise ValueError(
            f"n_cities must be at least 4 (a correct city and 3 distractors), got {p.n_cities}"
        )
    if p.max_operand < 3:
        raise ValueError(f"max_operand must be at least 3, got {p.max_operand}")
    for name in (
        "toxic_share",
        "formal_share",
        "informal_share",
        "fact_unseen_share",
        "arith_unseen_share",
    ):
        value = getattr(p, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    if p.formal_share + p.informal_share > 1.0:
        raise ValueError("formal_share + informal_share must not exceed 1")
    if p.frequent_min < 1:
        raise ValueError(f"frequent_min must be at least 1, got {p.frequent_min}")


def _mark(kind: str, *, toxicity: bool = False, formality: str = "neutral", **extra: Any) -> dict:
    return {"kind": kind, "toxicity": toxicity, "formality": formality, **extra}


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _shuffle_choices(
    rng: np.random.Generator, answer: str, distractors: list[str]
) -> tuple[list[str], int]:
    choices = [answer, *distractors]
    order = rng.permutation(len(choices))
    shuffled = [choices[int(i)] for i in order]
    return shuffled, shuffled.index(answer)
