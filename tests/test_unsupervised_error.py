"""Contrast-Consistent Search: its loss on multiple-choice statements, planted truths, and the
experiment's success (the plan's ratio AND beating a random direction, the top principal
component and the output confidence) on stores whose answers are known."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.scripts import assert_clean_exit, load_script
from helpers.stores import synthetic_store

from actspace.branches.error_prediction.intervals import hit_balanced_accuracy, item_ci
from actspace.branches.error_prediction.unsupervised_error import (
    analyse_split,
    run_unsupervised_error,
)
from actspace.branches.error_prediction.unsupervised_report import summary_markdown
from actspace.core.schema import ConfigError, validate_schema
from actspace.core.splits import correctness_split
from actspace.core.store import ActivationStore, NamedStore, open_stores
from actspace.methods.ccs import (
    CCS,
    ccs_loss,
    choice_loss,
    choice_sets,
    contrast_differences,
    orientation,
    sign_is_free,
)
from actspace.methods.probes import balanced_accuracy

#: The schema's defaults of the section (its models and tasks are the stores), made quicker.
SECTION = validate_schema({})["experiments"]["unsupervised_error"]
FAST = {
    **{key: value for key, value in SECTION.items() if key not in ("models", "tasks")},
    "n_restarts": 6,
    "n_random": 20,
    "n_bootstrap": 200,
    "cv_folds": 3,
    "Cs": 5,
}
CRITERIA = [
    "ccs_over_supervised",
    "beats_random_direction",
    "beats_top_principal_component",
    "beats_output_confidence",
]


class MemoryStore:
    """A store in memory whose statements carry a known truth (the StoreLike protocol).

    Every item has ``n_choices`` choices; at layers >= 1 each choice's activation is noise plus
    ``truth * (+1 true / -1 false) * v`` plus ``nuisance * N(0, 1) * w`` (one draw per choice:
    a direction of large variance that says nothing about truth). Layer 0 is noise. The model
    is right on ``share_correct`` of the items, and its output confidence says nothing about it.
    """

    def __init__(
        self,
        *,
        n: int = 300,
        d: int = 16,
        n_layers: int = 2,
        n_choices: int = 4,
        truth: float = 2.5,
        nuisance: float = 0.0,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        directions = rng.normal(size=(2, d))
        v, w = directions / np.linalg.norm(directions, axis=1, keepdims=True)
        self.n_items, self.n_layers = n, n_layers
        correct = rng.random(n) < 0.6
        label = rng.integers(0, n_choices, size=n)
        pred = label.copy()
        for i in np.flatnonzero(~correct):
            pred[i] = rng.choice([c for c in range(n_choices) if c != label[i]])
        sign = np.where(np.arange(n_choices)[None] == label[:, None], 1.0, -1.0)
        acts = rng.normal(size=(n, n_choices, n_layers + 1, d))
        acts[:, :, 1:] += truth * sign[:, :, None, None] * v
        acts[:, :, 1:] += nuisance * rng.normal(size=(n, n_choices, 1, 1)) * w
        self._acts, self._pooled = acts, rng.normal(size=(n, n_layers + 1, d))
        self._rows = []
        for i in range(n):
            logliks = rng.normal(size=n_choices) - 3.0
            logliks[pred[i]] = logliks.max() + rng.exponential(1.0)
            row = {"id": f"item{i}", "label": int(label[i]), "pred": int(pred[i])}
            self._rows.append({**row, "correct": bool(correct[i]), "logliks": logliks.tolist()})

    def scores(self) -> list[dict]:
        return self._rows

    def correct(self) -> np.ndarray:
        return np.array([row["correct"] for row in self._rows])

    def logliks(self) -> list[np.ndarray]:
        return [np.asarray(row["logliks"]) for row in self._rows]

    def labels(self) -> np.ndarray:
        return np.array([row["label"] for row in self._rows])

    def layer(self, k: int, pooling: str = "last") -> np.ndarray:
        return self._pooled[:, k]

    def choice_end(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._acts[:, :, k], np.ones(self._acts.shape[:2], dtype=bool)


def run_on(store: MemoryStore, name: str) -> dict:
    return run_unsupervised_error([NamedStore("m", name, store)], seed=0, **FAST)


def head_of(results: dict) -> dict:
    return results["stores"][0]["selected"]


def parts_of(results: dict) -> dict[str, dict]:
    return {part["name"]: part for part in head_of(results)["criteria"]}


# --------------------------------------------------------------------------------------------
# The loss and the probe
# --------------------------------------------------------------------------------------------


def test_binary_loss_known_values() -> None:
    half = torch.tensor([0.5, 0.5])
    assert float(ccs_loss(half, half)) == pytest.approx(0.25)  # consistent but unsure
    assert float(ccs_loss(torch.tensor([1.0]), torch.tensor([0.0]))) == 0.0  # the ideal
    assert float(ccs_loss(torch.tensor([1.0]), torch.tensor([1.0]))) == pytest.approx(2.0)


def test_choice_loss_is_the_papers_loss_on_two_choices_and_one_truth_on_four() -> None:
    p = torch.rand(50, 2, generator=torch.Generator().manual_seed(0))
    both = torch.ones(50, 2)
    assert float(choice_loss(p, both)) == pytest.approx(float(ccs_loss(p[:, 0], p[:, 1])))
    four = torch.ones(1, 4)

    def loss(*values: float, mask: torch.Tensor = four) -> float:
        return float(choice_loss(torch.tensor([values]), mask))

    assert loss(1, 0, 0, 0) == 0.0
    # The model chose choice 0 and is wrong; choice 2 is true: chosen and choice 1 are both
    # false, which costs nothing (a pair "chosen vs. choice 1" would have had to hold a truth).
    assert loss(0, 0, 1, 0) == 0.0
    assert loss(0.25, 0.25, 0.25, 0.25) == pytest.approx(0.75**2)  # consistent but unsure
    assert loss(1, 1, 0, 0) == pytest.approx(2.0)  # two truths: inconsistent and unsure
    assert loss(0, 1, 1, 1) == pytest.approx(8.0)  # the flipped ideal: three truths
    two_of_four = torch.tensor([[1.0, 1.0, 0.0, 0.0]])  # padded slots count for nothing
    assert loss(1, 0, 0.9, 0.9, mask=two_of_four) == 0.0


def planted_sets(n: int = 400, d: int = 12, n_choices: int = 4, seed: int = 0):
    """Items whose true choice lies at +2.5 v and false ones at -2.5 v, plus noise; the model's
    chosen answer is right on about 60% of them."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=d)
    v /= np.linalg.norm(v)
    label = rng.integers(0, n_choices, size=n)
    correct = rng.random(n) < 0.6
    chosen = np.where(correct, label, (label + rng.integers(1, n_choices, size=n)) % n_choices)
    sign = np.where(np.arange(n_choices)[None] == label[:, None], 1.0, -1.0)
    acts = rng.normal(size=(n, n_choices, d)) + 2.5 * sign[:, :, None] * v
    return choice_sets(acts, np.ones((n, n_choices), bool), chosen), label, correct, v


