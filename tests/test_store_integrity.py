"""Activation stores cannot be silently corrupted (issue 14, Why 4 and the store parts of Why 6).

Cases, one line each (the input, and what is said now):

- a byte flipped in the data region of an activation file of the default study's size (7,680
  floats): ``<file>: sha256 differs from meta.json's ...`` at open (files up to 64 MiB are hashed
  whole by the default, fast check);
- a file above 64 MiB (scaled down here): the fast check hashes the header and 64 evenly spaced
  1 MiB blocks, so a flip inside a block is caught and one between blocks only by the full check
  (``check="full"`` or ``ACTSPACE_STORE_CHECK=full``);
- a file of the wrong size: ``<file>: N bytes, but meta.json recorded M`` (or the safetensors
  header's own "truncated" line);
- a store written before checksums (no ``checksums`` in meta.json): opens, every other check
  runs, ``store.integrity`` says it is unchecked (results already computed stay usable);
- a malformed checksum record or a file missing from it: one line naming meta.json / the file;
- ``ACTSPACE_STORE_CHECK=quick``: one line naming the variable and the allowed values;
- score rows: ``{}``, a missing ``correct``, a label out of range, a bool or string label,
  ``correct`` as 1 or "yes", too few / too many log-likelihoods, a null or string
  log-likelihood, an ``index`` out of order, a non-object line, invalid JSON, invalid UTF-8:
  ``<scores.jsonl>: line N: <what>``;
- a truncated activation file: ``<file>: truncated or corrupted safetensors file``;
- a truncated model.safetensors: ``could not load model from folder '<dir>': <file>: truncated
  ...`` (a ModelLoadError; the script prints it as one ``error:`` line);
- contexts longer than the model's window: counted in meta.json (``n_truncated``,
  ``truncation``) and the script's summary line, with a warning naming the count and the task;
  ``truncation: refuse`` stops before the store folder is touched with one line naming the
  task, the count and the window;
- a task whose items have a single choice: refused with one line naming the task and the item,
  before the model is loaded;
- a valid extraction: meta.json records the size and sha256 of the three files, which match
  the files' own hashes, and a full check passes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
from helpers.scripts import assert_clean_exit, load_script
from helpers.stores import synthetic_store
from safetensors import safe_open

from actspace.core import checksums
from actspace.core.checksums import StoreCorruption, file_checksum
from actspace.core.io import write_jsonl
from actspace.core.schema import validate_schema
from actspace.core.store import CHECKED_FILES, ActivationStore, read_header
from actspace.lm.extraction import TruncationRefused, extract_store
from actspace.lm.models import ModelLoadError, load_model
from actspace.lm.tasks import Item, items_to_rows

ITEMS = [
    Item("a", "The quick brown fox", ["jumps over the lazy dog.", "sat."], 0, {}),
    Item("b", "A man is sitting on a roof. He starts", ["pulling up roofing.", "to fly"], 1, {}),
    Item("c", "Question: what is the capital of France?\nAnswer:", ["Paris", "the bird"], 0, {}),
    Item(
        "d",
        "The cat sat on the mat and looked at the bird outside the window. " * 3,
        ["A", "so do A, B, C"],
        1,
        {},
    ),
]
EXTRACT = {
    key: value
    for key, value in validate_schema({})["extract"].items()
    if key in ("poolings", "batch_size", "shard_size", "storage_dtype", "truncation")
}


def _with_checksums(folder: Path) -> Path:
    """Record the files' checksums in meta.json, as extraction does."""
    meta = json.loads((folder / "meta.json").read_text())
    meta["checksums"] = {name: file_checksum(folder / name) for name in CHECKED_FILES}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def _default_sized_store(tmp_path: Path, checked: bool = True) -> Path:
    """A store the size of the default study's: 120 items x 4 layers x 16 d = 7,680 floats."""
    folder = synthetic_store(tmp_path / "m" / "t", n=120, n_layers=3, d=16)
    return _with_checksums(folder) if checked else folder


