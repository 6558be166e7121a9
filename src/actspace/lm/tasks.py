"""Multiple-choice tasks: the item schema and the loaders that turn each benchmark into it.

Every task becomes a list of :class:`Item` (a context, its choices, the index of the correct one).
Prompts are built exactly as lm-evaluation-harness v0.4 builds them, so that scores computed on
these items match the harness:

- HellaSwag (``lm_eval/tasks/hellaswag/utils.py``): query
  ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``, choices
  ``preprocess(ending)``.
- TruthfulQA MC1 / MC2 (``truthfulqa_mc1.yaml``, ``truthfulqa_mc2.yaml``): the fixed six-question
  prefix, then ``"\\n\\nQ: " + question + "\\nA:"``; choices from ``mc1_targets`` (the true
  answer is index 0) or ``mc2_targets`` (true answers first; 0/1 labels in ``metadata["labels"]``).
- MMLU (``mmlu/default/_default_template_yaml`` + one yaml per subject): the subject's description
  line, then ``num_fewshot`` examples from the dev split (the first ones of the same subject, the
  harness's ``first_n`` sampler), each ``"{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: X"``
  followed by ``"\\n\\n"``, then the question; choices ``"A"`` .. ``"D"``. The harness prepends the
  description at zero shots too, and so does this loader.

Choices are stored *without* the target delimiter; scoring puts ``" "`` in front of each.

The task specification is the configuration's ``tasks.<name>`` mapping (see :data:`SPEC_KEYS`).
Data come from the Hugging Face hub (``datasets.load_dataset``) or from a local JSON / JSON Lines
file, optionally gzip-compressed, in the hub's schema.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

#: Task types a specification may name.
TASK_TYPES = ("hellaswag", "truthfulqa_mc1", "truthfulqa_mc2", "mmlu", "jsonl", "builtin")

#: Keys a task specification may hold.
SPEC_KEYS = (
    "type",
    "builtin",
    "source",
    "path",
    "dev_path",
    "hub_id",
    "hub_config",
    "split",
    "num_fewshot",
    "limit",
    "subsample",
    "subjects",
)

#: Hub data set, configuration and split used when the specification names none.
HUB_DEFAULTS: dict[str, tuple[str, str | None, str]] = {
    "hellaswag": ("Rowan/hellaswag", None, "validation"),
    "truthfulqa_mc1": ("truthful_qa", "multiple_choice", "validation"),
    "truthfulqa_mc2": ("truthful_qa", "multiple_choice", "validation"),
    "mmlu": ("cais/mmlu", "all", "test"),
}

#: The split MMLU draws its few-shot examples from (``fewshot_split: dev``).
MMLU_FEWSHOT_SPLIT = "dev"

#: MMLU answer letters; the choices scored are these (the delimiter " " is added by scoring).
MMLU_LETTERS = ("A", "B", "C", "D")

#: The fixed prompt of the harness's ``truthfulqa_mc1.yaml`` (shared by ``truthfulqa_mc2``).
TRUTHFULQA_PREFIX = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)


@dataclass(frozen=True)
class Item:
    """One multiple-choice question.

    ``choices`` hold no target delimiter. ``metadata["task"]`` names the task type;
    TruthfulQA MC2 items carry ``metadata["labels"]``, one 0/1 per choice, true answers first.
    """

    id: str
    context: str
    choices: list[str]
    label: int
    metadata: dict[str, Any] = field(default_factory=dict)


class _Record(NamedTuple):
    """A raw record and where it came from (for error messages)."""

    where: str
    data: dict[str, Any]


# ----------------------------------------------------------------------------- prompt builders


def preprocess_hellaswag(text: str) -> str:
    """The harness's HellaSwag clean-up: strip, ``" [title]"`` -> ``". "``, drop ``[...]``."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def truthfulqa_context(question: str) -> str:
    """The harness's TruthfulQA prompt for ``question``."""
    return TRUTHFULQA_PREFIX + "\n\nQ: " + question + "\nA:"


def mmlu_description(subject: str) -> str:
    """The description line of an MMLU subject's task yaml."""
    return (
        "The following are multiple choice questions (with answers) about "
        f"{subject.replace('_', ' ')}.\n\n"
    )