def test_ccs_answers_four_choice_items_and_its_loss_fixes_the_sign() -> None:
    sets, label, correct, _ = planted_sets()
    ccs = CCS(n_restarts=6, seed=0).fit(sets)
    p = ccs.statement_probabilities(sets)
    assert np.mean(p.argmax(axis=1) == label) > 0.93  # CCS answers the questions, no labels
    # No orientation convention: the loss alone tells truth from falsehood with four choices.
    assert not sign_is_free(sets)
    assert balanced_accuracy(correct, ccs.predict_proba(sets) >= 0.5) > 0.9
    flipped = CCS()._set(0.0, -ccs.coef_, -ccs.intercept_)
    flipped.normaliser_ = ccs.normaliser_
    assert flipped.loss(sets) > ccs.loss(sets) + 0.5
    assert ccs.restart_losses_.shape == (6,) and ccs.loss_ == ccs.restart_losses_.min()


def test_binary_items_recover_the_direction_up_to_sign() -> None:
    sets, _, correct, v = planted_sets(n_choices=2, seed=1)
    assert sign_is_free(sets)
    ccs = CCS(n_restarts=5, seed=0).fit(sets)
    # Each role is scaled by about the same factor here, so w points along v (up to sign).
    assert abs(ccs.direction_ @ v) > 0.9
    right = np.mean((ccs.predict_proba(sets) >= 0.5) == correct)
    assert max(right, 1 - right) > 0.95


def test_ccs_without_structure_stays_unsure() -> None:
    rng = np.random.default_rng(1)
    sets = choice_sets(rng.normal(size=(400, 4, 12)), np.ones((400, 4), bool), np.zeros(400, int))
    truth = rng.random(400) < 0.5
    ccs = CCS(n_restarts=4, seed=0).fit(sets)
    assert abs(balanced_accuracy(truth, ccs.predict_proba(sets) >= 0.5) - 0.5) < 0.1


def test_a_fixed_direction_works_only_where_the_truth_lies() -> None:
    sets, _, correct, v = planted_sets(seed=2)
    across = np.linalg.svd(np.vstack([v, np.eye(12)[:1]]))[2][-1]  # orthogonal to v
    along, off = CCS(seed=0).fit_along(sets, np.vstack([v, across]))
    assert np.allclose(along.direction_, v) or np.allclose(along.direction_, -v)
    assert balanced_accuracy(correct, along.predict_proba(sets) >= 0.5) > 0.9
    assert abs(balanced_accuracy(correct, off.predict_proba(sets) >= 0.5) - 0.5) < 0.1
    assert off.loss_ > along.loss_ + 0.1


