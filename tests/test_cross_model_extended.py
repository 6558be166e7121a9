"""Known answers for the layer-grid alignment measures of experiment 2A (cross_model_extended)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.scripts import assert_clean_exit, load_script
from helpers.stores import synthetic_store
from sklearn.linear_model import Ridge

from actspace.branches.cross_model.cross_model_extended import (
    run_cross_model_extended,
    split_items,
    summary_markdown,
)
from actspace.branches.cross_model.layer_grid import depth_aligned_pairs
from actspace.core.schema import validate_schema
from actspace.methods.ridge import (
    DEFAULT_ALPHAS,
    RidgeSVD,
    ridge_alphas,
    ridge_projection_correlation,
)
from actspace.methods.similarity import (
    cka_from_grams,
    gram_norm,
    knn_indices,
    knn_membership,
    linear_cka_debiased,
    mutual_knn_alignment,
    mutual_knn_from_neighbours,
    outlier_dimensions,
    remove_dimensions,
    rowwise_pearson,
    standardise,
    u_centred_gram,
)
from actspace.premortems.pm1 import run_pm1


def schema_defaults() -> dict:
    """The defaults of ``experiments.cross_model_extended`` (without the null model/task choices)
    and seed 0: what the experiment runs with unless a test says otherwise."""
    section = validate_schema({})["experiments"]["cross_model_extended"]
    return {key: value for key, value in section.items() if value is not None} | {"seed": 0}


def run(stores: dict, **overrides):
    """``run_cross_model_extended`` with the schema's defaults and ``overrides``."""
    params = schema_defaults() | overrides
    params.pop("models", None), params.pop("task", None)
    return run_cross_model_extended(stores, **params)


class FakeStore:
    """An in-memory activation store: ``acts`` is [items, layers+1, d]."""

    def __init__(self, acts: np.ndarray, ids: list[str] | None = None) -> None:
        self.acts = np.asarray(acts, dtype=np.float32)
        self.n_items, depth, self.hidden_size = self.acts.shape
        self.n_layers = depth - 1
        self.meta = {"model": "fake"}
        self._ids = ids or [f"item-{i}" for i in range(self.n_items)]

    def layer(self, k: int, pooling: str = "last") -> np.ndarray:
        return self.acts[:, k].copy()

    def scores(self) -> list[dict]:
        return [{"id": i, "correct": True} for i in self._ids]

    def correct(self) -> np.ndarray:
        return np.ones(self.n_items, dtype=bool)

    def logliks(self) -> list[np.ndarray]:
        return [np.zeros(2) for _ in range(self.n_items)]


def _random_model(rng: np.random.Generator, n: int, layers: int, d: int) -> np.ndarray:
    """Activations with layer structure: each layer a random linear function of a latent."""
    latent = rng.normal(size=(n, 12))
    return np.stack([latent @ rng.normal(size=(12, d)) for _ in range(layers + 1)], axis=1)


# -- primitives ------------------------------------------------------------------------------


def test_ridge_svd_matches_sklearn_ridge_and_pm1s_penalty_choice():
    rng = np.random.default_rng(0)
    for n, p in ((120, 20), (30, 50)):
        x = standardise(rng.normal(size=(n, p)))
        y = x @ rng.normal(size=(p, 7)) + 2.0 * rng.normal(size=(n, 7)) + 3.0
        ridge = RidgeSVD(x)
        for alpha in (0.1, 10.0):
            expected = Ridge(alpha=alpha).fit(x, y).predict(x[:9])
            np.testing.assert_allclose(ridge.predict(y, x[:9], alpha), expected, atol=1e-8)
        # the grid search is PM1's: same penalty and same held-out correlations
        raw_x, raw_y = rng.normal(size=(n + 20, p)), rng.normal(size=(n + 20, 7))
        raw_y[:, :3] += raw_x[:, :3]
        train, test = np.arange(n), np.arange(n, n + 20)
        pm1 = ridge_projection_correlation(raw_x, raw_y, train, test)
        ours = RidgeSVD(standardise(raw_x[train]))
        x_test_v = standardise(raw_x[test], raw_x[train]) @ ours.v
        pred, used = ours.fit_predict_centred(standardise(raw_y[train]), x_test_v, DEFAULT_ALPHAS)
        assert used == pm1.alpha
        y_test = standardise(raw_y[test], raw_y[train])
        np.testing.assert_allclose(rowwise_pearson(pred, y_test), pm1.per_item, atol=1e-9)


