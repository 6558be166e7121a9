"""One-pass scoring and capture: log-likelihoods match naive scoring, activations match a plain
forward pass, shards resume to an identical store, out-of-memory errors halve the batch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from helpers.scripts import load_script
from helpers.tiny import make_tokenizer, tiny_config
from safetensors import safe_open

from actspace.core.io import write_jsonl
from actspace.core.schema import validate_schema
from actspace.core.store import ActivationStore
from actspace.lm.batching import PADDING_TOLERANCE, length_groups, plan_padding
from actspace.lm.extraction import extract_store, resolve_storage_dtype
from actspace.lm.forward import BatchResult, cache_argument, encode_items, score_batch
from actspace.lm.memory import ExtractionOutOfMemory, is_out_of_memory
from actspace.lm.models import last_hidden_state_is_normed, load_model, residual_blocks
from actspace.lm.scoring import needs_bos, score_reference
from actspace.lm.tasks import Item, items_to_rows

LONG = (
    "The quick brown fox jumps over the lazy dog. A man is sitting on a roof. He starts pulling "
    "up roofing on a roof. The cat sat on the mat and looked at the bird outside the window."
)

#: The extraction must not use deprecated transformers arguments (issue 15).
pytestmark = pytest.mark.filterwarnings("error::FutureWarning")

ITEMS = [
    Item("a", "The quick brown fox", ["jumps over the lazy dog.", "sat.", "is a cat"], 0, {}),
    Item(
        "b",
        "A man is sitting on a roof. He starts",
        ["pulling up roofing.", "to fly", "A", "Paris"],
        1,
        {"source": "x"},
    ),
    Item("c", "Question: what is the capital of France?\nAnswer:", ["Paris", "the bird"], 0, {}),
    Item("d", LONG, ["and 42 appear here too", "D", "so do A, B, C"], 2, {}),
    Item(
        "e",
        "Q: what is 1, 2, 3?\nA:",
        ["Numbers", "A cat", "the mat and the window"],
        0,
        {"task": "truthfulqa_mc2", "labels": [1, 1, 0]},
    ),
    Item("f", "1, 2, 3,", ["10 and 42", "D"], 1, {}),
    Item("g", LONG + " Question:", ["what is the capital", "Paris", "bird"], 1, {}),
]

FAMILIES = ("gpt2", "gpt_neo", "gpt_neox", "opt", "llama", "qwen2", "gemma2", "gemma3")


#: The ``extract:`` settings as the schema's defaults give them (a test overrides what it varies),
#: but stored in float32: these tests compare the store with a float32 forward pass to 1e-5.
EXTRACT = {
    key: value
    for key, value in validate_schema({})["extract"].items()
    if key in ("poolings", "batch_size", "shard_size", "storage_dtype", "truncation")
}
EXTRACT["storage_dtype"] = "float32"


def _extract(model, tokenizer, items, out_dir, **kwargs):
    """:func:`extract_store` with the schema's ``extract:`` settings and ``kwargs`` on top."""
    return extract_store(model, tokenizer, items, out_dir, **{**EXTRACT, **kwargs})


def _load(folder: Path):
    return load_model(folder, dtype="float32", device="cpu")


def _planned(model, tokenizer, items, batch_size, shard_size):
    """(forward calls, token slots, real tokens) that extraction plans for ``items``."""
    encoded, _ = encode_items(tokenizer, items, add_bos=needs_bos(model, tokenizer))
    plans = [
        plan_padding(
            [len(e.context) for e in encoded[start : start + shard_size]],
            [[len(c) for c in e.choices] for e in encoded[start : start + shard_size]],
            batch_size,
        )
        for start in range(0, len(encoded), shard_size)
    ]
    return tuple(sum(getattr(p, key) for p in plans) for key in ("forward_passes", "slots", "real"))


def _reference_states(model, ids: list[int]) -> list[torch.Tensor]:
    """Hidden states of one unpadded sequence, [seq, d] per layer (the normed last one dropped)."""
    with torch.no_grad():
        states = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    keep = len(states) - 1 if last_hidden_state_is_normed(model) else len(states)
    return [h[0] for h in states[:keep]]