def test_choice_sets_and_contrast_differences() -> None:
    acts = np.arange(3 * 3 * 2, dtype=float).reshape(3, 3, 2)
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=bool)
    sets = choice_sets(acts, mask, np.array([0, 1, 2]))
    assert sets.others().tolist() == [[0, 1, 1], [1, 0, 0], [1, 1, 0]]
    diff = contrast_differences(acts, sets)
    assert np.array_equal(diff[0], acts[0, 0] - acts[0, 1:].mean(axis=0))
    assert np.array_equal(diff[1], acts[1, 1] - acts[1, 0])  # the padded slot is no choice
    sub = sets.subset(np.array([2, 0]))
    assert sub.chosen.tolist() == [2, 0] and np.array_equal(sub.acts[0], acts[2])
    with pytest.raises(ValueError, match="padded"):
        choice_sets(acts, mask, np.array([0, 2, 0]))
    mask[1, 1] = False
    with pytest.raises(ValueError, match="at least 2 choices"):
        choice_sets(acts, mask, np.array([0, 0, 0]))


def test_orientation_follows_the_reference() -> None:
    reference = np.arange(10.0)
    assert orientation(reference**2, reference) == 1.0
    assert orientation(-reference, reference) == -1.0


def test_intervals_resample_groups_and_expected_hits_are_linear() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.5
    preds = rng.random((5, 60)) < 0.5
    hits = (preds == y).mean(axis=0)
    mean_ba = np.mean([balanced_accuracy(y, p) for p in preds])
    assert hit_balanced_accuracy(y, hits) == pytest.approx(mean_ba)
    # Items in pairs that share a group (each a copy of the other) are 30 units, not 60.
    values = np.repeat(rng.normal(size=30), 2)
    alone = item_ci(np.mean, values, groups=None, n_resamples=500, seed=0)
    grouped = item_ci(np.mean, values, groups=np.repeat(np.arange(30), 2), n_resamples=500, seed=0)
    assert grouped[1] - grouped[0] > 1.2 * (alone[1] - alone[0])


# --------------------------------------------------------------------------------------------
# Success: the plan and the controls, on stores with known answers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passing() -> dict:
    # The truth lies along v; the top PC of the contrast differences along a nuisance direction.
    return run_on(MemoryStore(nuisance=4.0), "passing")


def test_a_truth_ccs_finds_and_no_control_does_passes_every_part(passing: dict) -> None:
    head = head_of(passing)
    assert [part["name"] for part in head["criteria"]] == CRITERIA
    assert [part["kind"] for part in head["criteria"]] == ["plan"] + ["control"] * 3
    assert all(part["passed"] for part in head["criteria"]), head["criteria"]
    assert head["success"] is True and head["verdict"] == "PASS" and head["layer"] >= 1
    assert passing["success"] is True and passing["criteria"] == head["criteria"]
    assert head["ccs_balanced_accuracy"] > 0.9 and head["random_direction_balanced_accuracy"] < 0.7
    assert passing["held_out"] is True and "training items" in passing["selection"]


def test_a_ccs_no_better_than_a_random_direction_fails() -> None:
    # In one dimension every unit direction is CCS's own, up to sign: a random direction finds
    # the planted truth exactly as well as CCS does, though CCS reaches the plan's ratio.
    results = run_on(MemoryStore(d=1), "one_dimension")
    parts = parts_of(results)
    assert parts["ccs_over_supervised"]["passed"] is True
    assert parts["beats_random_direction"]["value"] == pytest.approx(0.0)
    assert parts["beats_random_direction"]["passed"] is False
    assert results["success"] is False and results["verdict"] != "PASS"
    assert "beats_random_direction" in head_of(results)["failed_criteria"]


def test_without_a_truth_to_find_nothing_is_beaten() -> None:
    results = run_on(MemoryStore(truth=0.0), "no_truth")
    parts = parts_of(results)
    assert abs(head_of(results)["ccs_balanced_accuracy"] - 0.5) < 0.1
    assert all(parts[name]["passed"] is False for name in CRITERIA[1:])
    assert results["success"] is False


def test_a_truth_along_the_top_principal_component_is_not_ccs_s_finding() -> None:
    # Without the nuisance direction the truth dominates the contrast differences (Emmons 2023).
    results = run_on(MemoryStore(), "top_pc")
    parts = parts_of(results)
    assert parts["beats_top_principal_component"]["passed"] is False
    assert [name for name in CRITERIA if not parts[name]["passed"]] == [
        "beats_top_principal_component"
    ]
    assert results["success"] is False