def _data_offset(path: Path, tensor: str) -> int:
    """Where tensor ``tensor``'s bytes start in the file."""
    header = read_header(path)
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
    return 8 + header_len + header[tensor]["data_offsets"][0]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _one_line(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


# ---- checksums --------------------------------------------------------------------------------


def test_a_flipped_byte_in_the_data_region_is_caught_by_the_default_check(tmp_path, monkeypatch):
    monkeypatch.delenv(checksums.CHECK_ENV, raising=False)
    folder = _default_sized_store(tmp_path)
    pooled = folder / "pooled.safetensors"
    with safe_open(pooled, framework="pt") as handle:
        assert handle.get_slice("last").get_shape() == [120, 4, 16]  # 7,680 floats
    assert ActivationStore(folder).integrity == "fast"
    _flip(pooled, _data_offset(pooled, "last") + 4 * 3_000 + 2)  # float 3,000, a middle byte
    with pytest.raises(StoreCorruption) as error:
        ActivationStore(folder)
    _one_line(error, str(pooled), "sha256 differs from meta.json's", "re-extract")
    # the choice-end file and the scores are checked too
    folder = _default_sized_store(tmp_path / "again")
    ends = folder / "choice_end.safetensors"
    _flip(ends, ends.stat().st_size - 1)
    with pytest.raises(StoreCorruption, match=r"choice_end\.safetensors: sha256 differs"):
        ActivationStore(folder)


def test_large_files_are_sampled_by_the_fast_check_and_read_whole_by_the_full_one(
    tmp_path, monkeypatch
):
    monkeypatch.delenv(checksums.CHECK_ENV, raising=False)
    # scaled down: "large" above 4 KiB, samples of 4 blocks of 256 bytes
    monkeypatch.setattr(checksums, "FULL_CHECK_BYTES", 4096)
    monkeypatch.setattr(checksums, "SAMPLE_BLOCK_BYTES", 256)
    monkeypatch.setattr(checksums, "SAMPLE_BLOCKS", 4)
    folder = _default_sized_store(tmp_path)
    pooled = folder / "pooled.safetensors"
    record = json.loads((folder / "meta.json").read_text())["checksums"]["pooled.safetensors"]
    size = pooled.stat().st_size
    assert record["bytes"] == size and record["sample"]["blocks"] == 4
    # blocks start at 0, 1/3, 2/3 of (size - 256) and at size - 256
    last = size - 256
    inside, between = last // 3 + 100, last // 3 + 256 + 100
    assert between < 2 * last // 3
    _flip(pooled, between)
    assert ActivationStore(folder).integrity == "fast"  # not in the sample: the fast check passes
    with pytest.raises(StoreCorruption, match=r"pooled\.safetensors: sha256 differs"):
        ActivationStore(folder, check="full")
    monkeypatch.setenv(checksums.CHECK_ENV, "full")
    with pytest.raises(StoreCorruption, match=r"pooled\.safetensors: sha256 differs"):
        ActivationStore(folder)
    monkeypatch.delenv(checksums.CHECK_ENV)
    _flip(pooled, between)  # restored
    assert ActivationStore(folder, check="full").integrity == "full"
    _flip(pooled, inside)
    with pytest.raises(StoreCorruption) as error:
        ActivationStore(folder)
    _one_line(error, str(pooled), "sampled blocks differs")


def test_a_file_of_another_size_is_named(tmp_path):
    folder = _default_sized_store(tmp_path)
    scores = folder / "scores.jsonl"
    scores.write_bytes(scores.read_bytes() + b"\n")
    with pytest.raises(StoreCorruption) as error:
        ActivationStore(folder)
    _one_line(error, str(scores), "bytes, but meta.json recorded")
    pooled = folder / "pooled.safetensors"
    pooled.write_bytes(pooled.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"pooled\.safetensors: truncated or corrupted"):
        ActivationStore(folder)


def test_a_store_written_before_checksums_still_opens(tmp_path):
    """Chosen: open it (every other check still runs) so existing results are not lost."""
    folder = _default_sized_store(tmp_path, checked=False)
    store = ActivationStore(folder, check="full")
    assert store.integrity.startswith("unchecked: meta.json has no checksums")
    assert store.n_items == 120 and store.layer(2).shape == (120, 16)


def test_malformed_checksum_records_are_named(tmp_path, monkeypatch):
    folder = _default_sized_store(tmp_path)
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    broken = {**meta, "checksums": {**meta["checksums"], "scores.jsonl": {"bytes": "x"}}}
    meta_path.write_text(json.dumps(broken))
    with pytest.raises(StoreCorruption, match=r"scores\.jsonl: its checksum record in meta"):
        ActivationStore(folder)
    del broken["checksums"]["scores.jsonl"]
    meta_path.write_text(json.dumps(broken))
    with pytest.raises(StoreCorruption, match=r"meta\.json: no checksum for scores\.jsonl"):
        ActivationStore(folder)
    meta_path.write_text(json.dumps({**meta, "checksums": []}))
    with pytest.raises(StoreCorruption, match="'checksums' must be an object"):
        ActivationStore(folder)
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setenv(checksums.CHECK_ENV, "quick")
    with pytest.raises(ValueError) as error:
        ActivationStore(folder)
    _one_line(error, "ACTSPACE_STORE_CHECK", "'quick' is not allowed (fast or full)")


# ---- score rows -------------------------------------------------------------------------------

BAD_ROWS = [
    ({}, "line 3: missing key 'id'"),
    ({"drop": "correct"}, "line 3: missing key 'correct'"),
    ({"label": 4}, "line 3: label 4 is not a choice index (an integer from 0 to 3)"),
    ({"label": -1}, "line 3: label -1 is not a choice index"),
    ({"label": True}, "line 3: label True is not a choice index"),
    ({"label": "1"}, "line 3: label '1' is not a choice index"),
    ({"correct": 1}, "line 3: 'correct' is 1, not true or false"),
    ({"correct": "yes"}, "line 3: 'correct' is 'yes', not true or false"),
    ({"logliks": [-1.0, -2.0, -3.0]}, "line 3: 3 log-likelihoods for 4 choices"),
    ({"logliks": [-1.0] * 5}, "line 3: 5 log-likelihoods for 4 choices"),
    ({"logliks": [-1.0, None, -2.0, -3.0]}, "line 3: 'logliks' must be a list of finite numbers"),
    ({"logliks": "-1,-2,-3,-4"}, "line 3: 'logliks' must be a list of finite numbers"),
    ({"index": 7}, "line 3: index 7, but it is row 2 (rows are in item order)"),
]


def _rewrite_row(folder: Path, number: int, change: dict | None = None, raw: bytes = b"") -> None:
    path = folder / "scores.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    if change is None:
        lines[number - 1] = raw
    elif change == {}:
        lines[number - 1] = b"{}\n"
    else:
        row = json.loads(lines[number - 1])
        row.pop(change.pop("drop", None), None)
        row.update(change)
        lines[number - 1] = (json.dumps(row) + "\n").encode()
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(("change", "message"), BAD_ROWS)
def test_bad_score_rows_name_the_file_and_line(tmp_path, change, message):
    """Rows are checked whether or not the store has checksums (here: one written without)."""
    folder = _default_sized_store(tmp_path, checked=False)
    _rewrite_row(folder, 3, dict(change))
    with pytest.raises(StoreCorruption) as error:
        ActivationStore(folder)
    _one_line(error, f"{folder / 'scores.jsonl'}: {message}")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"id": "x", "label": 0\n', "line 2: not valid JSON"),
        (b"[1, 2, 3]\n", "line 2: not a JSON object"),
        (b'{"id": "caf\xe9"}\n', "line 2: not valid UTF-8 (byte 12 of the line)"),
    ],
)
def test_unreadable_score_lines_name_the_file_and_line(tmp_path, raw, message):
    folder = _default_sized_store(tmp_path, checked=False)
    _rewrite_row(folder, 2, raw=raw)
    with pytest.raises(StoreCorruption) as error:
        ActivationStore(folder)
    _one_line(error, f"{folder / 'scores.jsonl'}: {message}")