def test_cka_from_grams_matches_debiased_cka_and_permutes_items():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6))
    y = x @ rng.normal(size=(6, 5)) + rng.normal(size=(40, 5))
    k, ell = u_centred_gram(x), u_centred_gram(y)
    value = cka_from_grams(k, ell, gram_norm(k), gram_norm(ell))
    assert value == pytest.approx(linear_cka_debiased(x, y), abs=1e-12)
    perm = rng.permutation(40)
    permuted = cka_from_grams(k, ell, gram_norm(k), gram_norm(ell), perm)
    assert permuted == pytest.approx(linear_cka_debiased(x, y[perm]), abs=1e-12)
    # orthogonal transform and isotropic scaling: CKA exactly 1
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    rotated = u_centred_gram(3.0 * x @ q)
    assert cka_from_grams(k, rotated, gram_norm(k), gram_norm(rotated)) == pytest.approx(1.0)


def test_mutual_knn_known_values():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert mutual_knn_alignment(x, x, k=5) == 1.0
    assert mutual_knn_alignment(x, 2.0 * x @ q, k=5) == 1.0  # cosine: rotation and scale
    # a permuted partner equals the permuted-null path of the shared neighbour lists
    y = x + 0.5 * rng.normal(size=x.shape)
    perm = rng.permutation(60)
    member = knn_membership(knn_indices(x, 5))
    via_perm = mutual_knn_from_neighbours(member, knn_indices(y, 5), perm)
    assert via_perm == pytest.approx(mutual_knn_alignment(x, y[perm], k=5))
    # hand-made case: two clusters on the circle; k = 1; neighbours agree for exactly 4 of 6
    angles_x = np.deg2rad([0, 10, 100, 110, 200, 215])
    angles_y = np.deg2rad([0, 10, 100, 110, 200, 300])
    circle = lambda a: np.stack([np.cos(a), np.sin(a)], axis=1)  # noqa: E731
    assert mutual_knn_alignment(circle(angles_x), circle(angles_y), k=1) == pytest.approx(4 / 6)


def test_outlier_dimensions_and_removal():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 10))
    x[:, 7] *= 50.0
    x[:, 2] *= 20.0
    dims = outlier_dimensions(x, 2)
    assert dims.tolist() == [2, 7]
    assert remove_dimensions(x, dims).shape == (100, 8)
    with pytest.raises(ValueError, match="none would remain"):
        outlier_dimensions(x, 10)


def test_depth_aligned_pairs():
    assert depth_aligned_pairs(4, 4) == [(k, k) for k in range(5)]
    assert depth_aligned_pairs(12, 6) == [
        (0, 0), (1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3),
        (7, 4), (8, 4), (9, 5), (10, 5), (11, 6), (12, 6),
    ]  # fmt: skip
    assert depth_aligned_pairs(2, 6) == [(0, 0), (1, 3), (2, 6)]


# -- the experiment --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_models():
    """A random model, an exact linear function of it, and an unrelated random model."""
    rng = np.random.default_rng(4)
    n, layers, d = 150, 3, 16
    a = _random_model(rng, n, layers, d)
    perm = rng.permutation(d)
    b = 3.0 * a[:, :, perm] + 5.0  # exact linear (affine) function, layer by layer
    c = rng.normal(size=(n, layers + 1, d))
    return {"a": FakeStore(a), "b": FakeStore(b), "c": FakeStore(c)}


