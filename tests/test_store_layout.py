"""What the store holds and at what size: ``extract.layers``, packed choice ends, float16.

Cases:
- a store of layers [0, 2] reads those layers equal to the full store's; reading layer 1 fails in
  one line naming the layer, the store and ``extract.layers``; the nearest stored layer to 1 is 0
  (the lower on a tie), to 3 is 2;
- packed choice ends (one row per real choice) read exactly as the old padded layout of the same
  values, items with 2, 3 and 4 choices; the old padded store still opens and reads;
- extraction with ``layers=[0, 2]`` on a tiny model stores those two layers (values equal to a
  full extraction's), records ``layers`` and ``store_bytes`` (the files' real sizes) in meta.json;
  a layer beyond the model is refused before the store folder is made;
- float16 (the ``auto`` storage) gives PM1's and PM2's reported values (3 decimals) of float32;
- embeddings beyond float16's range: ``auto`` falls back to float32, says so in meta.json, and
  stores exactly what an explicit float32 extraction stores;
- PM1 picks the stored layer nearest its depth and reports it; PM2's layer search runs over the
  stored layers only; 2A's layer grid over stored layers [0, 1, 3] has the full grid's cells at
  those layers, its depth cell at the nearest stored layer;
- bad ``extract.layers`` / ``extract.storage_dtype`` values, and an explicit layer not stored, are
  refused by the configuration in one line naming the key.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.fake_stores import PM1, PM2
from helpers.stores import rewrite_store, synthetic_store
from safetensors.torch import save_file

from actspace.branches.cross_model.cross_model_extended import run_cross_model_extended
from actspace.config import ConfigError, resolve_config
from actspace.core.store import ActivationStore, nearest_stored_layer, stored_layers
from actspace.lm.extraction import extract_store
from actspace.lm.models import load_model
from actspace.lm.tasks import Item
from actspace.premortems.pm1 import run_pm1
from actspace.premortems.pm2 import run_pm2
from actspace.premortems.pm2 import summary_markdown as pm2_summary

ROOT = Path(__file__).resolve().parents[1]

ITEMS = [
    Item("a", "The quick brown fox", ["jumps over the lazy dog.", "sat.", "is a cat"], 0, {}),
    Item("b", "A man is sitting on a roof. He", ["pulls.", "to fly", "A", "Paris"], 1, {}),
    Item("c", "Question: what is the capital of France?\nAnswer:", ["Paris", "bird"], 0, {}),
    Item("d", "1, 2, 3,", ["10 and 42", "D"], 1, {}),
]
EXTRACT = {
    "poolings": ["last", "mean"],
    "batch_size": 2,
    "shard_size": 3,
    "truncation": "truncate",
    "progress": False,
}


def _padded_store(folder: Path, counts: list[int], *, n_layers: int = 2, d: int = 3) -> Path:
    """An old-layout store (choice ends padded to the most choices) with known values."""
    rng = np.random.default_rng(0)
    n, width = len(counts), max(counts)
    mask = np.arange(width)[None, :] < np.asarray(counts)[:, None]
    ends = rng.normal(size=(n, width, n_layers + 1, d)).astype(np.float32) * mask[..., None, None]
    folder.mkdir(parents=True)
    save_file(
        {"last": torch.from_numpy(rng.normal(size=(n, n_layers + 1, d)).astype(np.float32))},
        folder / "pooled.safetensors",
    )
    save_file(
        {
            "choice_end": torch.from_numpy(ends),
            "choice_mask": torch.from_numpy(mask.astype(np.uint8)),
        },
        folder / "choice_end.safetensors",
    )
    rows = [
        {"id": f"i{i}", "label": 0, "logliks": [-1.0] * c, "correct": True}
        for i, c in enumerate(counts)
    ]
    (folder / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"n_items": n, "n_layers": n_layers, "hidden_size": d, "poolings": ["last"]}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_packed_choice_ends_read_as_the_padded_layout(tmp_path: Path) -> None:
    padded = ActivationStore(_padded_store(tmp_path / "m" / "old", [2, 4, 3, 2, 4]))
    packed = ActivationStore(
        rewrite_store(padded.path, tmp_path / "m" / "new", dtype=torch.float32)
    )
    with open(packed.path / "choice_end.safetensors", "rb") as handle:
        assert b"choice_counts" in handle.read(400)  # the new layout, not a copy of the old
    assert packed.max_choices == padded.max_choices == 4
    np.testing.assert_array_equal(packed.choice_mask(), padded.choice_mask())
    assert packed.choice_mask().sum(axis=1).tolist() == [2, 4, 3, 2, 4]
    for k in range(3):
        new, new_mask = packed.choice_end(k)
        old, old_mask = padded.choice_end(k)
        np.testing.assert_array_equal(new, old)
        np.testing.assert_array_equal(new_mask, old_mask)
        assert new.shape == (5, 4, 3) and not new[0, 2:].any()  # padded slots are zero
    assert packed.layers == padded.layers == [0, 1, 2]


def test_a_subset_of_layers_reads_equal_and_a_missing_layer_names_the_key(
    tmp_path: Path,
) -> None:
    full = ActivationStore(synthetic_store(tmp_path / "m" / "full", n=40))
    part = ActivationStore(
        rewrite_store(full.path, tmp_path / "m" / "part", dtype=torch.float32, layers=[0, 2])
    )
    assert part.layers == stored_layers(part) == [0, 2] and part.meta["layers"] == [0, 2]
    assert stored_layers(full) == [0, 1, 2, 3]
    assert part.pooled("last").shape == (40, 2, 16)
    np.testing.assert_array_equal(part.layer(2), full.layer(2))
    np.testing.assert_array_equal(part.layer(-2), full.layer(2))
    np.testing.assert_array_equal(part.choice_end(2)[0], full.choice_end(2)[0])
    with pytest.raises(ValueError) as caught:
        part.layer(1)
    message = str(caught.value)
    assert "\n" not in message and str(part.path) in message
    assert "layer 1 was not stored (stored: 0, 2)" in message and "extract.layers" in message
    with pytest.raises(ValueError, match="layer 3 was not stored"):
        part.choice_end(3)
    assert nearest_stored_layer(part, 1) == 0 and nearest_stored_layer(part, 3) == 2
    assert nearest_stored_layer(part, 1, minimum=1) == 2
    assert nearest_stored_layer(full, 1) == 1


def test_extracting_chosen_layers_records_them_and_the_sizes(
    tiny_model_dir, tmp_path: Path
) -> None:
    model, tokenizer = load_model(tiny_model_dir("gpt2"), dtype="float32", device="cpu")
    kw = {**EXTRACT, "storage_dtype": "float32"}
    extract_store(model, tokenizer, ITEMS, tmp_path / "full", **kw)
    meta = extract_store(model, tokenizer, ITEMS, tmp_path / "part", layers=[2, 0], **kw)
    full, part = ActivationStore(tmp_path / "full"), ActivationStore(tmp_path / "part")
    assert meta["layers"] == part.layers == [0, 2] and full.meta["layers"] == [0, 1, 2, 3]
    for k in (0, 2):
        for pooling in ("last", "mean"):
            np.testing.assert_array_equal(part.layer(k, pooling), full.layer(k, pooling))
        np.testing.assert_array_equal(part.choice_end(k)[0], full.choice_end(k)[0])
    np.testing.assert_array_equal(part.choice_mask().sum(axis=1), [3, 4, 2, 2])
    sizes = {name: (tmp_path / "part" / name).stat().st_size for name in meta["checksums"]}
    assert meta["store_bytes"] == {"files": sizes, "total": sum(sizes.values())}
    assert meta["storage_dtype"] == "float32" and meta["storage_dtype_fallback"] is None
    # 11 real choices of 4 items, not 4 x 4 padded slots, of 4 layers of width 32 in float32
    full_files, part_files = full.meta["store_bytes"]["files"], meta["store_bytes"]["files"]
    assert 11 * 4 * 32 * 4 < full_files["choice_end.safetensors"] < 12 * 4 * 32 * 4
    for name in ("pooled.safetensors", "choice_end.safetensors"):  # 2 of 4 layers: about half
        assert 0.45 < part_files[name] / full_files[name] < 0.55
    with pytest.raises(ValueError, match=r"extract.layers: 9 is not allowed.* to 3"):
        extract_store(model, tokenizer, ITEMS, tmp_path / "bad", layers=[0, 9], **kw)
    assert not (tmp_path / "bad").exists()


def _rounded(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _reported(results: dict) -> list[str]:
    """The values PM1 and PM2 report (3 decimals): metric, its interval, control, difference."""
    numbers = [results["value"], *results["ci"], results["control"]["value"]]
    numbers += [results["controlled"]["value"], *results["controlled"]["ci"]]
    return [_rounded(v) for v in numbers]


def test_float16_stores_give_the_reported_pm_values_of_float32(tmp_path: Path) -> None:
    """float16 (11 significant bits) leaves every reported value as it is; float8 (4 bits)
    moves some, so the comparison can fail."""
    stores: dict[str, dict[str, ActivationStore]] = {"f32": {}, "f16": {}, "f8": {}}
    for seed, name in enumerate(("a", "b")):
        folder = synthetic_store(tmp_path / "f32" / name / "t", n=300, seed=seed, direction_seed=7)
        stores["f32"][name] = ActivationStore(folder)
        for key, dtype in (("f16", torch.float16), ("f8", torch.float8_e4m3fn)):
            copy_ = rewrite_store(folder, tmp_path / key / name / "t", dtype=dtype)
            stores[key][name] = ActivationStore(copy_)
    assert stores["f16"]["a"].meta["storage_dtype"] == "float16"
    assert not np.array_equal(stores["f16"]["a"].layer(2), stores["f32"]["a"].layer(2))
    pm1 = {**PM1, "n_bootstrap": 200, "n_permutations": 3}
    pm2 = {**PM2, "n_bootstrap": 200, "cv_folds": 3}
    reported = {
        key: _reported(run_pm1(group, **pm1)) + _reported(run_pm2(group["a"], **pm2))
        for key, group in stores.items()
    }
    assert reported["f16"] == reported["f32"]
    assert reported["f8"] != reported["f32"]


def test_float16_overflow_falls_back_to_float32(tiny_model_dir, tmp_path: Path) -> None:
    model, tokenizer = load_model(tiny_model_dir("gpt2"), dtype="float32", device="cpu")
    with torch.no_grad():
        model.transformer.wte.weight.mul_(1e6)  # embeddings far beyond float16's 65504
    meta = extract_store(
        model, tokenizer, ITEMS, tmp_path / "auto", storage_dtype="auto", **EXTRACT
    )
    assert meta["storage_dtype"] == "float32" and meta["storage_dtype_requested"] == "auto"
    assert meta["storage_dtype_fallback"].startswith("float16 overflowed")
    extract_store(model, tokenizer, ITEMS, tmp_path / "f32", storage_dtype="float32", **EXTRACT)
    auto, f32 = ActivationStore(tmp_path / "auto"), ActivationStore(tmp_path / "f32")
    assert np.abs(auto.layer(0)).max() > 65504
    np.testing.assert_array_equal(auto.pooled("mean"), f32.pooled("mean"))
    np.testing.assert_array_equal(auto.choice_end(1)[0], f32.choice_end(1)[0])


def test_pm1_and_pm2_pick_among_the_stored_layers(tmp_path: Path) -> None:
    stores = {}
    for name in ("a", "b"):
        folder = synthetic_store(tmp_path / "all" / name / "t", n=200, direction_seed=7)
        part = rewrite_store(folder, tmp_path / "part" / name / "t", layers=[0, 1, 3])
        stores[name] = ActivationStore(part)
    # depth 0.5 of 3 blocks is layer 2, not stored: 1 and 3 are as near, the lower is taken
    pm1 = run_pm1(stores, **{**PM1, "n_bootstrap": 100, "n_permutations": 2})
    assert pm1["layers"] == {"a": 1, "b": 1}
    pm2 = run_pm2(stores["a"], **{**PM2, "n_bootstrap": 100, "cv_folds": 3})
    assert [row["layer"] for row in pm2["validation"]] == [0, 1, 3]
    assert pm2["stored_layers"] == [0, 1, 3] and pm2["layer"] in (0, 1, 3)
    assert "of the stored layers 0, 1, 3 of 0..3 (validation" in pm2_summary(pm2)


@pytest.fixture(scope="module")
def default() -> dict:
    with open(ROOT / "config" / "config.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _refused(config: dict, **extract) -> str:
    config = copy.deepcopy(config)
    config.setdefault("extract", {}).update(extract)
    with pytest.raises(ConfigError) as caught:
        resolve_config(config)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("extract", "expected"),
    [
        ({"layers": [0, 99]}, "extract.layers: layer 99 is beyond model"),
        ({"layers": [1, 2]}, "extract.layers: [1, 2] lacks layer 0"),
        ({"layers": "all"}, "extract.layers"),
        ({"layers": [0, 0]}, "extract.layers"),
        ({"layers": []}, "extract.layers"),
        ({"storage_dtype": "int8"}, "extract.storage_dtype"),
    ],
)
def test_bad_extract_values_are_refused(default: dict, extract: dict, expected: str) -> None:
    assert expected in _refused(default, **extract)


def test_explicit_layers_must_be_stored(default: dict) -> None:
    config = copy.deepcopy(default)
    config.setdefault("premortems", {}).setdefault("pm2", {})["layer"] = 3
    message = _refused(config, layers=[0, 1, 2])
    assert message.startswith("premortems.pm2.layer: layer 3 is not stored (extract.layers: ")
    resolved = resolve_config({**copy.deepcopy(default), "extract": {"layers": [0, 2]}})
    assert resolved["extract"]["layers"] == [0, 2]
    assert resolve_config(copy.deepcopy(default))["extract"]["layers"] is None


class _ArrayStore:
    """An in-memory store of ``acts`` [items, layers+1, d] holding only ``layers``."""

    def __init__(self, acts: np.ndarray, layers: list[int]) -> None:
        self.acts, self.layers = acts.astype(np.float32), layers
        self.n_items, depth, self.hidden_size = acts.shape
        self.n_layers = depth - 1
        self.meta = {"model": "fake"}

    def layer(self, k: int, pooling: str = "last") -> np.ndarray:
        if k not in self.layers:
            raise ValueError(f"layer {k} was not stored")
        return self.acts[:, k].copy()

    def scores(self) -> list[dict]:
        return [{"id": f"item-{i}", "correct": True} for i in range(self.n_items)]


def test_the_cross_model_grid_runs_over_the_stored_layers() -> None:
    """Cells of a grid over layers [0, 1, 3] equal the full grid's cells at those layers; the
    depth-0.5 cell (layer 2 of 3, not stored) is at the nearest stored layer, 1."""
    rng = np.random.default_rng(4)
    latent = rng.normal(size=(120, 6))
    a = np.stack([latent @ rng.normal(size=(6, 8)) for _ in range(4)], axis=1)
    b = 2.0 * a[:, :, rng.permutation(8)] + rng.normal(scale=0.5, size=a.shape)
    params = {
        "pooling": "last",
        "n_samples": None,
        "test_fraction": 0.3,
        "ridge_alpha": "auto",
        "k": 5,
        "n_permutations": 3,
        "n_outlier_dims": 1,
        "layer_depth": 0.5,
        "full_grid": True,
        "n_bootstrap": 50,
        "seed": 0,
    }
    kept = [0, 1, 3]
    full, full_fig = run_cross_model_extended(
        {"a": _ArrayStore(a, [0, 1, 2, 3]), "b": _ArrayStore(b, [0, 1, 2, 3])}, **params
    )
    part, part_fig = run_cross_model_extended(
        {"a": _ArrayStore(a, kept), "b": _ArrayStore(b, kept)}, **params
    )
    grid_full, grid_part = full_fig["layer_grids"][0], part_fig["layer_grids"][0]
    assert grid_part["source_layers"] == grid_part["target_layers"] == kept
    for i, la in enumerate(kept):
        for j, lb in enumerate(kept):
            for key in ("correlation", "cka", "mutual_knn"):
                assert (
                    grid_part["standardised"][key][i][j] == grid_full["standardised"][key][la][lb]
                )
    assert full["pairs"][0]["layer_depth_cell"] == [2, 2]
    assert part["pairs"][0]["layer_depth_cell"] == [1, 1]
    assert grid_part["depth_aligned"] == [[0, 0], [1, 1], [3, 3]]
