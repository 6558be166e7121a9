"""The activation store's reading API and its validation of broken stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from actspace.core.io import atomic_write_json, write_jsonl
from actspace.core.store import ActivationStore, concat_safetensors, read_header

N, LAYERS, D, CHOICES = 5, 3, 4, 3


def _make_store(folder: Path, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A small store written by hand: known values, item 4 with two choices."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    last = torch.randn(N, LAYERS + 1, D, generator=gen)
    mean = torch.randn(N, LAYERS + 1, D, generator=gen)
    ends = torch.randn(N, CHOICES, LAYERS + 1, D, generator=gen)
    mask = torch.ones(N, CHOICES, dtype=torch.uint8)
    mask[4, 2] = 0
    ends[4, 2] = 0
    save_file({"last": last.to(dtype), "mean": mean.to(dtype)}, folder / "pooled.safetensors")
    save_file(
        {"choice_end": ends.to(dtype), "choice_mask": mask}, folder / "choice_end.safetensors"
    )
    table = [
        [-1.0, -2.0, -3.0],
        [-2.0, -1.0, -3.0],
        [-3.0, -2.0, -1.0],
        [-1.0, -2.0, -3.0],
        [-2.0, -1.0],
    ]
    labels = [0, 1, 1, 1, 1]
    rows = []
    for i, (logliks, label) in enumerate(zip(table, labels, strict=True)):
        pred = int(np.argmax(logliks))
        rows.append(
            {
                "index": i,
                "id": f"q{i}",
                "label": label,
                "logliks": logliks,
                "pred": pred,
                "correct": pred == label,
            }
        )
    write_jsonl(folder / "scores.jsonl", rows)
    atomic_write_json(
        folder / "meta.json",
        {"n_items": N, "n_layers": LAYERS, "hidden_size": D, "poolings": ["last", "mean"]},
    )
    return {"last": last, "mean": mean, "choice_end": ends, "choice_mask": mask}


def test_reads_known_values(tmp_path):
    tensors = _make_store(tmp_path)
    store = ActivationStore(tmp_path)
    assert (store.n_items, store.n_layers, store.hidden_size, store.max_choices) == (5, 3, 4, 3)
    np.testing.assert_array_equal(store.layer(2), tensors["last"][:, 2].numpy())
    np.testing.assert_array_equal(store.layer(0, "mean"), tensors["mean"][:, 0].numpy())
    np.testing.assert_array_equal(store.layer(-1), tensors["last"][:, 3].numpy())
    np.testing.assert_array_equal(store.pooled("mean"), tensors["mean"].numpy())
    ends, mask = store.choice_end(1)
    np.testing.assert_array_equal(ends, tensors["choice_end"][:, :, 1].numpy())
    assert mask.dtype == bool and mask.sum() == 14 and not mask[4, 2]
    assert store.layer(1).dtype == np.float32 and store.layer(1).shape == (5, 4)
    assert store.correct().tolist() == [True, True, False, False, True]
    assert store.labels().tolist() == [0, 1, 1, 1, 1]
    assert store.ids() == ["q0", "q1", "q2", "q3", "q4"]
    assert [len(x) for x in store.logliks()] == [3, 3, 3, 3, 2]
    assert store.logliks()[1][0] == -2.0
    store.verify()


def test_reduced_precision_stores_read_as_float32(tmp_path):
    tensors = _make_store(tmp_path, dtype=torch.bfloat16)
    store = ActivationStore(tmp_path)
    got = store.layer(3, "mean")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, tensors["mean"][:, 3].to(torch.bfloat16).float().numpy())


def test_layer_and_pooling_checks(tmp_path):
    _make_store(tmp_path)
    store = ActivationStore(tmp_path)
    with pytest.raises(ValueError, match=r"layer 4 out of range 0\.\.3"):
        store.layer(4)
    with pytest.raises(ValueError, match="pooling 'max' not in this store"):
        store.layer(1, "max")


@pytest.mark.parametrize("name", ["meta.json", "scores.jsonl", "pooled.safetensors"])
def test_missing_file_is_named(tmp_path, name):
    _make_store(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(ValueError, match=f"{name}: missing"):
        ActivationStore(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="folder not found"):
        ActivationStore(tmp_path / "nope")


def test_truncated_safetensors_is_named(tmp_path):
    _make_store(tmp_path)
    path = tmp_path / "choice_end.safetensors"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match=r"choice_end\.safetensors: truncated"):
        ActivationStore(tmp_path)


def test_corrupted_safetensors_header_is_named(tmp_path):
    _make_store(tmp_path)
    path = tmp_path / "pooled.safetensors"
    data = bytearray(path.read_bytes())
    data[8:12] = b"\xff\xfe{["
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"pooled\.safetensors: corrupted"):
        ActivationStore(tmp_path)
    path.write_bytes(b"abc")
    with pytest.raises(ValueError, match=r"pooled\.safetensors: truncated or not a safetensors"):
        ActivationStore(tmp_path)


def test_nan_activations_name_file_and_tensor(tmp_path):
    tensors = _make_store(tmp_path)
    tensors["mean"][2, 1, 0] = float("nan")
    save_file({"last": tensors["last"], "mean": tensors["mean"]}, tmp_path / "pooled.safetensors")
    store = ActivationStore(tmp_path)
    store.layer(1, "last")  # other tensors still read
    store.layer(2, "mean")  # other layers too
    with pytest.raises(ValueError, match=r"pooled\.safetensors: tensor 'mean' has NaN"):
        store.layer(1, "mean")
    with pytest.raises(ValueError, match="tensor 'mean' has NaN"):
        store.verify()


def test_item_count_mismatch(tmp_path):
    _make_store(tmp_path)
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    (tmp_path / "scores.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="scores.jsonl: 4 rows, but meta.json says n_items=5"):
        ActivationStore(tmp_path)


def test_shape_mismatch_with_meta(tmp_path):
    _make_store(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["n_items"] = 6
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"tensor 'last' has shape \[5, 4, 4\], meta.json implies"):
        ActivationStore(tmp_path)


def test_concat_safetensors_equals_torch_cat(tmp_path):
    gen = torch.Generator().manual_seed(1)
    parts, pieces = [], []
    for i, n in enumerate([3, 1, 4]):
        piece = {
            "a": torch.randn(n, 2, 5, generator=gen),
            "m": torch.randint(0, 2, (n, 3), generator=gen).to(torch.uint8),
            "h": torch.randn(n, 7, generator=gen).to(torch.float16),
        }
        path = tmp_path / f"part{i}.safetensors"
        save_file(piece, path)
        parts.append(path)
        pieces.append(piece)
    out = tmp_path / "joined.safetensors"
    concat_safetensors(out, parts, ["h", "a", "m"], metadata={"k": "v"})
    assert set(read_header(out)) == {"__metadata__", "h", "a", "m"}
    with safe_open(out, framework="pt") as handle:
        assert handle.metadata() == {"k": "v"}
        for name in ("a", "m", "h"):
            want = torch.cat([p[name] for p in pieces])
            got = handle.get_tensor(name)
            assert got.dtype == want.dtype
            assert torch.equal(got, want)
        assert torch.equal(
            handle.get_slice("a")[:, 1:2, :][:, 0], torch.cat([p["a"] for p in pieces])[:, 1]
        )
    save_file({"a": torch.zeros(2, 3, 5)}, tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="does not match the other parts"):
        concat_safetensors(
            tmp_path / "x.safetensors", [parts[0], tmp_path / "bad.safetensors"], ["a"]
        )
    with pytest.raises(ValueError, match="tensor 'm' missing"):
        concat_safetensors(tmp_path / "x.safetensors", [tmp_path / "bad.safetensors"], ["m"])
    assert not (tmp_path / "x.safetensors").exists()