@pytest.fixture(scope="module")
def extended(three_models):
    return run(three_models, k=8, n_permutations=20, n_outlier_dims=2, n_bootstrap=200, seed=5)


def _grid(figure_data: dict, src: str, tgt: str, variant: str = "standardised") -> dict:
    entry = next(g for g in figure_data["layer_grids"] if g["source"] == src and g["target"] == tgt)
    return {key: np.array(value, dtype=float) for key, value in entry[variant].items()}


def test_exact_linear_function_gives_correlation_one_and_cka_one(extended):
    _, figure_data = extended
    for variant in ("standardised", "outliers_removed"):
        for src, tgt in (("a", "b"), ("b", "a")):
            grid = _grid(figure_data, src, tgt, variant)
            diagonal = np.arange(4)
            assert np.all(grid["correlation"][diagonal, diagonal] > 0.999)
            np.testing.assert_allclose(grid["cka"][diagonal, diagonal], 1.0, atol=1e-6)
            np.testing.assert_allclose(grid["mutual_knn"][diagonal, diagonal], 1.0)
            assert np.all(grid["correlation_null"][diagonal, diagonal] < 0.2)
            assert np.all(grid["cka_null"][diagonal, diagonal] < 0.1)


def test_unrelated_activations_sit_at_the_permutation_null(extended):
    results, figure_data = extended
    chance = results["mutual_knn_chance"]
    assert chance == pytest.approx(8 / 149)
    for src, tgt in (("a", "c"), ("c", "a"), ("b", "c")):
        grid = _grid(figure_data, src, tgt)
        # per cell within sampling noise of the null; over the 16 cells, centred on it
        gap = grid["correlation"] - grid["correlation_null"]
        assert np.all(np.abs(gap) < 0.2) and abs(gap.mean()) < 0.04
        gap = grid["cka"] - grid["cka_null"]
        assert np.all(np.abs(gap) < 0.06) and abs(gap.mean()) < 0.02
        assert np.all(np.abs(grid["cka_null"]) < 0.03)
        gap = grid["mutual_knn"] - chance
        assert np.all(np.abs(gap) < 0.05) and abs(gap.mean()) < 0.02
        assert np.all(np.abs(grid["mutual_knn_null"] - chance) < 0.02)


def test_results_layout_for_figures(extended):
    results, figure_data = extended
    assert results["models"] == ["a", "b", "c"]
    assert len(results["pairs"]) == 6 and len(figure_data["layer_grids"]) == 6
    grid = _grid(figure_data, "a", "b")
    assert grid["correlation"].shape == (4, 4) and np.all(np.isfinite(grid["correlation"]))
    heat = results["model_pair_matrices"]["at_layer_depth"]["standardised"]["cka"]
    assert heat[0][0] is None and heat[0][1] == pytest.approx(1.0)
    assert heat[0][1] == heat[1][0]  # CKA is symmetric
    best = next(p for p in results["pairs"] if p["source"] == "a" and p["target"] == "b")
    assert best["standardised"]["best"]["cka"]["value"] == pytest.approx(1.0)
    assert len(results["depth_aligned"]) == 6 * 2 * 4
    assert len(results["outlier_dimensions"]["a"]["dims"]) == 4
    assert all(len(dims) == 2 for dims in results["outlier_dimensions"]["a"]["dims"])
    assert results["value"] == pytest.approx(
        np.mean([p["standardised"]["correlation"] for p in results["pairs"]])
    )
    text = summary_markdown(results)
    assert "Best-aligned layer pairs" in text and "| a | b |" in text


