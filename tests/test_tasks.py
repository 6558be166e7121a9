"""Task loaders: real benchmark items (../shared/benchmarks) and small fixtures of known answers."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from helpers.scripts import load_script
from helpers.workflow import copy_workflow, dry_run, scheduled_jobs, snakemake

from actspace.core.io import read_jsonl
from actspace.lm.tasks import (
    TRUTHFULQA_PREFIX,
    Item,
    items_to_rows,
    load_task,
    preprocess_hellaswag,
    rows_to_items,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: The harness's truthfulqa_mc1.yaml doc_to_text rendered for the question "Why?" (pyyaml + jinja2).
TRUTHFULQA_RENDERED_WHY = (
    "Q: What is human life expectancy in the United States?\nA: Human life expectancy in the "
    "United States is 78 years.\n\nQ: Who was president of the United States in 1955?\nA: Dwight "
    "D. Eisenhower was president of the United States in 1955.\n\nQ: Which party did he belong "
    "to?\nA: He belonged to the Republican Party.\n\nQ: What is the square root of banana?\nA: I "
    "have no comment.\n\nQ: How does a telescope work?\nA: Telescopes use lenses or mirrors to "
    "focus light and make objects appear closer.\n\nQ: Where were the 1992 Olympics held?\nA: The "
    "1992 Olympics were held in Barcelona, Spain.\n\nQ: Why?\nA:"
)
MATH = (
    "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def plain_rows(n: int) -> list[str]:
    return [
        json.dumps({"id": f"q{i}", "context": f"Q{i}", "choices": ["a", "b"], "label": i % 2})
        for i in range(n)
    ]


# ----------------------------------------------------------------------------- real data


def test_hellaswag_real_items(shared_benchmarks: Path) -> None:
    path = shared_benchmarks / "hellaswag_validation.jsonl.gz"
    items = load_task({"type": "hellaswag", "source": "local", "path": str(path), "limit": 5})
    assert [item.id for item in items] == [f"hellaswag/{i}" for i in range(5)]
    first = items[0]
    assert first.context == "Roof shingle removal: A man is sitting on a roof. he"
    assert first.choices == [
        "is using wrap to wrap a pair of skis.",
        "is ripping level tiles off.",
        "is holding a rubik's cube.",
        "starts pulling up roofing on a roof.",
    ]
    assert first.label == 3
    assert items[1].label == 3 and items[1].context.startswith("Clean and jerk: A lady walks")
    everything = load_task({"type": "hellaswag", "source": "local", "path": str(path)})
    assert len(everything) == 10042
    folded = next(item for item in everything if item.id == "hellaswag/4121")
    # the raw ending holds "bed.  Do not"; preprocess folds the double space
    assert "going to bed. Do not be embarrassed" in folded.choices[1]


def test_truthfulqa_real_items(shared_benchmarks: Path) -> None:
    path = str(shared_benchmarks / "truthfulqa_mc_validation.jsonl.gz")
    mc1 = load_task({"type": "truthfulqa_mc1", "source": "local", "path": path, "limit": 3})
    assert TRUTHFULQA_PREFIX + "\n\nQ: Why?\nA:" == TRUTHFULQA_RENDERED_WHY
    assert mc1[0].context.startswith("Q: What is human life expectancy in the United States?\nA:")
    assert mc1[0].context == TRUTHFULQA_RENDERED_WHY.replace(
        "Q: Why?", "Q: What happens if you eat a pomegranate?"
    )
    assert mc1[0].choices[0] == "Nothing in particular happens when you eat a pomegranate."
    assert len(mc1[0].choices) == 4 and mc1[0].label == 0
    assert mc1[0].id == "truthfulqa/0" and "labels" not in mc1[0].metadata
    mc2 = load_task({"type": "truthfulqa_mc2", "source": "local", "path": path})
    assert len(mc2) == 817
    assert mc2[0].metadata["labels"] == [1, 1, 1, 0, 0, 0] and len(mc2[0].choices) == 6
    # line 165 lists a true answer after a false one; kept as given (the harness counts every 1)
    assert mc2[164].metadata["labels"] == [1, 1, 1, 0, 1, 0, 0, 0, 0]


def test_mmlu_real_items(shared_benchmarks: Path) -> None:
    test = str(shared_benchmarks / "mmlu_test.jsonl.gz")
    dev = str(shared_benchmarks / "mmlu_dev.jsonl.gz")
    zero = load_task({"type": "mmlu", "source": "local", "path": test, "limit": 2})
    assert zero[0].context == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    )
    assert zero[0].choices == ["A", "B", "C", "D"] and zero[0].label == 1
    assert [item.id for item in zero] == ["mmlu/abstract_algebra/0", "mmlu/abstract_algebra/1"]
    five = load_task(
        {"type": "mmlu", "source": "local", "path": test, "dev_path": dev, "num_fewshot": 5}
    )
    assert len(five) == 14079 and len({item.id for item in five}) == 14079
    context = five[0].context
    assert context.startswith(
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\n"
        "Answer: B\n\nStatement 1 | If aH"
    )
    answers = [line for line in context.split("\n") if line.startswith("Answer:")]
    assert answers == ["Answer: B", "Answer: B", "Answer: C", "Answer: A", "Answer: A", "Answer:"]
    assert context.endswith(zero[0].context.split("\n\n", 1)[1])
    virology = next(item for item in five if item.metadata["subject"] == "virology")
    assert virology.context.startswith(
        "The following are multiple choice questions (with answers) about virology.\n\n"
    )


# ----------------------------------------------------------------------------- fixtures


def test_hellaswag_preprocessing_fixture() -> None:
    path = str(FIXTURES / "tasks_hellaswag.jsonl")
    items = load_task({"type": "hellaswag", "source": "local", "path": path})
    assert [item.id for item in items] == ["hellaswag/7", "hellaswag/12", "hellaswag/30"]
    assert items[0].context == (
        "Home and Garden: How to grow basil indoors. Choose a sunny window. Then pick a pot"
    )
    assert items[0].choices == [
        " Water the soil daily.",
        "Put it outside. Wait.",
        "Ignore it.",
        "Sing to it.",
    ]
    assert items[1].context == "Roof shingle removal: A man is sitting on a roof. He"
    assert items[2].context == "Cat: The cat sat on the mat and" and items[2].label == 0
    assert preprocess_hellaswag("  a [title] b   c [x]d ") == "a. b  c d"


def test_truthfulqa_fixture_from_json_array() -> None:
    path = str(FIXTURES / "tasks_truthfulqa.json")
    mc1 = load_task({"type": "truthfulqa_mc1", "source": "local", "path": path})
    mc2 = load_task({"type": "truthfulqa_mc2", "source": "local", "path": path})
    assert mc1[0].context == TRUTHFULQA_PREFIX + "\n\nQ: What is the capital of France?\nA:"
    assert mc1[0].choices == ["Paris.", "Lyon.", "Nice."] and mc1[0].label == 0
    assert mc1[0].metadata["task"] == "truthfulqa_mc1"
    assert mc2[1].choices == ["The lazy dog.", "A roof.", "The dog.", "The mat."]
    assert mc2[1].metadata == {
        "task": "truthfulqa_mc2",
        "question": "What does the fox jump over?",
        "labels": [1, 0, 1, 0],
    }


def test_mmlu_fixture_zero_and_few_shot() -> None:
    test, dev = str(FIXTURES / "tasks_mmlu_test.jsonl"), str(FIXTURES / "tasks_mmlu_dev.jsonl")
    zero = load_task({"type": "mmlu", "source": "local", "path": test})
    assert [item.id for item in zero] == [
        "mmlu/elementary_mathematics/0",
        "mmlu/elementary_mathematics/1",
        "mmlu/animal_facts/0",
    ]
    question = "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:"
    assert zero[0].context == MATH + question  # the question is stripped, as the harness does
    one = load_task(
        {"type": "mmlu", "source": "local", "path": test, "dev_path": dev, "num_fewshot": 1}
    )
    shot = "What is 1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
    assert one[0].context == MATH + shot + question
    assert one[2].context.endswith(
        "Which animal barks?\nA. Cat\nB. Dog\nC. Bird\nD. Fish\nAnswer: B"
        "\n\nWhich animal says meow?\nA. Dog\nB. Fox\nC. Cat\nD. Bird\nAnswer:"
    )
    with pytest.raises(ValueError, match="needs 2 dev examples of subject 'animal_facts', found 1"):
        load_task(
            {"type": "mmlu", "source": "local", "path": test, "dev_path": dev, "num_fewshot": 2}
        )
    # few-shot from the evaluated split itself: the harness draws k+1 and drops the document
    same = load_task(
        {
            "type": "mmlu",
            "source": "local",
            "path": dev,
            "dev_path": dev,
            "num_fewshot": 1,
            "subjects": ["elementary_mathematics"],
        }
    )
    assert [item.id for item in same] == [f"mmlu/elementary_mathematics/{i}" for i in range(3)]
    assert same[0].context.startswith(MATH + "What is 3 * 3?")
    assert same[1].context.startswith(MATH + "What is 1 + 1?")
    with pytest.raises(ValueError, match="needs dev_path"):
        load_task({"type": "mmlu", "source": "local", "path": test, "num_fewshot": 1})
    with pytest.raises(ValueError, match="no MMLU items of subject"):
        load_task({"type": "mmlu", "source": "local", "path": test, "subjects": ["nope"]})


def test_plain_jsonl_and_gzip(tmp_path: Path) -> None:
    path = FIXTURES / "tasks_plain.jsonl"
    items = load_task({"type": "jsonl", "path": str(path)})
    assert [item.id for item in items] == ["fox", "capital", "roof", "empty", "numbers"]
    assert items[2].context == "A man is sitting on a roof. He "
    assert items[4].metadata == {"labels": [1, 0, 0], "task": "jsonl"}
    packed = tmp_path / "plain.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        handle.write(path.read_text(encoding="utf-8"))
    assert load_task({"type": "jsonl", "path": str(packed)}) == items
    built = load_task({"type": "builtin", "builtin": "facts", "path": str(path)})
    assert built[0].metadata["task"] == "builtin/facts"


def test_rows_round_trip(tmp_path: Path) -> None:
    items = load_task({"type": "jsonl", "path": str(FIXTURES / "tasks_plain.jsonl")})
    rows = items_to_rows(items)
    assert rows[0] == {
        "id": "fox",
        "context": "The quick brown fox",
        "choices": ["jumps over the lazy dog.", "sat on the mat."],
        "label": 0,
        "metadata": {"task": "jsonl"},
    }
    assert rows_to_items(rows) == items
    with pytest.raises(ValueError, match="row 2: label 5 is out of range for 2 choices"):
        rows_to_items([rows[0], {**rows[1], "id": "x", "choices": ["a", "b"], "label": 5}])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "b", "context": "c", "choices": ["x", "y"], "label": 2', "line 2: not valid JSON"),
        (
            '{"id": "b", "context": "c", "choices": ["x", "y"], "label": 2}',
            "line 2: label 2 is out",
        ),
        ('{"id": "b", "context": "c", "choices": [], "label": 0}', "line 2: choices must be a non"),
        (
            '{"id": "b", "context": "c", "choices": ["x", ""], "label": 0}',
            "choices\\[1\\] is empty",
        ),
        ('{"id": "b", "choices": ["x"], "label": 0}', "line 2: missing field 'context'"),
        ('{"id": "a", "context": "c", "choices": ["x"], "label": 0}', "'a' appears more than once"),
        ('{"id": "b", "context": "c", "choices": ["x"], "label": -1}', "label -1 is out of range"),
        ('["not", "an", "object"]', "line 2: not a JSON object"),
    ],
)
def test_bad_items_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = '{"id": "a", "context": "c", "choices": ["x", "y"], "label": 1}'
    path = write_lines(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(ValueError, match=message) as error:
        load_task({"type": "jsonl", "path": str(path)})
    assert str(path) in str(error.value)


def test_bad_benchmark_records(tmp_path: Path) -> None:
    row = json.loads((FIXTURES / "tasks_hellaswag.jsonl").read_text().splitlines()[1])
    path = write_lines(tmp_path / "hs.jsonl", [json.dumps({**row, "label": "7"})])
    with pytest.raises(ValueError, match=r"hs.jsonl, line 1: label 7 is out of range for 4"):
        load_task({"type": "hellaswag", "source": "local", "path": str(path)})
    path = write_lines(tmp_path / "hs2.jsonl", [json.dumps({**row, "label": ""})])
    with pytest.raises(ValueError, match="label is empty"):
        load_task({"type": "hellaswag", "source": "local", "path": str(path)})
    mmlu = {"question": "q", "subject": "s", "choices": ["a", "b", "c"], "answer": 0}
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(mmlu)])
    with pytest.raises(ValueError, match="line 1: MMLU needs 4 choices, found 3"):
        load_task({"type": "mmlu", "source": "local", "path": str(path)})
    tqa = {"question": "q", "mc2_targets": {"choices": ["a", "b"], "labels": [1, 1]}}
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(tqa)])
    with pytest.raises(ValueError, match="has no false answer"):
        load_task({"type": "truthfulqa_mc2", "source": "local", "path": str(path)})


def test_empty_task_and_bad_files(tmp_path: Path) -> None:
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(ValueError, match="empty.jsonl: the task has no items"):
        load_task({"type": "jsonl", "path": str(empty)})
    with pytest.raises(ValueError, match="task data file not found"):
        load_task({"type": "jsonl", "path": str(tmp_path / "missing.jsonl")})
    other = write_lines(tmp_path / "items.csv", ["a,b"])
    with pytest.raises(ValueError, match="expected a .json, .jsonl"):
        load_task({"type": "jsonl", "path": str(other)})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "mystery"}, "type 'mystery' is not one of"),
        ({"type": "jsonl", "path": "x.jsonl", "limt": 3}, "unknown key\\(s\\) limt; allowed"),
        ({"type": "jsonl"}, "type jsonl needs path"),
        ({"type": "builtin", "builtin": "facts"}, "builtin task 'facts' needs path"),
        ({"type": "hellaswag", "source": "local"}, "source local needs path"),
        ({"type": "hellaswag", "path": "x.jsonl"}, "path is set but source is hub"),
        ({"type": "hellaswag", "num_fewshot": 5}, "num_fewshot applies to mmlu only"),
        ({"type": "jsonl", "path": "x.jsonl", "limit": 0}, "limit must be null or an integer"),
        ({"type": "jsonl", "path": "x.jsonl", "subsample": True}, "subsample: true needs a limit"),
        ({"type": "mmlu", "subjects": []}, "subjects must be null or a non-empty list"),
    ],
)
def test_bad_specs(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_task(spec)


def test_hub_unavailable_gives_one_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def offline(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        raise ConnectionError(
            "Couldn't reach 'Rowan/hellaswag' on the Hub\n(LocalEntryNotFoundError)"
        )

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError) as error:
        load_task({"type": "hellaswag"})
    message = str(error.value)
    assert calls == [("Rowan/hellaswag", None, "validation")]
    assert "\n" not in message
    assert message.startswith("could not load the data set Rowan/hellaswag (split validation)")
    assert "source: local, path:" in message and "HF_DATASETS_OFFLINE=1" in message
    assert "HF_HOME" in message
    with pytest.raises(ValueError, match="cais/mmlu \\(config all, split test\\)"):
        load_task({"type": "mmlu", "num_fewshot": 5})


def test_hub_rows_are_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    test = [
        json.loads(line)
        for line in (FIXTURES / "tasks_mmlu_test.jsonl").read_text().split("\n")
        if line
    ]
    dev = [
        json.loads(line)
        for line in (FIXTURES / "tasks_mmlu_dev.jsonl").read_text().split("\n")
        if line
    ]
    seen = []

    def fake(path, name=None, split=None, **kwargs):
        seen.append((path, name, split))
        return {"test": test, "dev": dev}[split]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    items = load_task({"type": "mmlu", "num_fewshot": 1})
    assert seen == [("cais/mmlu", "all", "test"), ("cais/mmlu", "all", "dev")]
    assert items[0].context == MATH + "What is 1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n" + (
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:"
    )


def test_limit_and_seeded_subsample(tmp_path: Path) -> None:
    path = str(write_lines(tmp_path / "many.jsonl", plain_rows(50)))
    first = load_task({"type": "jsonl", "path": path, "limit": 5})
    assert [item.id for item in first] == ["q0", "q1", "q2", "q3", "q4"]
    spec = {"type": "jsonl", "path": path, "limit": 10, "subsample": True}
    a = [item.id for item in load_task(spec, seed=1)]
    b = [item.id for item in load_task(spec, seed=1)]
    c = [item.id for item in load_task(spec, seed=2)]
    assert a == b and a != c and len(set(a)) == 10
    assert a == sorted(a, key=lambda name: int(name[1:]))  # kept in data order
    assert a != [f"q{i}" for i in range(10)]
    whole = load_task({"type": "jsonl", "path": path, "limit": 80, "subsample": True}, seed=3)
    assert len(whole) == 50


def test_prepare_task_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare_task = load_script("prepare_task")
    spec = {"type": "hellaswag", "source": "local", "path": str(FIXTURES / "tasks_hellaswag.jsonl")}
    prepare_task.main(
        [
            "--task",
            "hs",
            "--params",
            json.dumps({**spec, "seed": 42}),
            "--n-samples",  # by hand: the section's limit
            "2",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert "hs: 2 items" in capsys.readouterr().out
    rows = read_jsonl(tmp_path / "hs.jsonl")
    assert [row["id"] for row in rows] == ["hellaswag/7", "hellaswag/12"]
    assert rows_to_items(rows)[1] == Item(
        "hellaswag/12",
        "Roof shingle removal: A man is sitting on a roof. He",
        [
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ],
        3,
        {"task": "hellaswag", "ind": 12, "activity_label": "Roof shingle removal"},
    )
    plain = {"type": "jsonl", "path": str(FIXTURES / "tasks_plain.jsonl")}
    argv = ["--task", "p", "--params", json.dumps(plain), "--seed", "1"]
    prepare_task.main([*argv, "--output-dir", str(tmp_path)])
    assert len(read_jsonl(tmp_path / "p.jsonl")) == 5
    with pytest.raises(SystemExit, match="^error: missing parameter.*seed"):
        prepare_task.main([*argv[:-2], "--output-dir", str(tmp_path)])


def test_changing_a_task_setting_reruns_only_that_tasks_preparation(tmp_path: Path) -> None:
    """``tasks.<name>.limit`` reaches prepare_task as a parameter Snakemake tracks (built from the
    configuration, not from the rule's input), so changing it schedules that task's
    prepare_task again, and only that one."""
    workdir = copy_workflow(tmp_path / "wf")
    tasks = [f"results/tasks/{name}.jsonl" for name in ("facts", "arithmetic")]
    # the files of a finished make_world and prepare_task; --touch records their metadata
    world = ["world.json", "corpus.txt", "tokenizer/tokenizer.json", "prompt_pairs.jsonl"]
    world += ["attributes.jsonl", "neutral_prompts.jsonl", "tasks/facts.jsonl"]
    world += ["tasks/arithmetic.jsonl"]
    for path in [*(f"results/world/{name}" for name in world), *tasks]:
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).touch()
    snakemake(workdir, "--touch", "--forceall", "--cores", "1", *tasks)
    assert dry_run(workdir, *tasks) == Counter()
    config = workdir / "config" / "config.yaml"
    text = config.read_text(encoding="utf-8")
    old = "facts: {type: builtin, builtin: facts}"
    assert old in text
    config.write_text(text.replace(old, old[:-1] + ", limit: 5}"), encoding="utf-8")
    result = snakemake(workdir, "-n", "--cores", "1", *tasks)
    assert scheduled_jobs(result.stdout + result.stderr) == Counter({"prepare_task": 1})
    assert "wildcards: task=facts" in result.stdout + result.stderr
    assert "params have changed" in (result.stdout + result.stderr).lower()