def test_an_edited_score_row_of_a_checksummed_store_fails_its_checksum(tmp_path):
    folder = _default_sized_store(tmp_path)
    _rewrite_row(folder, 3, {"correct": "yes"})
    with pytest.raises(StoreCorruption, match=r"scores\.jsonl: .*meta\.json"):
        ActivationStore(folder)


# ---- extraction -------------------------------------------------------------------------------


def _extract(model_dir: Path, items: list[Item], out: Path, **kwargs) -> dict:
    model, tokenizer = load_model(model_dir, dtype="float32", device="cpu")
    return extract_store(model, tokenizer, items, out, progress=False, **{**EXTRACT, **kwargs})


def test_extraction_records_checksums_that_match_the_files(tiny_model_dir, tmp_path):
    meta = _extract(tiny_model_dir("gpt2"), ITEMS, tmp_path, task_name="demo")
    assert sorted(meta["checksums"]) == sorted(CHECKED_FILES)
    for name in CHECKED_FILES:
        data = (tmp_path / name).read_bytes()
        assert meta["checksums"][name] == {
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    assert json.loads((tmp_path / "meta.json").read_text())["checksums"] == meta["checksums"]
    assert (meta["n_truncated"], meta["truncation"]) == (0, "truncate")
    assert ActivationStore(tmp_path, check="full").integrity == "full"


def test_truncated_contexts_are_counted_and_warned_about(tiny_model_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="actspace.lm.extraction"):
        meta = _extract(
            tiny_model_dir("gpt2"), ITEMS, tmp_path / "cut", task_name="demo", max_length=64
        )
    assert (meta["n_truncated"], meta["truncation"], meta["max_length"]) == (1, "truncate", 64)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "task 'demo': 1 of 4 items are longer than the model's window of 64 tokens (context + "
        "longest choice): their contexts were cut from the left (extract.truncation: refuse "
        "stops instead)"
    ]