def test_comparison_block_matches_the_headline(extended):
    results, _ = extended
    comparison = results["comparison"]
    assert comparison["kind"] == "paired" and comparison["unit"] == "item"
    assert comparison["binary"] is False
    a, b = np.array(comparison["a"]), np.array(comparison["b"])
    assert len(a) == len(b) == results["n"] == results["n_test"] == 45
    assert all(type(v) is float for v in comparison["a"] + comparison["b"])
    # the real side is the headline's per-item values, the null side the cells' nulls
    assert a.mean() == pytest.approx(results["value"], abs=1e-12)
    nulls = [p["standardised"]["correlation_null"] for p in results["pairs"]]
    assert b.mean() == pytest.approx(np.mean(nulls), abs=1e-12)
    # a and b are exact functions of each other (two of the six ordered pairs): above the null
    assert a.mean() - b.mean() > 0.2


def test_headline_is_the_configured_depth_cell_not_the_best_one_on_held_out_items():
    """Two models aligned only at their last layer: the headline stays at the configured depth
    (where they are unrelated) instead of moving to the best cell, which the held-out items would
    choose; so the record says held out, with no success criterion (descriptive)."""
    rng = np.random.default_rng(7)
    n, layers, d = 120, 4, 8
    a = rng.normal(size=(n, layers + 1, d))
    b = rng.normal(size=(n, layers + 1, d))
    b[:, layers] = 2.0 * a[:, layers] + 1.0
    results, _ = run({"a": FakeStore(a), "b": FakeStore(b)}, n_permutations=2, n_bootstrap=100, k=5)
    pair = results["pairs"][0]
    best = pair["standardised"]["best"]["correlation"]
    assert (best["source_layer"], best["target_layer"]) == (layers, layers)
    assert best["value"] > 0.99
    assert pair["layer_depth_cell"] == [2, 2] and abs(results["value"]) < 0.2
    assert results["held_out"] is True and results["success"] is None
    assert "criteria" not in results
    assert "relative depth 0.5" in results["selection"]
    assert "training items" in results["selection"]
    assert results["selection"] in summary_markdown(results)


def test_depth_aligned_cells_only_without_the_full_grid(three_models):
    results, figure_data = run(
        {"a": three_models["a"], "c": three_models["c"]},
        k=5,
        n_permutations=2,
        full_grid=False,
        n_bootstrap=100,
    )
    grid = _grid(figure_data, "a", "c")
    computed = np.isfinite(grid["correlation"])
    assert computed.sum() == 4 and np.all(np.diag(computed))
    assert len(results["depth_aligned"]) == 2 * 2 * 4


def test_cell_at_layer_depth_is_pm1s_cell_and_agrees_with_its_estimate(three_models):
    """The 2A cell at PM1's depth is PM1's pair of layers. PM1 cross-fits (K folds x R repeats)
    where 2A fits once on its own split, so the two estimate the same correlation: 2A's value
    lies within PM1's corrected-t interval for the pair, widened by 0.05."""
    stores = {"a": three_models["a"], "c": three_models["c"]}
    shared = dict(
        layer_depth=0.5,
        pooling="last",
        n_samples=2000,
        ridge_alpha="auto",
        n_permutations=2,
        n_bootstrap=100,
        seed=11,
    )
    pm1 = run_pm1(stores, threshold=0.3, folds=5, repeats=2, **shared)
    results, _ = run(stores, k=5, test_fraction=0.3, **shared)
    for pair in pm1["pairs"]:
        ours = next(
            p
            for p in results["pairs"]
            if (p["source"], p["target"]) == (pair["source"], pair["target"])
        )
        assert ours["layer_depth_cell"] == [pair["source_layer"], pair["target_layer"]]
        low, high = pair["ci"]
        assert low - 0.05 <= ours["standardised"]["correlation"] <= high + 0.05
        # CKA here is on standardised features (PM1 reports it on raw ones)
        la, lc = (pair["source_layer"], pair["target_layer"])
        if pair["source"] == "c":
            la, lc = lc, la
        expected = linear_cka_debiased(
            standardise(stores["a"].layer(la).astype(float)),
            standardise(stores["c"].layer(lc).astype(float)),
        )
        assert ours["standardised"]["cka"] == pytest.approx(expected, abs=1e-9)


