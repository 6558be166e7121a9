"""Contrast-Consistent Search: its loss, planted-direction recovery, and the experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.scripts import assert_clean_exit, load_script
from helpers.stores import synthetic_store

from actspace.branches.error_prediction.unsupervised_error import run_unsupervised_error
from actspace.branches.error_prediction.unsupervised_report import summary_markdown
from actspace.core.schema import validate_schema
from actspace.core.splits import correctness_split
from actspace.core.store import ActivationStore, open_stores
from actspace.methods.ccs import (
    CCS,
    ContrastPairs,
    ccs_loss,
    contrast_pairs,
    item_means,
    orientation,
)
from actspace.methods.probes import balanced_accuracy

#: The schema's defaults of the section (its models and tasks are the stores), made quick.
SECTION = validate_schema({})["experiments"]["unsupervised_error"]
FAST = {
    **{key: value for key, value in SECTION.items() if key not in ("models", "tasks")},
    "n_restarts": 4,
    "n_epochs": 300,
    "n_random": 40,
    "n_bootstrap": 200,
    "cv_folds": 3,
    "Cs": 5,
}


def planted_pairs(n: int = 400, d: int = 12, strength: float = 2.0, seed: int = 0):
    """Pairs whose two sides differ along ``v`` by the sign of a hidden truth value."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=d)
    v /= np.linalg.norm(v)
    truth = rng.integers(0, 2, size=n).astype(bool)
    sign = np.where(truth, 1.0, -1.0)[:, None]
    x_pos = rng.normal(size=(n, d)) + strength * sign * v
    x_neg = rng.normal(size=(n, d)) - strength * sign * v
    return x_pos, x_neg, truth, v


def test_loss_known_values() -> None:
    half = torch.tensor([0.5, 0.5])
    assert float(ccs_loss(half, half)) == pytest.approx(0.25)  # consistent but unsure
    assert float(ccs_loss(torch.tensor([1.0]), torch.tensor([0.0]))) == 0.0  # the ideal
    assert float(ccs_loss(torch.tensor([1.0]), torch.tensor([1.0]))) == pytest.approx(2.0)


def test_ccs_recovers_a_planted_direction() -> None:
    x_pos, x_neg, truth, v = planted_pairs()
    ccs = CCS(n_restarts=5, n_epochs=500, seed=0).fit(x_pos, x_neg)
    # The normalisation scales each dimension by about the same factor here, so the learned
    # direction should point along v (up to sign: CCS cannot tell w from -w).
    assert abs(ccs.direction_ @ v) > 0.9
    assert ccs.loss_ < 0.05
    assert ccs.restart_losses_.shape == (5,) and ccs.loss_ == ccs.restart_losses_.min()
    pred = ccs.predict_proba(x_pos, x_neg) >= 0.5
    assert max(np.mean(pred == truth), np.mean(pred != truth)) > 0.97
    before = ccs.predict_proba(x_pos[:5], x_neg[:5])
    assert ccs.flip().predict_proba(x_pos[:5], x_neg[:5]) == pytest.approx(1 - before)


def test_ccs_without_structure_stays_unsure() -> None:
    rng = np.random.default_rng(1)
    x_pos, x_neg = rng.normal(size=(400, 12)), rng.normal(size=(400, 12))
    _, _, truth, _ = planted_pairs(seed=1)
    ccs = CCS(n_restarts=5, n_epochs=500, seed=0).fit(x_pos, x_neg)
    pred = ccs.predict_proba(x_pos, x_neg) >= 0.5
    assert abs(np.mean(pred == truth) - 0.5) < 0.1


def test_contrast_pairs_and_item_means() -> None:
    acts = np.arange(3 * 3 * 2, dtype=float).reshape(3, 3, 2)
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=bool)
    chosen = np.array([0, 1, 2])
    pairs = contrast_pairs(acts, mask, chosen)
    assert pairs.item.tolist() == [0, 0, 1, 2, 2]
    assert np.array_equal(pairs.x_pos[2], acts[1, 1]) and np.array_equal(pairs.x_neg[2], acts[1, 0])
    assert np.array_equal(pairs.x_neg[3:], acts[2, :2])
    assert item_means(np.array([1.0, 3.0, 5.0, 2.0, 4.0]), pairs.item, 3).tolist() == [2, 5, 3]
    sub = pairs.subset(np.array([2, 0]))
    assert isinstance(sub, ContrastPairs) and sorted(sub.item.tolist()) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="padded"):
        contrast_pairs(acts, mask, np.array([0, 2, 0]))