def test_truncation_refused_when_configured(tiny_model_dir, tmp_path):
    store = tmp_path / "store"
    _extract(tiny_model_dir("gpt2"), ITEMS, store, task_name="demo")
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    with pytest.raises(TruncationRefused) as error:
        _extract(
            tiny_model_dir("gpt2"),
            ITEMS,
            store,
            task_name="demo",
            max_length=64,
            truncation="refuse",
        )
    assert str(error.value) == (
        "task 'demo': 1 of 4 items are longer than the model's window of 64 tokens (context + "
        "longest choice); extract.truncation is refuse (set it to truncate to cut their contexts "
        "from the left)"
    )
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before  # store untouched
    with pytest.raises(ValueError, match="truncation 'cut' unknown; allowed: truncate, refuse"):
        _extract(tiny_model_dir("gpt2"), ITEMS, tmp_path / "x", truncation="cut")


def test_single_choice_items_are_refused(tiny_model_dir, tmp_path):
    items = [*ITEMS[:2], Item("solo", "The cat sat on the", ["mat"], 0, {})]
    with pytest.raises(ValueError) as error:
        _extract(tiny_model_dir("gpt2"), items, tmp_path / "s", task_name="demo")
    _one_line(
        error,
        "task 'demo': 1 of 3 items have fewer than 2 choices (first: item 'solo', 1); "
        "multiple-choice scoring needs at least 2 choices per item",
    )
    assert not (tmp_path / "s").exists()


# ---- the script -------------------------------------------------------------------------------


def _script_args(task: Path, out: Path, model: Path | str, **params) -> list[str]:
    section = {**validate_schema({})["extract"], "device": "cpu", **params}
    return [
        "--model",
        str(model),
        "--task",
        str(task),
        "--output-dir",
        str(out),
        "--params",
        json.dumps(section),
        "--no-progress",
    ]


def test_script_counts_refuses_and_names_bad_inputs(tiny_model_dir, tmp_path, capsys):
    script = load_script("extract")
    task = tmp_path / "demo.jsonl"
    write_jsonl(task, items_to_rows(ITEMS))
    model = tiny_model_dir("gpt2")
    out = tmp_path / "store"
    assert script.main([*_script_args(task, out, model), "--max-length", "64"]) == 0
    assert "demo: 4 items, acc" in (line := capsys.readouterr().out)
    assert ", 1 contexts truncated, " in line
    assert ActivationStore(out).meta["n_truncated"] == 1
    refuse = _script_args(task, tmp_path / "r", model, truncation="refuse")
    assert_clean_exit(
        script.main,
        [*refuse, "--max-length", "64"],
        "error: task 'demo': 1 of 4 items are longer than the model's window of 64 tokens",
    )
    # single-choice items: refused before the model is loaded (a model that does not exist)
    solo = tmp_path / "solo.jsonl"
    write_jsonl(solo, items_to_rows([Item("solo", "The cat sat on the", ["mat"], 0, {})]))
    assert_clean_exit(
        script.main,
        _script_args(solo, tmp_path / "s", tmp_path / "no_model"),
        "error: task 'solo': 1 of 1 items have fewer than 2 choices",
    )
    # a corrupted store is named when the summary reads it back
    _flip(out / "pooled.safetensors", (out / "pooled.safetensors").stat().st_size - 3)
    with pytest.raises(StoreCorruption, match=r"pooled\.safetensors: sha256 differs"):
        ActivationStore(out)


def test_truncated_model_weights_are_named(tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir("gpt2"), model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelLoadError) as error:
        load_model(model, dtype="float32", device="cpu")
    _one_line(error, f"could not load model from folder '{model}'", f"{weights}: truncated")
    task = tmp_path / "demo.jsonl"
    write_jsonl(task, items_to_rows(ITEMS))
    assert_clean_exit(
        load_script("extract").main,
        _script_args(task, tmp_path / "s", model),
        f"{weights}: truncated or corrupted safetensors file",
    )