def test_a_layer_identical_for_every_item_aligns_at_chance_not_perfectly():
    # as the embedding of a shared last context token: no information, so no alignment
    rng = np.random.default_rng(6)
    a, b = _random_model(rng, 120, 2, 8), _random_model(rng, 120, 2, 8)
    a[:, 0], b[:, 0] = rng.normal(size=8), rng.normal(size=8)
    results, figure_data = run(
        {"a": FakeStore(a), "b": FakeStore(b)}, k=10, n_permutations=3, n_bootstrap=100
    )
    grid = _grid(figure_data, "a", "b")
    assert abs(grid["mutual_knn"][0, 0] - results["mutual_knn_chance"]) < 0.05
    assert np.isnan(grid["cka"][0, 0])
    assert grid["correlation"][0, 0] == 0.0


def test_split_and_item_checks(three_models):
    items, train, test = split_items(150, 100, 0.3, seed=0)
    assert items.size == 100 and train.size == 70 and test.size == 30
    assert np.intersect1d(train, test).size == 0
    other = FakeStore(three_models["c"].acts, ids=[f"x{i}" for i in range(150)])
    with pytest.raises(ValueError, match="different items"):
        run({"a": three_models["a"], "x": other}, n_permutations=1)
    with pytest.raises(ValueError, match="k=500"):
        run(three_models, k=500, n_permutations=1)
    with pytest.raises(ValueError, match="layer_depth"):
        run(three_models, layer_depth=1.5)


def test_one_model_is_not_measured_and_says_why(three_models):
    results, figure_data = run({"a": three_models["a"]}, n_permutations=1)
    assert results["value"] is None and results["success"] is None
    assert "this study has one (a)" in results["reason"]
    assert figure_data == {"curves": {}}  # the figure step draws nothing and says so
    assert "Not measured: cross-model alignment compares" in summary_markdown(results)


def test_ridge_alphas_reads_every_form_of_the_setting():
    assert ridge_alphas("auto") == DEFAULT_ALPHAS
    assert ridge_alphas(3) == 3.0 and isinstance(ridge_alphas(3), float)
    assert ridge_alphas("0.5") == 0.5
    assert ridge_alphas("0.1,10") == (0.1, 10.0) == ridge_alphas([0.1, 10])
    with pytest.raises(ValueError, match="'auto'"):
        ridge_alphas("often")
    with pytest.raises(ValueError, match="positive"):
        ridge_alphas(-1.0)
    with pytest.raises(ValueError, match="positive"):
        ridge_alphas([1.0, 0.0])


def test_script_takes_the_section_as_params(tmp_path):
    """The script runs on the rule's --params (names from its models) and refuses bad input
    with one line."""
    main = load_script("cross_model_extended").main
    for seed, name in enumerate(("a", "b")):
        synthetic_store(tmp_path / name, n=60, d=8, n_layers=2, seed=seed)
    section = schema_defaults() | {"models": ["x", "y"], "task": "facts", "n_permutations": 1}
    stores = f"{tmp_path}/a,{tmp_path}/b"
    out = tmp_path / "out"
    main(["--params", json.dumps(section), "--stores", stores, "--output-dir", str(out)])
    results = json.loads((out / "results.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert results["models"] == ["x", "y"] and results["n_permutations"] == 1
    assert results["seed"] == 0 and (out / "figure_data.json").is_file()
    assert {key: config[key] for key in section} == section
    missing = f"{tmp_path}/a,{tmp_path}/missing"
    output = ["--output-dir", str(tmp_path / "refused")]
    params = ["--params", json.dumps(section)]
    assert_clean_exit(main, [*params, "--stores", missing, *output], "not found")
    assert not (tmp_path / "refused").exists()