@pytest.mark.parametrize("family", FAMILIES)
def test_store_matches_naive_scoring_and_plain_forward(family, tiny_model_dir, tmp_path):
    model, tokenizer = _load(tiny_model_dir(family))
    meta = _extract(model, tokenizer, ITEMS, tmp_path, batch_size=3, shard_size=4, progress=False)
    store = ActivationStore(tmp_path)
    reference = score_reference(model, tokenizer, ITEMS)
    for got, want in zip(store.logliks(), reference, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert [row["id"] for row in store.scores()] == [item.id for item in ITEMS]
    passes, slots, real = _planned(model, tokenizer, ITEMS, batch_size=3, shard_size=4)
    assert meta["forward_passes"] == passes
    assert meta["tokens"]["processed"] == slots and meta["tokens"]["real"] == real
    assert meta["padding_efficiency"] == pytest.approx(slots / real)
    assert meta["padding_efficiency"] <= 1 + PADDING_TOLERANCE
    assert meta["n_layers"] == len(residual_blocks(model))

    add_bos = needs_bos(model, tokenizer)
    encoded, _ = encode_items(tokenizer, ITEMS, add_bos=add_bos)
    pooled = {name: store.pooled(name) for name in ("last", "mean")}
    mask = store.choice_mask()
    ends = [store.choice_end(k)[0] for k in range(store.n_layers + 1)]
    for enc in encoded:
        ctx_states = _reference_states(model, enc.context)
        start = 1 if add_bos else 0
        for k, h in enumerate(ctx_states):
            torch.testing.assert_close(
                torch.from_numpy(pooled["last"][enc.index, k]), h[-1], atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(
                torch.from_numpy(pooled["mean"][enc.index, k]),
                h[start:].mean(0),
                atol=1e-5,
                rtol=1e-5,
            )
        for j, choice in enumerate(enc.choices):
            assert mask[enc.index, j]
            states = _reference_states(model, enc.context + choice)
            for k, h in enumerate(states):
                got = torch.from_numpy(ends[k][enc.index, j])
                torch.testing.assert_close(got, h[-1], atol=1e-5, rtol=1e-5)
        assert not mask[enc.index, len(enc.choices) :].any()


def test_sliding_window_attention_is_exact(tmp_path):
    """Contexts longer than a sliding window: left padding keeps the window in position space."""
    tokenizer = make_tokenizer()
    config = tiny_config("gemma2", len(tokenizer))
    config.sliding_window = 6
    torch.manual_seed(1)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    encoded, _ = encode_items(tokenizer, ITEMS, add_bos=True)
    assert max(len(e.context) for e in encoded) > 3 * config.sliding_window
    result = score_batch(model, encoded)
    reference = score_reference(model, tokenizer, ITEMS)
    for got, want in zip(result.logliks, reference, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def _call_shapes(model, fn):
    """The ``input_ids`` shape of every forward call that ``fn()`` makes, and its result."""
    shapes = []
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        result = fn()
    finally:
        handle.remove()
    return shapes, result


def test_one_context_pass_and_one_pass_per_choice_length_group(tiny_model_dir):
    model, tokenizer = _load(tiny_model_dir("gpt2"))
    encoded, _ = encode_items(tokenizer, ITEMS)
    batch = encoded[:3]
    shapes, result = _call_shapes(model, lambda: score_batch(model, batch))
    lengths = [len(c) for e in batch for c in e.choices]
    groups = length_groups(lengths)
    assert len(shapes) == result.forward_passes == 1 + len(groups) > 2
    assert shapes[0] == (3, max(len(e.context) for e in batch))  # every context once
    # every choice once, from the cache (no context tokens), each group padded to its longest
    assert shapes[1:] == [(len(g), max(lengths[r] for r in g)) for g in groups]
    assert sum(rows * width for rows, width in shapes[1:]) <= (1 + PADDING_TOLERANCE) * sum(lengths)
    assert result.processed_tokens == sum(rows * width for rows, width in shapes)

    # an infinite tolerance gives the former plan: all choices in one pass, padded to the longest
    shapes, wide = _call_shapes(model, lambda: score_batch(model, batch, tolerance=math.inf))
    assert shapes[1:] == [(len(lengths), max(lengths))] and wide.forward_passes == 2
    for got, want in zip(result.logliks, wide.logliks, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_capture_off_gives_same_logliks(tiny_model_dir):
    model, tokenizer = _load(tiny_model_dir("llama"))
    encoded, _ = encode_items(tokenizer, ITEMS)
    with_capture = score_batch(model, encoded)
    without = score_batch(model, encoded, capture=False)
    assert without.pooled == {} and without.choice_end is None
    np.testing.assert_allclose(
        np.concatenate(with_capture.logliks), np.concatenate(without.logliks), atol=1e-6
    )
    assert with_capture.pooled["last"].shape == (len(ITEMS), 4, 32)
    assert with_capture.choice_end.shape == (len(ITEMS), 4, 4, 32)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        name: (folder / name).read_bytes()
        for name in ("pooled.safetensors", "choice_end.safetensors", "scores.jsonl")
    }


def _stable_meta(folder: Path) -> dict:
    meta = json.loads((folder / "meta.json").read_text())
    meta.pop("timings")
    meta.pop("provenance")
    return meta


class Crash(RuntimeError):
    pass


def test_killed_run_resumes_to_an_identical_store(tiny_model_dir, tmp_path):
    model, tokenizer = _load(tiny_model_dir("gpt_neox"))
    kwargs = dict(batch_size=2, shard_size=2, progress=False, model_name="m", task_name="t")
    whole = tmp_path / "whole"
    _extract(model, tokenizer, ITEMS, whole, **kwargs)

    def crash_after_shard_1(shard: int) -> None:
        if shard == 1:
            raise Crash("killed")

    resumed = tmp_path / "resumed"
    with pytest.raises(Crash):
        _extract(model, tokenizer, ITEMS, resumed, on_shard_done=crash_after_shard_1, **kwargs)
    shards = resumed / ".shards"
    assert sorted(p.name for p in shards.glob("shard_*.jsonl")) == [
        "shard_00000.jsonl",
        "shard_00001.jsonl",
    ]
    assert not (resumed / "meta.json").exists()
    progress = json.loads((resumed / "progress.json").read_text())
    assert progress["items_done"] == 4 and progress["items_total"] == 7
    assert progress["last_shard"] == 1 and progress["done"] is False
    # a half-written shard file (killed mid-write) must be recomputed, not trusted
    tensors = shards / "shard_00001.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-10])

    done: list[int] = []
    meta = _extract(model, tokenizer, ITEMS, resumed, on_shard_done=done.append, **kwargs)
    assert done == [1, 2, 3]  # shard 0 was kept, shard 1 redone
    assert meta["timings"]["resumed_shards"] == 1
    assert _files(resumed) == _files(whole)
    assert _stable_meta(resumed) == _stable_meta(whole)
    assert not shards.exists()
    assert json.loads((resumed / "progress.json").read_text())["done"] is True


def test_shards_of_another_run_are_not_reused(tiny_model_dir, tmp_path):
    model, tokenizer = _load(tiny_model_dir("gpt2"))
    kwargs = dict(batch_size=4, shard_size=2, progress=False)

    def crash(shard: int) -> None:
        raise Crash("killed")

    with pytest.raises(Crash):
        _extract(model, tokenizer, ITEMS, tmp_path / "x", on_shard_done=crash, **kwargs)
    # same folder, different items: the old shard must be discarded
    other = [Item(i.id, i.context + " Yes.", i.choices, i.label, i.metadata) for i in ITEMS]
    done: list[int] = []
    _extract(model, tokenizer, other, tmp_path / "x", on_shard_done=done.append, **kwargs)
    _extract(model, tokenizer, other, tmp_path / "y", **kwargs)
    assert done == [0, 1, 2, 3]
    assert _files(tmp_path / "x") == _files(tmp_path / "y")
    # same items, changed weights (a retrained model of the same name): shards are discarded too
    with pytest.raises(Crash):
        _extract(model, tokenizer, ITEMS, tmp_path / "z", on_shard_done=crash, **kwargs)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.add_(0.01)
    done.clear()
    _extract(model, tokenizer, ITEMS, tmp_path / "z", on_shard_done=done.append, **kwargs)
    assert done == [0, 1, 2, 3]


#: Items with one context: length bucketing keeps them in one batch, as large as the ceiling.
SAME_CONTEXT = [
    Item(item.id, "A man is sitting on a roof. He starts", item.choices, 0, {}) for item in ITEMS
]


def test_out_of_memory_halves_the_batch_and_retries(tiny_model_dir, tmp_path, monkeypatch):
    model, tokenizer = _load(tiny_model_dir("opt"))
    kwargs = dict(batch_size=8, shard_size=16, progress=False)
    clean = _extract(model, tokenizer, SAME_CONTEXT, tmp_path / "clean", **kwargs)
    forward = model.forward
    attempts: list[int] = []

    def flaky_forward(*args, **kw):
        if kw.get(cache_argument(model)) is None:  # the context pass
            attempts.append(kw["input_ids"].shape[0])
            if kw["input_ids"].shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return forward(*args, **kw)

    monkeypatch.setattr(model, "forward", flaky_forward)
    meta = _extract(model, tokenizer, SAME_CONTEXT, tmp_path / "oom", **kwargs)
    assert attempts == [7, 4, 2, 2, 2, 1]  # 7 items in one batch, halved twice, then 2, 2, 1
    assert meta["timings"]["oom_retries"] == 2 and meta["timings"]["final_batch_size"] == 2
    passes, slots, _ = _planned(model, tokenizer, SAME_CONTEXT, batch_size=2, shard_size=16)
    assert meta["forward_passes"] == passes and meta["tokens"]["processed"] == slots
    a, b = ActivationStore(tmp_path / "clean"), ActivationStore(tmp_path / "oom")
    for x, y in zip(a.logliks(), b.logliks(), strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert [r["pred"] for r in a.scores()] == [r["pred"] for r in b.scores()]
    np.testing.assert_allclose(a.pooled("mean"), b.pooled("mean"), atol=1e-5)
    np.testing.assert_allclose(a.choice_end(2)[0], b.choice_end(2)[0], atol=1e-5)
    assert clean["forward_passes"] == _planned(model, tokenizer, SAME_CONTEXT, 8, 16)[0]


def test_out_of_memory_at_batch_size_one_fails_clearly(tiny_model_dir, tmp_path, monkeypatch):
    model, tokenizer = _load(tiny_model_dir("gpt2"))

    def oom(*args, **kw):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(model, "forward", oom)
    with pytest.raises(ExtractionOutOfMemory, match="out of memory with batch size 1"):
        _extract(model, tokenizer, ITEMS, tmp_path, batch_size=2, progress=False)
    assert not (tmp_path / "meta.json").exists()


def test_other_errors_are_not_retried(tiny_model_dir, tmp_path, monkeypatch):
    model, tokenizer = _load(tiny_model_dir("gpt2"))
    calls = []

    def broken(*args, **kw):
        calls.append(1)
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(model, "forward", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _extract(model, tokenizer, ITEMS, tmp_path, batch_size=4, progress=False)
    assert len(calls) == 1
    assert is_out_of_memory(RuntimeError("CUDA out of memory"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_storage_dtype_and_meta(tiny_model_dir, tmp_path):
    model, tokenizer = _load(tiny_model_dir("qwen2"))
    assert resolve_storage_dtype("auto", torch.device("cpu")) == torch.float16
    assert resolve_storage_dtype("auto", torch.device("cuda")) == torch.float16
    with pytest.raises(ValueError, match="storage dtype 'int8' unknown"):
        resolve_storage_dtype("int8", torch.device("cpu"))
    meta32 = _extract(model, tokenizer, ITEMS, tmp_path / "f32", progress=False)
    meta16 = _extract(
        model,
        tokenizer,
        ITEMS,
        tmp_path / "f16",
        storage_dtype="float16",
        poolings=("mean",),
        progress=False,
        model_name="tiny-qwen2",
        task_name="demo",
    )
    assert meta32["storage_dtype"] == "float32" and meta16["storage_dtype"] == "float16"
    with safe_open(tmp_path / "f16" / "pooled.safetensors", framework="pt") as handle:
        assert list(handle.keys()) == ["mean"]
        assert handle.get_tensor("mean").dtype == torch.float16
    a, b = ActivationStore(tmp_path / "f32"), ActivationStore(tmp_path / "f16")
    np.testing.assert_allclose(a.layer(2, "mean"), b.layer(2, "mean"), atol=2e-3, rtol=2e-3)
    assert b.meta["model"] == "tiny-qwen2" and b.meta["task"] == "demo"
    assert b.meta["n_items"] == 7 and b.meta["hidden_size"] == 32 and b.meta["n_layers"] == 3
    passes = _planned(model, tokenizer, ITEMS, EXTRACT["batch_size"], EXTRACT["shard_size"])[0]
    assert b.meta["forward_passes"] == passes and b.meta["max_choices"] == 4
    assert torch.__version__.startswith(b.meta["provenance"]["versions"]["torch"])
    mc2 = b.scores()[4]
    assert mc2["n_choices"] == 3 and 0.0 <= mc2["mc2"] <= 1.0
    assert mc2["choice_chars"] == [7, 5, 22]
    assert b.scores()[1]["metadata"] == {"source": "x"}


def test_bad_arguments(tiny_model_dir, tmp_path):
    model, tokenizer = _load(tiny_model_dir("gpt2"))
    with pytest.raises(ValueError, match="poolings"):
        _extract(model, tokenizer, ITEMS, tmp_path, poolings=("max",), progress=False)
    with pytest.raises(ValueError, match="no items"):
        _extract(model, tokenizer, [], tmp_path, progress=False)
    with pytest.raises(ValueError, match="does not fit"):
        encode_items(tokenizer, ITEMS, max_length=3)


def test_long_contexts_are_cut_from_the_left(tiny_model_dir):
    model, tokenizer = _load(tiny_model_dir("gpt2"))
    full, cut = encode_items(tokenizer, ITEMS)
    assert cut == 0
    limited, cut = encode_items(tokenizer, ITEMS, max_length=30)
    assert cut >= 1
    for a, b in zip(full, limited, strict=True):
        assert len(b.context) + max(map(len, b.choices)) <= 30
        assert a.context[len(a.context) - len(b.context) :] == b.context
    assert isinstance(score_batch(model, limited), BatchResult)


def _params(**overrides) -> list[str]:
    """``--params`` as the workflow passes it: the schema's ``extract:`` section, some changed."""
    section = {**validate_schema({})["extract"], **overrides}
    return ["--params", json.dumps(section)]


def test_script_writes_a_store_and_rejects_bad_input(tiny_model_dir, tmp_path, capsys):
    script = load_script("extract")
    task = tmp_path / "demo.jsonl"
    write_jsonl(task, items_to_rows(ITEMS))
    out = tmp_path / "store"
    args = ["--model", str(tiny_model_dir("gpt2")), "--task", str(task), "--output-dir", str(out)]
    small = _params(batch_size=2)
    assert script.main([*args, *small, "--n-samples", "5", "--no-progress"]) == 0
    store = ActivationStore(out)
    assert store.n_items == 5 and store.meta["task"] == "demo"
    assert store.meta["forward_passes"] >= 2 * 3  # batches of at most 2 items: 3 or more
    assert store.meta["padding_efficiency"] <= 1 + PADDING_TOLERANCE
    assert "demo: 5 items, acc" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: task file .*missing.jsonl not found"):
        script.main([*args[:2], "--task", str(tmp_path / "missing.jsonl"), *args[4:], *small])
    with pytest.raises(SystemExit, match="error: poolings must be distinct values"):
        script.main([*args, *_params(poolings=["last", "max"])])
    with pytest.raises(SystemExit, match="error: could not load model"):
        script.main(["--model", str(tmp_path / "nope"), *args[2:], *small])


def test_script_loads_the_model_of_the_reference_the_workflow_passes(tiny_model_dir, tmp_path):
    """The rule passes the model as ``model_ref`` in ``--params`` (its name names the store)."""
    task = tmp_path / "demo.jsonl"
    write_jsonl(task, items_to_rows(ITEMS))
    ref = {"name": "tiny", "path": str(tiny_model_dir("gpt2")), "revision": None}
    params = {**validate_schema({})["extract"], "model_ref": ref, "device": "cpu"}
    argv = ["--params", json.dumps(params), "--task", str(task), "--task-name", "demo"]
    assert (
        load_script("extract").main([*argv, "--no-progress", "--output-dir", str(tmp_path / "s")])
        == 0
    )
    meta = ActivationStore(tmp_path / "s").meta
    assert (meta["model"], meta["task"], meta["n_items"]) == ("tiny", "demo", len(ITEMS))
