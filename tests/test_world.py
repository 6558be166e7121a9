"""The synthetic world: determinism, ground truth in the corpus, and the schemas of its outputs."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from actspace.world.attributes import INFORMAL_MARKERS, attribute_score, register_balance, words
from actspace.world.synthetic import BUCKETS, BUILTIN_TASKS, World, bucket_of, zipf_counts


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(7)


@pytest.fixture(scope="module")
def corpus(world: World):
    return world.corpus()


def test_zipf_counts_known_values() -> None:
    assert zipf_counts(3, 30, 0.0, 1.0) == [30, 15, 10]
    assert zipf_counts(4, 10, 1.0, 2.0) == [10, 4, 2, 1]  # 10 / ((r + 1) / 2) ** 2


def test_buckets() -> None:
    assert [bucket_of(c, 5) for c in (0, 1, 4, 5, 30)] == [
        "unseen",
        "rare",
        "rare",
        "frequent",
        "frequent",
    ]


def test_same_seed_same_world_and_corpus(world: World, corpus) -> None:
    again = World.generate(7)
    assert again == world
    assert again.corpus() == corpus
    assert again.task_items("facts") == world.task_items("facts")
    assert again.prompt_pairs(20) == world.prompt_pairs(20)
    assert again.attribute_sets(10) == world.attribute_sets(10)


def test_different_seed_different_world(world: World, corpus) -> None:
    other = World.generate(8)
    assert [e.name for e in other.entities] != [e.name for e in world.entities]
    assert other.corpus().lines != corpus.lines


def test_json_round_trip(world: World) -> None:
    data = json.loads(json.dumps(world.to_json()))
    assert World.from_json(data) == world
    with pytest.raises(ValueError, match="format_version"):
        World.from_json({**data, "format_version": 99})


def test_world_shape(world: World) -> None:
    p = world.params
    names = [e.name for e in world.entities]
    assert len(names) == len(set(names)) == p.n_entities
    assert len(set(world.cities)) == p.n_cities
    assert not set(names) & set(world.cities)
    assert all(re.fullmatch(r"[A-Z][a-z]+", word) for word in world.lexicon())
    # Every city has residents, evenly spread.
    residents = Counter(e.city for e in world.entities)
    assert set(residents) == set(world.cities)
    assert max(residents.values()) - min(residents.values()) <= 1
    assert len(world.sums) == (p.max_operand + 1) ** 2


def test_corpus_states_each_fact_exactly_its_count(world: World, corpus) -> None:
    assert len(corpus.lines) == len(corpus.marks) == world.params.corpus_lines
    stated = Counter(line for line in corpus.lines if " lives in " in line)
    for entity in world.entities:
        assert stated[f"{entity.name} lives in {entity.city}."] == entity.count
    assert sum(stated.values()) == sum(e.count for e in world.entities)
    sums = Counter(line for line in corpus.lines if " plus " in line)
    for fact in world.sums:
        assert sums[f"{fact.a} plus {fact.b} is {fact.a + fact.b}."] == fact.count
    # No city appears outside its facts, so nothing else can teach where someone lives.
    city_lines = [line for line in corpus.lines if any(c in line for c in world.cities)]
    assert len(city_lines) == sum(stated.values())


def test_corpus_marks_agree_with_the_text(corpus) -> None:
    kinds = Counter(mark["kind"] for mark in corpus.marks)
    assert set(kinds) == {"fact", "arithmetic", "narrative"}
    for number, (line, mark) in enumerate(zip(corpus.lines, corpus.marks, strict=True)):
        assert mark["line"] == number
        toxic = attribute_score(line, "toxicity") > 0
        formal = attribute_score(line, "formality") > 0
        informal = any(w in INFORMAL_MARKERS for w in words(line))
        assert toxic == mark["toxicity"], line
        assert formal == (mark["formality"] == "formal"), line
        assert informal == (mark["formality"] == "informal"), line
    narrative = [m for m in corpus.marks if m["kind"] == "narrative"]
    toxic_share = sum(m["toxicity"] for m in narrative) / len(narrative)
    assert toxic_share == pytest.approx(0.2, abs=0.03)


@pytest.mark.parametrize("task", BUILTIN_TASKS)
def test_task_items_schema(world: World, task: str) -> None:
    items = world.task_items(task)
    assert len({item["id"] for item in items}) == len(items)
    labels = Counter()
    for item in items:
        assert set(item) == {"id", "context", "choices", "label", "metadata"}
        assert len(item["choices"]) == len(set(item["choices"])) == 4
        assert 0 <= item["label"] < 4
        labels[item["label"]] += 1
        meta = item["metadata"]
        assert meta["task"] == task
        assert item["choices"][item["label"]] == meta["answer"]
        assert meta["bucket"] == world.bucket(meta["frequency"])
        assert not any(choice.startswith(" ") for choice in item["choices"])
    assert set(labels) == {0, 1, 2, 3}  # the correct choice's position is shuffled
    buckets = Counter(item["metadata"]["bucket"] for item in items)
    assert set(buckets) == set(BUCKETS)
    assert all(n >= 10 for n in buckets.values()), buckets


def test_fact_items_record_the_truth(world: World) -> None:
    for item in world.task_items("facts"):
        entity = world.entity(item["metadata"]["entity"])
        assert item["context"] == f"{entity.name} lives in"
        assert item["metadata"]["answer"] == entity.city
        assert item["metadata"]["frequency"] == entity.count


def test_arithmetic_items_are_sums_with_near_distractors(world: World) -> None:
    for item in world.task_items("arithmetic"):
        a, b = item["metadata"]["operands"]
        assert item["context"] == f"{a} plus {b} is"
        assert item["metadata"]["answer"] == str(a + b)
        assert item["metadata"]["difficulty"] == a + b
        assert all(0 < abs(int(c) - (a + b)) <= 3 for c in item["choices"] if c != str(a + b))
    # Small sums are stated more often than large ones.
    by_sum = {s.total: s.count for s in world.sums}
    assert by_sum[0] > by_sum[2 * world.params.max_operand]


def test_prompt_pairs_differ_in_one_word_and_answer(world: World) -> None:
    pairs = world.prompt_pairs(60)
    assert len(pairs) == 60
    assert len({p["id"] for p in pairs}) == 60
    for pair in pairs:
        clean, corrupted = pair["clean"].split(), pair["corrupted"].split()
        assert len(clean) == len(corrupted)
        assert [i for i, (a, b) in enumerate(zip(clean, corrupted, strict=True)) if a != b] == [0]
        assert pair["clean_answer"] != pair["corrupted_answer"]
        meta = pair["metadata"]
        assert world.entity(meta["clean_entity"]).city == pair["clean_answer"]
        assert world.entity(meta["corrupted_entity"]).city == pair["corrupted_answer"]
        assert world.bucket(meta["clean_frequency"]) == "frequent"
        assert world.bucket(meta["corrupted_frequency"]) == "frequent"


def test_attribute_sets(world: World) -> None:
    rows = world.attribute_sets(30)
    assert len(rows) == 2 * 2 * 30
    assert len({r["id"] for r in rows}) == len(rows)
    by_pair: dict[str, dict[str, str]] = {}
    for row in rows:
        assert set(row) == {"id", "attribute", "polarity", "text", "pair"}
        by_pair.setdefault(row["pair"], {})[row["polarity"]] = row["text"]
        score = attribute_score(row["text"], row["attribute"])
        assert (score > 0) == (row["polarity"] == "positive"), row
        if row["attribute"] == "formality" and row["polarity"] == "negative":
            assert register_balance(row["text"]) < 0
        if row["attribute"] == "toxicity":
            assert attribute_score(row["text"], "formality") == 0.0
    assert all(set(p) == {"positive", "negative"} for p in by_pair.values())


def test_neutral_prompts_carry_no_attribute(world: World) -> None:
    prompts = world.neutral_prompts(40)
    assert len({p["id"] for p in prompts}) == 40
    for row in prompts:
        assert attribute_score(row["prompt"], "toxicity") == 0.0
        assert register_balance(row["prompt"]) == 0.0


def test_bad_requests_raise(world: World) -> None:
    with pytest.raises(ValueError, match="unknown world parameter"):
        World.generate(0, n_entitys=5)
    with pytest.raises(ValueError, match="n_cities"):
        World.generate(0, n_cities=3)
    with pytest.raises(ValueError, match="at least"):
        world.corpus(10)
    with pytest.raises(ValueError, match="known: facts, arithmetic"):
        world.task_items("trivia")
