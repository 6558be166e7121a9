"""Branch 2B error_prediction_extended on synthetic activation stores with known structure.

``synthetic_store`` writes a real store folder (safetensors, scores.jsonl, meta.json) whose
answers are right mostly for ``frequent`` items and wrong mostly for ``unseen`` ones, whose pooled
activations carry correctness linearly at one layer only (or nowhere), and whose per-choice
activations carry the truth of each choice along one direction (tests/helpers/stores.py).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers.scripts import assert_clean_exit, load_script
from helpers.stores import synthetic_store

from actspace.branches.error_prediction.calibration import brier_score, calibration, reliability
from actspace.branches.error_prediction.error_prediction_extended import (
    fit_layer,
    run_error_prediction_extended,
)
from actspace.branches.error_prediction.extended_report import summary_markdown
from actspace.branches.error_prediction.groups import out_of_fold
from actspace.branches.error_prediction.intervals import defined_ci
from actspace.branches.error_prediction.steps import layer_choice
from actspace.core.schema import validate_schema
from actspace.core.splits import OneSidedAnswers, correctness_split
from actspace.core.store import ActivationStore, NamedStore, open_stores
from actspace.methods.probes import auroc, balanced_accuracy

#: The schema's defaults of the section (its models and tasks are the stores), with fewer
#: resamples, folds and penalties.
SECTION = validate_schema({})["experiments"]["error_prediction_extended"]
FAST = {
    **{key: value for key, value in SECTION.items() if key not in ("models", "tasks")},
    "n_bootstrap": 200,
    "cv_folds": 3,
    "Cs": 5,
}


@pytest.fixture(scope="module")
def planted_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ep")
    a = synthetic_store(root / "model" / "taskA", seed=1)
    b = synthetic_store(root / "model" / "taskB", seed=2)
    c = synthetic_store(root / "model" / "taskC", seed=3, direction_seed=999)
    return run_error_prediction_extended(open_stores([str(a), str(b), str(c)]), seed=0, **FAST)


def test_separable_layer_is_near_perfect_and_selected(planted_results: dict) -> None:
    record = planted_results["stores"][0]
    curve = {row["layer"]: row for row in record["layers"]}
    assert record["selected_layer"] == 2
    assert curve[2]["balanced_accuracy"] > 0.93
    assert curve[2]["auroc"] > 0.97
    for k in (0, 1, 3):  # noise layers
        assert abs(curve[k]["balanced_accuracy"] - 0.5) < 0.15
        assert curve[2]["brier"] < curve[k]["brier"]
    assert planted_results["value"] == curve[2]["balanced_accuracy"]
    # The planted layer beats the (weakly informative) output confidence with a clear margin.
    assert record["probe_minus_confidence"]["ci"][0] > 0
    assert record["baselines"]["majority"]["balanced_accuracy"] == 0.5
    # Calibrated probabilities at the separable layer: a small Brier score and ECE.
    assert record["selected"]["calibration"]["brier"] < 0.07
    assert record["selected"]["calibration"]["ece"] < 0.1


def test_the_headline_says_its_layer_was_chosen_on_training_items(planted_results: dict) -> None:
    assert planted_results["held_out"] is True
    selection = planted_results["selection"]
    assert selection.startswith("layer 2 of model on taskA") and "training items" in selection
    assert "success" not in planted_results  # descriptive: no success criterion of its own


def test_the_layer_choice_reads_no_held_out_label(tmp_path: Path) -> None:
    # The selected layer is the best inner-CV score on the training items: flipping every
    # held-out label changes the held-out scores but not one layer's selection score.
    store = ActivationStore(synthetic_store(tmp_path / "m" / "t", n=200, seed=5))
    split = correctness_split(store.correct(), seed=0)
    y = split.y.copy()
    y[split.test] = ~y[split.test]
    settings = {"cv_folds": 3, "Cs": 5, "seed": 0, "n_bootstrap": 100, "n_bins": 5}
    for k in range(store.n_layers + 1):
        X = store.layer(k)[split.items]
        a = fit_layer(X, split, k, **settings)
        b = fit_layer(X, replace(split, y=y), k, **settings)
        assert a.cv_score == b.cv_score
        assert b.record["balanced_accuracy"] == pytest.approx(1 - a.record["balanced_accuracy"])


def test_comparison_block_matches_the_headline(
    planted_results: dict, tmp_path_factory: pytest.TempPathFactory
) -> None:
    comparison = planted_results["comparison"]
    record = planted_results["stores"][0]
    assert comparison is record["comparison"]
    assert comparison["kind"] == "paired" and comparison["unit"] == "item"
    assert comparison["binary"] is True and comparison["scale"] == 100.0
    a, b = np.array(comparison["a"]), np.array(comparison["b"])
    assert len(a) == len(b) == planted_results["n"] == record["n_test"]
    assert all(type(v) is float for v in comparison["a"] + comparison["b"])
    assert a.mean() == pytest.approx(record["selected"]["accuracy"])
    assert b.mean() == pytest.approx(record["baselines"]["confidence"]["accuracy"])
    # balanced accuracy from a and the held-out labels is the headline
    store = synthetic_store(tmp_path_factory.mktemp("ep_again") / "model" / "taskA", seed=1)
    y = correctness_split(ActivationStore(store).correct(), seed=0).y_test
    pred = a.astype(bool) == y
    assert float(balanced_accuracy(y, pred)) == pytest.approx(planted_results["value"])
    confidence_pred = b.astype(bool) == y
    assert float(balanced_accuracy(y, confidence_pred)) == pytest.approx(
        record["baselines"]["confidence"]["balanced_accuracy"]
    )


def test_groups_follow_the_known_structure(planted_results: dict) -> None:
    groups = {g["group"]: g for g in planted_results["stores"][0]["by_group"]["groups"]}
    assert list(groups) == ["frequent", "rare", "unseen"]
    assert groups["frequent"]["model_accuracy"] > 0.85 > 0.2 > groups["unseen"]["model_accuracy"]
    assert groups["frequent"]["mean_p_correct"] > 0.8 > 0.2 > groups["unseen"]["mean_p_correct"]
    assert all(g["probe_accuracy"] > 0.85 for g in groups.values())


def test_transfer_matrix_follows_shared_directions(planted_results: dict) -> None:
    (transfer,) = planted_results["transfer"]
    assert transfer["tasks"] == ["taskA", "taskB", "taskC"]
    ba = np.array(transfer["balanced_accuracy"])
    assert np.all(np.diag(ba) > 0.9)
    assert ba[0, 1] > 0.9 and ba[1, 0] > 0.9  # same correctness direction
    # A different (random, so only partly aligned) direction: transfer falls far short.
    assert max(ba[0, 2], ba[2, 0]) < 0.75 and ba[0, 1] - ba[0, 2] > 0.2


def test_label_independent_activations_stay_near_chance(tmp_path: Path) -> None:
    folder = synthetic_store(tmp_path / "m" / "noise", planted=False, seed=4)
    results = run_error_prediction_extended(open_stores(str(folder)), seed=0, **FAST)
    curve = results["stores"][0]["layers"]
    assert all(abs(row["balanced_accuracy"] - 0.5) < 0.15 for row in curve)
    assert all(abs(row["auroc"] - 0.5) < 0.17 for row in curve)
    assert "Task transfer" not in summary_markdown(results)


def test_split_matches_pm2_and_refuses_one_sided_answers() -> None:
    correct = np.r_[np.ones(40, bool), np.zeros(20, bool)]
    split = correctness_split(correct, test_fraction=0.3, seed=5)
    assert split.test.size == 18 and split.train.size == 42
    assert split.y_test.sum() == 12  # stratified: two thirds correct
    assert set(split.train) | set(split.test) == set(range(60))
    sub = correctness_split(correct, n_samples=30, seed=5, min_per_class=2)
    assert sub.items.size == 30
    with pytest.raises(OneSidedAnswers, match="at least 6 correct"):
        correctness_split(np.r_[np.ones(50, bool), np.zeros(3, bool)])


def test_out_of_fold_predictions_keep_groups_in_one_fold() -> None:
    """Five near-copies of each of 40 items, right or wrong together: ungrouped folds let the
    probe recognise held-out copies of training items; the store's groups leave it at chance."""
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(40), 5)
    X = rng.normal(size=(40, 60))[group] + 0.05 * rng.normal(size=(200, 60))
    y = (rng.random(40) < 0.5)[group]
    leaky, _ = out_of_fold(X, y, C=1.0, calibrated_C=1.0, seed=0)
    kept, _ = out_of_fold(X, y, C=1.0, calibrated_C=1.0, seed=0, split_groups=group)
    assert balanced_accuracy(y, leaky) > 0.9
    assert abs(balanced_accuracy(y, kept) - 0.5) < 0.2