def mmlu_question(question: str, choices: Sequence[str]) -> str:
    """The harness's MMLU ``doc_to_text``: question, lettered choices, ``Answer:``."""
    lines = [question.strip()]
    lines += [f"{letter}. {choice}" for letter, choice in zip(MMLU_LETTERS, choices, strict=True)]
    return "\n".join(lines) + "\nAnswer:"


# ----------------------------------------------------------------------------- field checks


def _require(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise ValueError(f"{where}: missing field {key!r}")
    value = doc[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ValueError(f"{where}: field {key!r} must be {names}, not {type(value).__name__}")
    return value


def _strings(value: Any, what: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: {what} must be a non-empty list of strings")
    for number, text in enumerate(value):
        if not isinstance(text, str):
            raise ValueError(f"{where}: {what}[{number}] is {type(text).__name__}, not a string")
        if not text:
            raise ValueError(f"{where}: {what}[{number}] is empty")
    return list(value)


def _label(value: Any, n_choices: int, where: str, key: str = "label") -> int:
    """An integer label (ints or digit strings) checked against the number of choices."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{where}: {key} is empty (an unlabelled split?)")
        try:
            value = int(value)
        except ValueError:
            raise ValueError(f"{where}: {key} {value!r} is not an integer") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: {key} must be an integer, not {type(value).__name__}")
    if not 0 <= value < n_choices:
        raise ValueError(f"{where}: {key} {value} is out of range for {n_choices} choices")
    return value


# ----------------------------------------------------------------------------- per-type items


def hellaswag_item(doc: dict[str, Any], index: int, where: str) -> Item:
    """A HellaSwag record (``Rowan/hellaswag`` schema) as an item; id ``hellaswag/{ind}``."""
    activity = _require(doc, "activity_label", str, where)
    ctx_a = _require(doc, "ctx_a", str, where)
    ctx_b = _require(doc, "ctx_b", str, where)
    endings = _strings(doc.get("endings"), "endings", where)
    choices = [preprocess_hellaswag(ending) for ending in endings]
    for number, choice in enumerate(choices):
        if not choice:
            raise ValueError(f"{where}: endings[{number}] is empty after preprocessing")
    label = _label(doc.get("label"), len(choices), where)
    ind = doc.get("ind", index)
    context = preprocess_hellaswag(activity + ": " + ctx_a + " " + ctx_b.capitalize())
    metadata = {"task": "hellaswag", "ind": ind, "activity_label": activity}
    if doc.get("source_id") is not None:  # endings written from one source video: one group
        metadata["source_id"] = str(doc["source_id"])
    return Item(f"hellaswag/{ind}", context, choices, label, metadata)


def truthfulqa_item(doc: dict[str, Any], index: int, where: str, variant: str) -> Item:
    """A TruthfulQA ``multiple_choice`` record as an MC1 or MC2 item; id ``truthfulqa/{index}``."""
    question = _require(doc, "question", str, where)
    key = f"{variant}_targets"
    targets = _require(doc, key, dict, where)
    choices = _strings(targets.get("choices"), f"{key}.choices", where)
    labels = targets.get("labels")
    if (
        not isinstance(labels, list)
        or len(labels) != len(choices)
        or any(label not in (0, 1) or isinstance(label, bool) for label in labels)
    ):
        raise ValueError(f"{where}: {key}.labels must be one 0 or 1 per choice")
    # The harness takes index 0 as MC1's answer and every MC2 answer labelled 1 as true. Two
    # items of the data set list a true answer after a false one; the harness (0.4.13) counts
    # it as true, and so does scoring.mc2_score: the labels are kept as given.
    if labels[0] != 1:
        raise ValueError(f"{where}: {key}.labels must list a true answer (1) first")
    if variant == "mc2" and 0 not in labels:
        raise ValueError(f"{where}: {key}.labels has no false answer (0)")
    metadata: dict[str, Any] = {"task": f"truthfulqa_{variant}", "question": question}
    if variant == "mc2":
        metadata["labels"] = list(labels)
    return Item(f"truthfulqa/{index}", truthfulqa_context(question), choices, 0, metadata)


class _MMLUDoc(NamedTuple):
    question: str
    subject: str
    choices: tuple[str, ...]
    answer: int


def _mmlu_doc(doc: dict[str, Any], where: str) -> _MMLUDoc:
    question = _require(doc, "question", str, where)
    subject = _require(doc, "subject", str, where)
    choices = _strings(doc.get("choices"), "choices", where)
    if len(choices) != len(MMLU_LETTERS):
        raise ValueError(f"{where}: MMLU needs 4 choices, found {len(choices)}")
    answer = doc.get("answer")
    if isinstance(answer, str) and answer.strip() in MMLU_LETTERS:
        answer = MMLU_LETTERS.index(answer.strip())
    return _MMLUDoc(question, subject, tuple(choices), _label(answer, 4, where, key="answer"))


def _mmlu_items(
    records: list[_Record],
    dev_records: list[_Record] | None,
    num_fewshot: int,
    same_split: bool,
    subjects: list[str] | None,
    origin: str,
) -> list[Item]:
    """MMLU items, with the description and ``num_fewshot`` first-n dev examples per subject."""
    docs = [(record.where, _mmlu_doc(record.data, record.where)) for record in records]
    dev_by_subject: dict[str, list[_MMLUDoc]] = {}
    for record in dev_records or []:
        dev_doc = _mmlu_doc(record.data, record.where)
        dev_by_subject.setdefault(dev_doc.subject, []).append(dev_doc)
    if subjects is not None:
        present = {doc.subject for _, doc in docs}
        missing = sorted(set(subjects) - present)
        if missing:
            raise ValueError(f"{origin}: no MMLU items of subject(s) {', '.join(missing)}")
    items: list[Item] = []
    counters: dict[str, int] = {}
    for where, doc in docs:
        number = counters.get(doc.subject, 0)
        counters[doc.subject] = number + 1
        if subjects is not None and doc.subject not in subjects:
            continue
        context = mmlu_description(doc.subject)
        if num_fewshot > 0:
            pool = dev_by_subject.get(doc.subject, [])
            # first_n sampler: draw one extra when the few-shot split is the evaluated split,
            # then drop the evaluated document itself (lm_eval/api/samplers.py get_context).
            wanted = num_fewshot + 1 if same_split else num_fewshot
            if len(pool) < wanted:
                raise ValueError(
                    f"{where}: {num_fewshot}-shot MMLU needs {wanted} dev examples of subject "
                    f"{doc.subject!r}, found {len(pool)}"
                )
            shots = [shot for shot in pool[:wanted] if shot != doc][:num_fewshot]
            for shot in shots:
                context += (
                    mmlu_question(shot.question, shot.choices)
                    + " "
                    + MMLU_LETTERS[shot.answer]
                    + "\n\n"
                )
        context += mmlu_question(doc.question, doc.choices)
        metadata = {"task": "mmlu", "subject": doc.subject, "num_fewshot": num_fewshot}
        items.append(
            Item(f"mmlu/{doc.subject}/{number}", context, list(MMLU_LETTERS), doc.answer, metadata)
        )
    return items


def plain_item(doc: dict[str, Any], where: str, task: str = "jsonl") -> Item:
    """A record of the plain schema ``{id, context, choices, label[, metadata]}``."""
    raw_id = doc.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        raise ValueError(f"{where}: field 'id' must be a non-empty string or an integer")
    context = _require(doc, "context", str, where)
    choices = _strings(doc.get("choices"), "choices", where)
    label = _label(doc.get("label"), len(choices), where)
    metadata = doc.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: field 'metadata' must be an object")
    metadata = dict(metadata)
    labels = metadata.get("labels")
    if labels is not None and (
        not isinstance(labels, list)
        or len(labels) != len(choices)
        or any(value not in (0, 1) or isinstance(value, bool) for value in labels)
    ):
        raise ValueError(f"{where}: metadata.labels must be one 0 or 1 per choice")
    metadata.setdefault("task", task)
    return Item(str(raw_id), context, choices, label, metadata)


# ----------------------------------------------------------------------------- reading data


def _open_text(path: Path) -> str:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return handle.read()
    return path.read_text(encoding="utf-8")


def read_records(path: str | Path) -> list[_Record]:
    """Records of a local JSON (array) or JSON Lines file, optionally ``.gz``.

    A ``.json`` file that is not an array is read as JSON Lines, as ``datasets.Dataset.to_json``
    writes them. Each record remembers its file and line (or array entry) for error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: task data file not found")
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if not name.endswith((".json", ".jsonl")):
        raise ValueError(f"{path}: expected a .json, .jsonl, .json.gz or .jsonl.gz file")
    try:
        text = _open_text(path)
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise ValueError(f"{path}: cannot read ({error})") from None
    records: list[_Record] = []
    if name.endswith(".json") and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None
        for number, row in enumerate(rows, start=1):
            where = f"{path}, item {number}"
            if not isinstance(row, dict):
                raise ValueError(f"{where}: not a JSON object")
            records.append(_Record(where, row))
        return records
    # Split on "\n" only: str.splitlines would also split inside strings at U+0085 and the like.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: not a JSON object")
        records.append(_Record(where, row))
    return records


def hub_records(hub_id: str, config: str | None, split: str) -> list[_Record]:
    """Records of a hub data set split, or a one-line ValueError that says how to fix it."""
    label = hub_id + (f" (config {config}, split {split})" if config else f" (split {split})")
    try:
        import datasets

        dataset = datasets.load_dataset(hub_id, config, split=split)
    except Exception as error:  # any failure (network, missing cache, bad name): one message
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise ValueError(
            f"could not load the data set {label} from the Hugging Face hub: {reason}. "
            "Fix: point the task at a local copy (source: local, path: a JSON/JSONL(.gz) file "
            "in the same schema), or make the data set available in the datasets cache "
            "(HF_HOME pointing at it, with HF_DATASETS_OFFLINE=1 when offline)"
        ) from None
    return [_Record(f"{label} row {index}", dict(row)) for index, row in enumerate(dataset)]


# ----------------------------------------------------------------------------- the loader


def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A task specification checked and completed, without reading any data; ValueError
    ``task spec: <key> ...`` otherwise (``actspace.config.resolve_config`` runs it too)."""
    if not isinstance(spec, dict):
        raise ValueError(f"task spec must be a mapping, not {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(
            f"task spec: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SPEC_KEYS)}"
        )
    kind = spec.get("type")
    if kind not in TASK_TYPES:
        raise ValueError(f"task spec: type {kind!r} is not one of {', '.join(TASK_TYPES)}")
    source = spec.get("source") or "hub"
    if source not in ("hub", "local"):
        raise ValueError(f"task spec: source {source!r} is not one of hub, local")
    limit = spec.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"task spec: limit must be null or an integer >= 1, not {limit!r}")
    subsample = spec.get("subsample", False)
    if not isinstance(subsample, bool):
        raise ValueError(f"task spec: subsample must be true or false, not {subsample!r}")
    if subsample and limit is None:
        raise ValueError("task spec: subsample: true needs a limit (the size of the subset)")
    shots = spec.get("num_fewshot") or 0
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        raise ValueError(f"task spec: num_fewshot must be an integer >= 0, not {shots!r}")
    if shots and kind != "mmlu":
        raise ValueError(f"task spec: num_fewshot applies to mmlu only, not {kind}")
    subjects = spec.get("subjects")
    if subjects is not None:
        if kind != "mmlu":
            raise ValueError(f"task spec: subjects applies to mmlu only, not {kind}")
        if (
            not isinstance(subjects, list)
            or not subjects
            or not all(isinstance(s, str) and s for s in subjects)
        ):
            raise ValueError("task spec: subjects must be null or a non-empty list of names")
    for key in ("path", "dev_path", "hub_id", "hub_config", "split", "builtin"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"task spec: {key} must be a non-empty string")
    if kind in HUB_DEFAULTS:
        if source == "local" and not spec.get("path"):
            raise ValueError(f"task spec: source local needs path (a {kind} JSON/JSONL file)")
        if source == "hub" and spec.get("path"):
            raise ValueError("task spec: path is set but source is hub; set source: local")
    if kind == "jsonl" and not spec.get("path"):
        raise ValueError("task spec: type jsonl needs path (a JSONL file of items)")
    if kind == "builtin" and not spec.get("path"):
        name = spec.get("builtin") or "?"
        raise ValueError(
            f"task spec: builtin task {name!r} needs path, the item file the world step writes"
        )
    return {
        **spec,
        "source": source,
        "limit": limit,
        "subsample": subsample,
        "num_fewshot": shots,
        "subjects": subjects,
    }


def select_items(
    items: list[Item], limit: int | None, subsample: bool, seed: int = 0
) -> list[Item]:
    """The first ``limit`` items, or (``subsample``) a seeded random subset kept in data order."""
    if limit is None or limit >= len(items):
        return list(items)
    if not subsample:
        return items[:limit]
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[index] for index in chosen]


def _check_ids(items: list[Item], where: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"{where}: item id {item.id!r} appears more than once")
        seen.add(item.id)


def load_task(spec: dict[str, Any], *, seed: int = 0) -> list[Item]:
    """Load a task's items as the configuration's ``tasks.<name>`` mapping describes.

    Keys (all but ``type`` optional): ``type`` (one of :data:`TASK_TYPES`), ``source``
    (``hub`` | ``local``, default hub; jsonl and builtin are always local), ``path`` (local file:
    .json, .jsonl, .json.gz, .jsonl.gz), ``hub_id`` / ``hub_config`` / ``split`` (defaults in
    :data:`HUB_DEFAULTS`), ``num_fewshot`` (mmlu only), ``dev_path`` (local MMLU dev file for
    few-shot examples), ``subjects`` (mmlu only: keep these subjects), ``limit`` (null or the
    number of items), ``subsample`` (take a seeded random subset of ``limit`` items instead of
    the first ones), ``builtin`` (the built-in task's name, recorded in metadata).
    Raises ValueError with one message naming the file, the line and what is wrong.
    """
    spec = check_spec(spec)
    kind = spec["type"]
    items: list[Item]
    if kind in ("jsonl", "builtin"):
        records = read_records(spec["path"])
        task_name = (
            f"builtin/{spec['builtin']}" if kind == "builtin" and spec.get("builtin") else kind
        )
        items = [plain_item(record.data, record.where, task_name) for record in records]
        origin = str(spec["path"])
    else:
        default_id, default_config, default_split = HUB_DEFAULTS[kind]
        hub_id = spec.get("hub_id") or default_id
        config = spec.get("hub_config") or default_config
        split = spec.get("split") or default_split
        if spec["source"] == "local":
            records = read_records(spec["path"])
            origin = str(spec["path"])
        else:
            records = hub_records(hub_id, config, split)
            origin = hub_id
        if kind == "hellaswag":
            items = [hellaswag_item(r.data, i, r.where) for i, r in enumerate(records)]
        elif kind in ("truthfulqa_mc1", "truthfulqa_mc2"):
            variant = kind.rsplit("_", 1)[1]
            items = [truthfulqa_item(r.data, i, r.where, variant) for i, r in enumerate(records)]
        else:
            dev_records = None
            same_split = False
            if spec["num_fewshot"] > 0:
                if spec["source"] == "local":
                    if not spec.get("dev_path"):
                        raise ValueError(
                            f"task spec: {spec['num_fewshot']}-shot MMLU from a local file "
                            "needs dev_path (the dev split, same schema)"
                        )
                    dev_records = read_records(spec["dev_path"])
                    same_split = Path(spec["dev_path"]).resolve() == Path(spec["path"]).resolve()
                else:
                    dev_records = hub_records(hub_id, config, MMLU_FEWSHOT_SPLIT)
                    same_split = split == MMLU_FEWSHOT_SPLIT
            items = _mmlu_items(
                records, dev_records, spec["num_fewshot"], same_split, spec["subjects"], origin
            )
    if not items:
        raise ValueError(f"{origin}: the task has no items")
    _check_ids(items, origin)
    return select_items(items, spec["limit"], spec["subsample"], seed)


# ----------------------------------------------------------------------------- on-disk rows


def items_to_rows(items: Iterable[Item]) -> list[dict[str, Any]]:
    """Items as the JSON objects of ``results/tasks/{task}.jsonl``."""
    return [
        {
            "id": item.id,
            "context": item.context,
            "choices": list(item.choices),
            "label": item.label,
            "metadata": dict(item.metadata),
        }
        for item in items
    ]


def rows_to_items(rows: Iterable[dict[str, Any]], *, source: str = "rows") -> list[Item]:
    """Items from rows written by :func:`items_to_rows`, checked like a plain JSONL file."""
    items = []
    for number, row in enumerate(rows, start=1):
        where = f"{source}, row {number}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: not a JSON object")
        items.append(plain_item(row, where, task="jsonl"))
    _check_ids(items, source)
    return items
