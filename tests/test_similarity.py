"""Ridge projection correlation, debiased CKA, permutation null and layer alignment."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeCV

from actspace.methods.ridge import (
    DEFAULT_ALPHAS,
    permutation_null,
    projection_with_null,
    ridge_projection_correlation,
)
from actspace.methods.similarity import (
    aligned_layers,
    columnwise_pearson,
    depth_to_layer,
    linear_cka_debiased,
    rowwise_pearson,
)


def _hsic_unbiased_song(k: np.ndarray, ell: np.ndarray) -> float:
    """Song et al. (2012), eq. 5, written out literally."""
    n = k.shape[0]
    k, ell = k.copy(), ell.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(ell, 0)
    one = np.ones(n)
    term = np.trace(k @ ell)
    term += (one @ k @ one) * (one @ ell @ one) / ((n - 1) * (n - 2))
    term -= 2 / (n - 2) * (one @ k @ ell @ one)
    return term / (n * (n - 3))


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_cka_identity_rotation_scaling(rng: np.random.Generator) -> None:
    x = rng.normal(size=(60, 20))
    assert linear_cka_debiased(x, x) == pytest.approx(1.0, abs=1e-6)
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    assert linear_cka_debiased(x, x @ q) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka_debiased(x, 5.0 * x + 3.0) == pytest.approx(1.0, abs=1e-6)
    y = rng.normal(size=(60, 30))
    base = linear_cka_debiased(x, y)
    q30, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    assert linear_cka_debiased(x, 0.1 * y @ q30) == pytest.approx(base, abs=1e-9)


def test_cka_matches_song_estimator(rng: np.random.Generator) -> None:
    x = rng.normal(size=(30, 8))
    y = x[:, :4] @ rng.normal(size=(4, 12)) + rng.normal(size=(30, 12))
    xc, yc = x - x.mean(0), y - y.mean(0)
    k, ell = xc @ xc.T, yc @ yc.T
    expected = _hsic_unbiased_song(k, ell) / np.sqrt(
        _hsic_unbiased_song(k, k) * _hsic_unbiased_song(ell, ell)
    )
    assert linear_cka_debiased(x, y) == pytest.approx(expected, rel=1e-9)


def test_cka_independent_is_near_zero_even_when_wide(rng: np.random.Generator) -> None:
    # dimension far above the number of items: biased CKA would be large here
    values = [
        linear_cka_debiased(rng.normal(size=(50, 500)), rng.normal(size=(50, 500)))
        for _ in range(5)
    ]
    assert abs(np.mean(values)) < 0.02
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka_debiased(np.ones((3, 2)), np.ones((3, 2)))


def test_ridge_exact_linear_map_correlates_near_one(rng: np.random.Generator) -> None:
    x = rng.normal(size=(200, 40))
    y = x @ rng.normal(size=(40, 25))
    train, test = np.arange(150), np.arange(150, 200)
    result = ridge_projection_correlation(x, y, train, test)
    assert result.per_item.shape == (50,)
    assert result.per_dimension.shape == (25,)
    assert result.mean > 0.99
    assert result.per_dimension_mean > 0.99
    fixed = ridge_projection_correlation(x, y, train, test, alpha=1.0)
    assert fixed.alpha == 1.0 and fixed.mean > 0.99


def test_ridge_independent_data_matches_null(rng: np.random.Generator) -> None:
    x = rng.normal(size=(240, 30))
    y = rng.normal(size=(240, 20))
    train, test = np.arange(160), np.arange(160, 240)
    observed = ridge_projection_correlation(x, y, train, test)
    null = permutation_null(x, y, train, test, n_permutations=4, seed=1)
    assert null.shape == (4, 80)
    assert abs(observed.mean) < 0.05
    assert abs(null.mean()) < 0.05
    assert abs(observed.mean - null.mean()) < 0.06


def test_permutation_null_is_low_for_planted_map(rng: np.random.Generator) -> None:
    x = rng.normal(size=(200, 30))
    y = x @ rng.normal(size=(30, 20)) + 0.3 * rng.normal(size=(200, 20))
    train, test = np.arange(150), np.arange(150, 200)
    assert ridge_projection_correlation(x, y, train, test).mean > 0.9
    null = permutation_null(x, y, train, test, n_permutations=3, seed=0)
    assert abs(null.mean()) < 0.1
    assert np.array_equal(null, permutation_null(x, y, train, test, n_permutations=3, seed=0))


@pytest.mark.parametrize(("n", "p"), [(120, 30), (40, 150)])
def test_ridge_solver_matches_sklearn(rng: np.random.Generator, n: int, p: int) -> None:
    """Fixed-penalty predictions equal sklearn's Ridge on the standardised data; the penalty GCV
    picks does as well on held-out items as RidgeCV's leave-one-out choice (with more features
    than items both criteria are flat near zero penalty, so the penalties themselves may differ).
    """
    x = rng.normal(size=(n + 30, p)) * rng.uniform(0.1, 5.0, size=p) + 2.0
    y = x[:, :5] @ rng.normal(size=(5, 9)) + rng.normal(size=(n + 30, 9))
    train, test = np.arange(n), np.arange(n, n + 30)
    mu, sd = x[train].mean(0), x[train].std(0)
    ymu, ysd = y[train].mean(0), y[train].std(0)
    xs, ys = (x - mu) / sd, (y - ymu) / ysd
    for alpha in (0.1, 10.0):
        ref = Ridge(alpha=alpha).fit(xs[train], ys[train]).predict(xs[test])
        got = ridge_projection_correlation(x, y, train, test, alpha=alpha)
        r = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(ref, ys[test], strict=True)])
        assert got.per_item == pytest.approx(r, abs=1e-9)
    chosen = ridge_projection_correlation(x, y, train, test)
    assert chosen.alpha in DEFAULT_ALPHAS
    loo = RidgeCV(alphas=DEFAULT_ALPHAS).fit(xs[train], ys[train]).alpha_
    with_loo = ridge_projection_correlation(x, y, train, test, alpha=loo)
    assert chosen.mean == pytest.approx(with_loo.mean, abs=0.02)


def test_projection_with_null_matches_the_separate_functions(rng: np.random.Generator) -> None:
    x = rng.normal(size=(80, 10))
    y = x @ rng.normal(size=(10, 6)) + rng.normal(size=(80, 6))
    train, test = np.arange(60), np.arange(60, 80)
    observed, null = projection_with_null(x, y, train, test, n_permutations=3, seed=5)
    assert observed.per_item == pytest.approx(
        ridge_projection_correlation(x, y, train, test).per_item
    )
    assert np.array_equal(null, permutation_null(x, y, train, test, n_permutations=3, seed=5))


@pytest.mark.parametrize(("n", "p"), [(200, 8), (50, 120)])  # both orders of the product
def test_fixed_penalty_null_is_the_refit_at_the_observed_penalty(
    rng: np.random.Generator, n: int, p: int
) -> None:
    x = rng.normal(size=(n, p))
    y = 3.0 * x[:, :3] @ rng.normal(size=(3, 7)) + rng.normal(size=(n, 7))
    train, test = np.arange(int(0.8 * n)), np.arange(int(0.8 * n), n)
    observed, fast = projection_with_null(
        x, y, train, test, n_permutations=6, seed=2, null_alpha="observed"
    )
    # the grid's penalty is chosen once, on the real targets, and kept for every permutation
    refit, slow = projection_with_null(
        x, y, train, test, alpha=observed.alpha, n_permutations=6, seed=2
    )
    assert np.array_equal(observed.per_item, refit.per_item)
    np.testing.assert_allclose(fast, slow, atol=1e-10)
    assert fast.mean(axis=1).max() < observed.mean  # the real pairing beats every shuffle
    with pytest.raises(ValueError, match="null_alpha"):
        projection_with_null(x, y, train, test, null_alpha="fixed")  # type: ignore[arg-type]


def test_ridge_input_checks(rng: np.random.Generator) -> None:
    x = rng.normal(size=(20, 4))
    with pytest.raises(ValueError, match="same items"):
        ridge_projection_correlation(x, x[:10], np.arange(5), np.arange(5, 10))
    with pytest.raises(ValueError, match="overlap"):
        ridge_projection_correlation(x, x, np.arange(10), np.arange(8, 20))
    with pytest.raises(ValueError, match="NaN"):
        bad = x.copy()
        bad[0, 0] = np.nan
        ridge_projection_correlation(bad, x, np.arange(10), np.arange(10, 20))


def test_pearson_helpers() -> None:
    a = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    b = np.array([[2.0, 4.0, 6.0], [3.0, 2.0, 1.0]])
    assert rowwise_pearson(a, b) == pytest.approx([1.0, 0.0])
    cols = columnwise_pearson(a.T, b.T)
    assert cols[0] == pytest.approx(1.0) and np.isnan(cols[1])


def test_aligned_layers() -> None:
    assert aligned_layers(12, 6, 0.5) == (6, 3)
    assert aligned_layers(12, 24, 0.0) == (0, 0)
    assert aligned_layers(12, 24, 1.0) == (12, 24)
    assert depth_to_layer(5, 0.5) == 3  # 2.5 rounds half up
    assert depth_to_layer(4, 0.3) == 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        depth_to_layer(4, 1.5)