def test_one_sided_store_is_skipped_not_fatal(tmp_path: Path) -> None:
    good = synthetic_store(tmp_path / "m" / "good", seed=1, n=120)
    bad = synthetic_store(tmp_path / "m" / "bad", seed=1, n=120)
    rows = [json.loads(line) for line in (bad / "scores.jsonl").read_text().splitlines()]
    for row in rows:
        row["correct"] = True
    (bad / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = run_error_prediction_extended(
        open_stores([str(good), str(bad)]), seed=0, **{**FAST, "layers": [2]}
    )
    assert results["n_analysed"] == 1
    assert "skipped" in results["stores"][1]
    assert results["transfer"] == []
    assert results["comparison"] is results["stores"][0]["comparison"]
    only_bad = run_error_prediction_extended(
        open_stores(str(bad)), seed=0, **{**FAST, "layers": [2]}
    )
    assert only_bad["comparison"] is None


def test_calibration_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    assert brier_score(y, y.astype(float)) == 0.0
    assert brier_score(y, np.full(4, 0.5)) == 0.25
    diagram = reliability(y, np.array([0.05, 0.05, 0.95, 0.95]), n_bins=10)
    assert diagram["count"] == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert diagram["ece"] == pytest.approx(0.05)
    assert diagram["mean_predicted"][1] is None
    calib = calibration(y, np.array([0.1, 0.3, 0.7, 0.9]), base_rate=0.5, n_bins=2)
    assert calib["brier"] == pytest.approx(0.05)
    assert calib["brier_skill"] == pytest.approx(0.8)
    assert calib["reliability"]["observed"] == [0.0, 1.0]
    assert calib["ece"] == pytest.approx(0.2)


def test_defined_ci_leaves_out_undefined_resamples() -> None:
    assert defined_ci(np.mean, np.full(10, 0.3)) == pytest.approx([0.3, 0.3])
    # One positive among 12: a third of resamples lack it and have no AUROC; the rest are kept.
    y = np.r_[1, np.zeros(11)]
    score = np.r_[0.9, np.linspace(0.0, 0.5, 11)]
    low, high = defined_ci(auroc, y, score, n_resamples=400)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)
    # Undefined on most resamples: the interval is unknown.
    assert defined_ci(lambda values: float("nan"), np.arange(10.0)) == [None, None]


