"""2-additive WLS: exact recovery, and the product (Kronecker) solve equals the dense WLS it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dualex.errors import InputError
from dualex.games.exact import enumerate_coalitions
from dualex.games.regression import (
    Surrogate,
    all_pairs,
    cross_pairs,
    fit_product_surrogate,
    fit_surrogate,
    normalise_pairs,
    solve_psd,
)
from dualex.games.sampler import sample_banzhaf, sample_shapley


def random_surrogate(n: int, pairs: torch.Tensor, seed: int) -> Surrogate:
    g = torch.Generator().manual_seed(seed)
    return Surrogate(
        float(torch.randn(1, generator=g)),
        torch.randn(n, generator=g, dtype=torch.float64),
        pairs,
        torch.randn(pairs.shape[0], generator=g, dtype=torch.float64),
    )


def dense_wls(Z: np.ndarray, y: np.ndarray, w: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's dense route (for checking only): coefficients and fitted values."""
    Z = Z.astype(float)
    cols = [np.ones((len(Z), 1)), Z]
    if len(pairs):
        cols.append(Z[:, pairs[:, 0]] * Z[:, pairs[:, 1]])
    X = np.concatenate(cols, 1)
    sw = np.sqrt(w)
    coef = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
    return coef, X @ coef


def assert_same(a: Surrogate, b: Surrogate, atol: float = 1e-8) -> None:
    assert a.intercept == pytest.approx(b.intercept, abs=atol)
    torch.testing.assert_close(a.main, b.main, atol=atol, rtol=0)
    torch.testing.assert_close(a.pair_matrix(), b.pair_matrix(), atol=atol, rtol=0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 7), p=st.floats(0.2, 0.8), seed=st.integers(0, 10_000), sub=st.booleans())