def test_orientation_follows_the_reference() -> None:
    reference = np.arange(10.0)
    assert orientation(reference**2, reference) == 1.0
    assert orientation(-reference, reference) == -1.0


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ccs")
    planted = synthetic_store(root / "m" / "planted", seed=1)
    noise = synthetic_store(root / "m" / "noise", planted=False, seed=4)
    return run_unsupervised_error(open_stores([str(planted), str(noise)]), seed=0, **FAST)


def test_ccs_matches_supervised_where_truth_is_planted(results: dict) -> None:
    record = results["stores"][0]
    head = record["selected"]
    assert head["layer"] >= 1  # the planted choice-end layers
    assert head["ccs_balanced_accuracy"] > 0.9
    assert head["supervised_balanced_accuracy"] > 0.9
    assert head["ratio"] > 0.9 and head["ratio_verdict"] == "PASS" and head["success"]
    assert results["verdict"] == "PASS" and results["success"]
    detail = record["selected_layer_detail"]
    # Orientation came from confidence alone, and CCS beats nearly all random directions.
    assert detail["random_directions"]["share_beaten_by_ccs"] > 0.9
    assert record["majority"]["balanced_accuracy"] == 0.5
    # Layer 0 carries no truth: CCS there is near chance.
    assert abs(record["layers"][0]["ccs"]["balanced_accuracy"] - 0.5) < 0.15


def test_comparison_block_matches_the_headline(
    results: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    record = results["stores"][0]
    comparison = results["comparison"]
    assert comparison is record["comparison"]
    assert comparison["kind"] == "paired" and comparison["unit"] == "item"
    assert comparison["binary"] is True and comparison["scale"] == 100.0
    a, b = np.array(comparison["a"]), np.array(comparison["b"])
    assert len(a) == len(b) == results["n"] == record["n_test"]
    assert all(type(v) is float for v in comparison["a"] + comparison["b"])
    detail = record["selected_layer_detail"]
    assert a.mean() == pytest.approx(detail["ccs"]["accuracy"])
    assert b.mean() == pytest.approx(detail["supervised_contrast"]["accuracy"])
    # balanced accuracies (and their ratio, the headline) from a, b and the held-out labels
    folder = synthetic_store(tmp_path_factory.mktemp("ccs_again") / "m" / "planted", seed=1)
    y = correctness_split(ActivationStore(folder).correct(), seed=0).y_test
    ccs_ba = float(balanced_accuracy(y, a.astype(bool) == y))
    sup_ba = float(balanced_accuracy(y, b.astype(bool) == y))
    assert ccs_ba == pytest.approx(record["selected"]["ccs_balanced_accuracy"])
    assert sup_ba == pytest.approx(record["selected"]["supervised_balanced_accuracy"])
    assert ccs_ba / sup_ba == pytest.approx(results["value"])
    # the second store has its own block
    assert len(results["stores"][1]["comparison"]["a"]) == results["stores"][1]["n_test"]


def test_no_comparison_when_every_store_is_skipped(tmp_path: Path) -> None:
    folder = synthetic_store(tmp_path / "m" / "one_sided", n=60, n_layers=2)
    rows = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    for row in rows:
        row["correct"] = True
    (folder / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = run_unsupervised_error(open_stores(str(folder)), seed=0, **FAST)
    assert results["n_analysed"] == 0 and results["comparison"] is None


def test_ccs_near_chance_without_structure_is_not_a_success(results: dict) -> None:
    head = results["stores"][1]["selected"]
    assert abs(head["ccs_balanced_accuracy"] - 0.5) < 0.15
    assert not head["success"] and head["verdict"] != "PASS"
    assert head["ccs_above_chance"] != "PASS"
    assert results["n_success"] == 1
    text = summary_markdown(results)
    assert "not distinguishable from chance" in text
    assert "random directions" in text and "top principal component" in text


def test_script(tmp_path: Path) -> None:
    main = load_script("unsupervised_error").main
    folder = synthetic_store(tmp_path / "m" / "t", n=150, n_layers=2)
    out = tmp_path / "out"
    params = {**SECTION, "n_epochs": 100, "n_restarts": 2, "n_random": 10, "n_bootstrap": 100}
    params.update(cv_folds=3, Cs=3, layer=1)
    args = ["--stores", str(folder), "--seed", "0"]
    main([*args, "--params", json.dumps(params), "--output-dir", str(out)])
    saved = json.loads((out / "results.json").read_text())
    assert saved["stores"][0]["selected"]["layer"] == 1
    assert len(saved["comparison"]["a"]) == saved["n"] == len(saved["comparison"]["b"])
    assert saved["stores"][0]["selected"]["layer_selection"] == "configured"
    assert (out / "figure_data.json").is_file() and (out / "summary.md").is_file()
    bad = json.dumps({**params, "layer": "top"})
    assert_clean_exit(main, [*args, "--params", bad, "--output-dir", str(out)], "'top'")