def test_layer_choice() -> None:
    assert layer_choice("auto") is None and layer_choice(None) is None
    assert layer_choice(7) == 7 and layer_choice(np.int64(0)) == 0
    for bad in ("deep", "3", 2.0, True):
        with pytest.raises(ValueError, match="layer index"):
            layer_choice(bad)


def test_empty_group_key_means_no_group_table(tmp_path: Path) -> None:
    folder = synthetic_store(tmp_path / "m" / "t", n=120)
    results = run_error_prediction_extended(
        open_stores(str(folder)), seed=0, **{**FAST, "layers": [2], "group_key": ""}
    )
    assert results["stores"][0]["by_group"] is None
    assert results["settings"]["group_key"] is None


def test_store_names_come_from_the_folder(tmp_path: Path) -> None:
    folder = synthetic_store(tmp_path / "tiny_gpt2" / "facts", n=60)
    (named,) = open_stores(str(folder))
    assert isinstance(named, NamedStore) and isinstance(named.store, ActivationStore)
    assert (named.model, named.task) == ("tiny_gpt2", "facts")


def test_script_writes_the_experiment_and_fails_cleanly(tmp_path: Path) -> None:
    main = load_script("error_prediction_extended").main
    folder = synthetic_store(tmp_path / "m" / "t", n=150)
    out = tmp_path / "out"
    params = {**SECTION, "n_bootstrap": 100, "cv_folds": 3, "Cs": 4}
    args = ["--stores", str(folder), "--params", json.dumps(params)]
    main([*args, "--seed", "1", "--output-dir", str(out)])
    for name in ("results.json", "config.json", "summary.md", "figure_data.json"):
        assert (out / name).is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == "error_prediction_extended" and results["seed"] == 1
    assert json.loads((out / "config.json").read_text())["models"] == ["m"]
    # The ROC points integrate to the reported AUROC of the probe and of the confidence.
    curve = json.loads((out / "figure_data.json").read_text())["curves"][0]
    store = results["stores"][0]
    for name, reported in (
        ("probe", store["selected"]["auroc"]),
        ("confidence", store["baselines"]["confidence"]["auroc"]),
    ):
        fpr, tpr = curve["roc"][name]["fpr"], curve["roc"][name]["tpr"]
        assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
        assert np.trapezoid(tpr, fpr) == pytest.approx(reported, abs=1e-9)
    none = ["--stores", str(tmp_path / "none"), *args[2:], "--seed", "1"]
    assert_clean_exit(main, [*none, "--output-dir", str(out)], "none")
    assert_clean_exit(
        main, [*args, "--seed", "1", "--layers", "9", "--output-dir", str(out)], "out of range"
    )