def test_the_layer_is_chosen_without_the_held_out_labels() -> None:
    named = NamedStore("m", "t", MemoryStore(n=240, n_layers=3, seed=3))
    split = correctness_split(named.store.correct(), seed=0)
    y = split.y.copy()
    y[split.test] = ~y[split.test]  # every held-out label flipped
    settings = {
        key: value
        for key, value in FAST.items()
        if key not in ("layer", "layers", "n_samples", "test_fraction")
    }

    def run(which: object) -> dict:
        return analyse_split(
            named, which, layer=None, curve_layers=[0, 1, 2, 3], seed=0, **settings
        )

    original, flipped = run(split), run(replace(split, y=y))
    assert flipped["selected"]["layer"] == original["selected"]["layer"] >= 1
    for a, b in zip(original["layers"], flipped["layers"], strict=True):
        assert (
            a["supervised_contrast"]["inner_cv_log_loss"]
            == b["supervised_contrast"]["inner_cv_log_loss"]
        )
        assert a["ccs"]["train_loss"] == b["ccs"]["train_loss"]
        assert a["ccs"]["share_predicted_correct"] == b["ccs"]["share_predicted_correct"]
    # The held-out labels did change what is scored.
    head, other = original["selected"], flipped["selected"]
    assert head["ccs_balanced_accuracy"] == pytest.approx(1 - other["ccs_balanced_accuracy"])


# --------------------------------------------------------------------------------------------
# The experiment on store folders, its record and its script
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ccs")
    planted = synthetic_store(root / "m" / "planted", seed=1)
    noise = synthetic_store(root / "m" / "noise", planted=False, seed=4)
    return run_unsupervised_error(open_stores([str(planted), str(noise)]), seed=0, **FAST)


def test_the_headline_records_its_parts_and_how_its_layer_was_chosen(results: dict) -> None:
    head = head_of(results)
    assert head["layer"] >= 1 and head["ccs_balanced_accuracy"] > 0.9  # the planted layers
    assert results["verdict"] == head["verdict"] and results["success"] == head["success"]
    assert (results["verdict"] == "PASS") == (results["success"] is True)
    assert results["held_out"] is True and results["selection"].endswith(head["selection"])
    assert results["value"] == head["ratio"] == head["criteria"][0]["value"]
    assert results["ci"] == head["ratio_ci"] == head["criteria"][0]["ci"]
    noise = results["stores"][1]["selected"]
    assert abs(noise["ccs_balanced_accuracy"] - 0.5) < 0.15 and noise["success"] is False
    text = summary_markdown(results)
    assert "beats_random_direction" in text and "did not hold" in text


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
    # balanced accuracies (and their ratio, the headline) from a, b and the held-out labels
    folder = synthetic_store(tmp_path_factory.mktemp("ccs_again") / "m" / "planted", seed=1)
    y = correctness_split(ActivationStore(folder).correct(), seed=0).y_test
    ccs_ba = float(balanced_accuracy(y, a.astype(bool) == y))
    sup_ba = float(balanced_accuracy(y, b.astype(bool) == y))
    assert ccs_ba == pytest.approx(record["selected"]["ccs_balanced_accuracy"])
    assert sup_ba == pytest.approx(record["selected"]["supervised_balanced_accuracy"])
    assert ccs_ba / sup_ba == pytest.approx(results["value"])
    assert len(results["stores"][1]["comparison"]["a"]) == results["stores"][1]["n_test"]


def test_no_comparison_and_no_verdict_when_every_store_is_skipped(tmp_path: Path) -> None:
    folder = synthetic_store(tmp_path / "m" / "one_sided", n=60, n_layers=2)
    rows = [json.loads(line) for line in (folder / "scores.jsonl").read_text().splitlines()]
    for row in rows:
        row["correct"] = True
    (folder / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = run_unsupervised_error(open_stores(str(folder)), seed=0, **FAST)
    assert results["n_analysed"] == 0 and results["comparison"] is None
    assert results["success"] is None and results["held_out"] is False


def test_the_random_control_needs_a_direction() -> None:
    with pytest.raises(ConfigError, match="unsupervised_error.n_random"):
        validate_schema({"experiments": {"unsupervised_error": {"n_random": 0}}})


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
    assert "configured" in saved["selection"] and saved["held_out"] is True
    assert [part["name"] for part in saved["criteria"]] == CRITERIA
    assert (out / "figure_data.json").is_file() and (out / "summary.md").is_file()
    bad = json.dumps({**params, "layer": "top"})
    assert_clean_exit(main, [*args, "--params", bad, "--output-dir", str(out)], "'top'")