def test_fit_recovers_an_exactly_2_additive_game(n: int, p: float, seed: int, sub: bool) -> None:
    pairs = all_pairs(n)
    if sub:  # a game with only some pairs, fitted with that basis
        pairs = pairs[torch.randperm(pairs.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]
        pairs = normalise_pairs(pairs, n)
    truth = random_surrogate(n, pairs, seed)
    d = 1 + n + pairs.shape[0]
    s = sample_banzhaf(n, min(2**n, 2 * d + 8), p, np.random.default_rng(seed))
    y = truth.predict(s.coalitions) - truth.intercept  # targets v(S) − v(∅)
    fit = fit_surrogate(s.coalitions, y, s.weights, pairs)
    assume(fit.info["rank_deficient"] == 0)
    truth.intercept = 0.0
    assert_same(fit, truth)
    assert fit.info["r2_train"] == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(ni=st.integers(1, 5), nt=st.integers(1, 4), p=st.floats(0.2, 0.8), seed=st.integers(0, 10_000))
def test_product_fit_recovers_an_exactly_2_additive_game(ni: int, nt: int, p: float, seed: int) -> None:
    n = ni + nt
    truth = random_surrogate(n, all_pairs(n), seed)
    rng = np.random.default_rng(seed)
    si = sample_banzhaf(ni, min(2**ni, 1 + ni + ni * (ni - 1) // 2 + 6), p, rng)
    st_ = sample_banzhaf(nt, min(2**nt, 1 + nt + nt * (nt - 1) // 2 + 6), p, rng)
    grid = np.concatenate([np.repeat(si.coalitions, st_.m, 0), np.tile(st_.coalitions, (si.m, 1))], 1)
    V = truth.predict(grid).reshape(si.m, st_.m)
    fit = fit_product_surrogate(si.coalitions, si.weights, st_.coalitions, st_.weights, V, "all")
    assume(fit.info["rank_deficient"] == 0)
    assert_same(fit, truth)


@pytest.mark.parametrize("m", [(40, 18), (9, 5)], ids=["overdetermined", "underdetermined"])
@pytest.mark.parametrize("basis", ["all", "crossmodal", "none", "custom"])
def test_product_fit_equals_the_dense_wls_on_the_flattened_grid(m: tuple[int, int], basis: str) -> None:
    rng = np.random.default_rng(0)
    ni, nt = 5, 4
    Zi, Zt = rng.random((m[0], ni)) < 0.4, rng.random((m[1], nt)) < 0.6
    wi, wt = rng.random(m[0]) + 0.1, rng.random(m[1]) + 0.1
    V = rng.normal(size=m)  # not 2-additive: a proper least-squares problem
    pairs = np.array([[0, 5], [1, 2], [3, 7], [6, 8], [0, 1], [2, 6]]) if basis == "custom" else basis
    prod = fit_product_surrogate(Zi, wi, Zt, wt, V, pairs)
    Z = np.concatenate([np.repeat(Zi, m[1], 0), np.tile(Zt, (m[0], 1))], 1)
    w, y = np.outer(wi, wt).ravel(), V.ravel()
    flat = fit_surrogate(Z, y, w, prod.pairs)
    coef, fitted = dense_wls(Z, y, w, prod.pairs.numpy())
    np.testing.assert_allclose(prod.predict(Z).numpy(), fitted, atol=1e-10)
    np.testing.assert_allclose(flat.predict(Z).numpy(), fitted, atol=1e-10)
    assert prod.info["r2_train"] == pytest.approx(flat.info["r2_train"], abs=1e-10)
    if m[0] > 20:  # unique solution: the coefficients agree too
        n = ni + nt
        assert prod.intercept == pytest.approx(coef[0], abs=1e-10)
        np.testing.assert_allclose(prod.main.numpy(), coef[1 : n + 1], atol=1e-10)
        np.testing.assert_allclose(prod.pair_values.numpy(), coef[n + 1 :], atol=1e-10)
        assert prod.info["rank_deficient"] == 0
    else:
        assert prod.info["rank_deficient"] == 1


def test_cross_pairs_basis_recovers_a_game_with_only_cross_terms() -> None:
    ni, nt = 4, 3
    truth = random_surrogate(ni + nt, cross_pairs(ni, nt), 3)
    Zi, Zt = enumerate_coalitions(ni), enumerate_coalitions(nt)
    grid = np.concatenate([np.repeat(Zi, len(Zt), 0), np.tile(Zt, (len(Zi), 1))], 1)
    V = (truth.predict(grid) - truth.intercept).reshape(len(Zi), len(Zt))
    fit = fit_product_surrogate(Zi, np.ones(len(Zi)), Zt, np.ones(len(Zt)), V, "crossmodal")
    truth.intercept = 0.0
    assert_same(fit, truth)


def test_underdetermined_pair_block_gives_the_minimum_norm_pairs() -> None:
    rng = np.random.default_rng(4)
    n, m = 8, 20  # 28 pairs > 20 coalitions: the dual solver
    Z, y, w = rng.random((m, n)) < 0.5, rng.normal(size=m), rng.random(m) + 0.5
    fit = fit_surrogate(Z, y, w, "all")
    assert fit.info["rank_deficient"] == 1
    # every WLS solution has the same fitted values; among them, the dual picks the smallest pair terms
    _, fitted = dense_wls(Z, y, w, all_pairs(n).numpy())
    np.testing.assert_allclose(fit.predict(Z).numpy(), fitted, atol=1e-9)
    F = Z[:, all_pairs(n)[:, 0]] & Z[:, all_pairs(n)[:, 1]]
    X1 = np.concatenate([np.ones((m, 1)), Z], 1).astype(float)
    # directions of the pair terms that leave all fitted values unchanged (after refitting order ≤ 1)
    proj = F - X1 @ np.linalg.lstsq(X1 * np.sqrt(w)[:, None], F * np.sqrt(w)[:, None], rcond=None)[0]
    null = np.linalg.svd(proj * np.sqrt(w)[:, None])[2][np.linalg.matrix_rank(proj) :]
    assert np.abs(null @ fit.pair_values.numpy()).max() < 1e-8


@pytest.mark.parametrize("kind", ["clique", "sub-clique", "scattered"])
def test_dual_solvers_match_the_dense_fit(kind: str) -> None:
    rng = np.random.default_rng(7)
    n, m = 9, 14
    if kind == "clique":
        pairs = all_pairs(n)
    elif kind == "sub-clique":  # all pairs among 7 of the 9 players (the top-k clique basis)
        pairs = normalise_pairs(torch.tensor([0, 2, 3, 4, 5, 7, 8])[all_pairs(7)], n)
    else:
        pairs = all_pairs(n)[torch.randperm(36, generator=torch.Generator().manual_seed(0))[:20]]
        pairs = normalise_pairs(pairs, n)
    Z, y, w = rng.random((m, n)) < 0.5, rng.normal(size=m), rng.random(m) + 0.5
    fit = fit_surrogate(Z, y, w, pairs)
    _, fitted = dense_wls(Z, y, w, pairs.numpy())
    np.testing.assert_allclose(fit.predict(Z).numpy(), fitted, atol=1e-9)
    assert fit.info["rank_deficient"] == 1


def test_shapley_kernel_first_order_fit_gives_shapley_values() -> None:
    n = 5
    rng = np.random.default_rng(0)
    values = rng.normal(size=2**n)
    Z = enumerate_coalitions(n)
    index = (Z * (1 << np.arange(n))).sum(1)
    s = sample_shapley(n, 2**n, rng, anchor_weight=1e7)
    y = values[(s.coalitions * (1 << np.arange(n))).sum(1)] - values[0]
    fit = fit_surrogate(s.coalitions, y, s.weights, "none")
    from math import factorial

    shap = np.zeros(n)
    for i in range(n):
        for r, z in zip(index, Z, strict=True):
            if not z[i]:
                k = int(z.sum())
                shap[i] += factorial(k) * factorial(n - k - 1) / factorial(n) * (values[r | 1 << i] - values[r])
    np.testing.assert_allclose(fit.main.numpy(), shap, atol=1e-5)


def test_solve_psd_falls_back_to_the_minimum_norm_solution() -> None:
    u = torch.tensor([[1.0], [2.0], [2.0]], dtype=torch.float64)
    M = u @ u.T  # rank 1
    x, bad = solve_psd(M, M @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert bad
    torch.testing.assert_close(x, u[:, 0] / 9.0)
    x, bad = solve_psd(torch.eye(3, dtype=torch.float64) * 2, torch.ones(3, dtype=torch.float64))
    assert not bad and torch.allclose(x, torch.full((3,), 0.5, dtype=torch.float64))


def test_pair_sets_are_validated_and_normalised() -> None:
    assert normalise_pairs([(3, 1), (1, 3), (0, 2)], 4).tolist() == [[0, 2], [1, 3]]
    assert normalise_pairs("none", 4).shape == (0, 2)
    assert all_pairs(4).shape == (6, 2) and cross_pairs(2, 3).tolist()[0] == [0, 2]
    for bad in ([(0, 0)], [(0, 9)], "some", [(1, 2, 3)]):
        with pytest.raises(InputError):
            normalise_pairs(bad, 4)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        fit_surrogate(np.zeros((3, 2), bool), np.zeros(4), np.ones(3))
    with pytest.raises(InputError):
        fit_product_surrogate(np.zeros((3, 2), bool), np.ones(3), np.zeros((2, 2), bool), np.ones(2), np.zeros((2, 3)))


def test_first_order_conversion_and_prediction() -> None:
    s = Surrogate(
        1.0,
        torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
        torch.tensor([[0, 2]]),
        torch.tensor([4.0], dtype=torch.float64),
    )
    torch.testing.assert_close(s.first_order(0.25), torch.tensor([2.0, 2.0, 4.0], dtype=torch.float64))
    Z = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool)
    torch.testing.assert_close(s.predict(Z), torch.tensor([9.0, 4.0], dtype=torch.float64))
    with pytest.raises(InputError):
        s.predict(torch.zeros(2, 4, dtype=torch.bool))
