"""Exact weighted Banzhaf indices, exact FIxLIP-p, convergence of the estimators, and shapiq's FBII."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dualex.errors import InputError
from dualex.games.exact import (
    enumerate_coalitions,
    exact_fixlip,
    game_values,
    weighted_banzhaf_interactions,
    weighted_banzhaf_values,
)
from dualex.games.regression import all_pairs, fit_product_surrogate, fit_surrogate
from dualex.games.sampler import sample_banzhaf, split_budget


def bits(Z: np.ndarray) -> np.ndarray:
    return (Z.astype(np.int64) << np.arange(Z.shape[1])).sum(1)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 6), p=st.floats(0.1, 0.9), seed=st.integers(0, 10_000))
def test_fixlip_pairs_are_weighted_banzhaf_interactions_and_convert_to_values(n: int, p: float, seed: int) -> None:
    v = np.random.default_rng(seed).normal(size=2**n)
    fit = exact_fixlip(v, p)
    np.testing.assert_allclose(fit.pair_matrix().numpy(), weighted_banzhaf_interactions(v, p), atol=1e-10)
    phi = weighted_banzhaf_values(v, p)
    np.testing.assert_allclose(fit.first_order(p).numpy(), phi, atol=1e-10)  # Theorem 1
    # a first-order fit gives the values themselves
    np.testing.assert_allclose(exact_fixlip(v, p, "none").main.numpy(), phi, atol=1e-10)
    # restricted bases stay exact on the pairs they keep (spec §1.5 fact 3)
    keep = all_pairs(n)[::2]
    sub = exact_fixlip(v, p, keep)
    inter = weighted_banzhaf_interactions(v, p)
    np.testing.assert_allclose(sub.pair_values.numpy(), inter[keep[:, 0], keep[:, 1]], atol=1e-10)
    np.testing.assert_allclose(sub.first_order(p).numpy(), phi, atol=1e-10)


def test_indices_of_a_2_additive_game_are_its_coefficients() -> None:
    n, p = 4, 0.3
    Z = enumerate_coalitions(n).astype(float)
    pairs = all_pairs(n).numpy()
    e1 = np.array([1.0, -2.0, 0.5, 3.0])
    e2 = np.arange(1, 7, dtype=float)
    v = 5 + Z @ e1 + (Z[:, pairs[:, 0]] * Z[:, pairs[:, 1]]) @ e2
    inter = weighted_banzhaf_interactions(v, p)
    np.testing.assert_allclose(inter[pairs[:, 0], pairs[:, 1]], e2, atol=1e-12)
    M = np.zeros((n, n))
    M[pairs[:, 0], pairs[:, 1]] = e2
    np.testing.assert_allclose(weighted_banzhaf_values(v, p), e1 + p * (M + M.T).sum(1), atol=1e-12)
    fit = exact_fixlip(v, p)
    assert fit.intercept == pytest.approx(0.0, abs=1e-12)  # v − v(∅) has no constant


def test_enumeration_order_and_limits() -> None:
    Z = enumerate_coalitions(3)
    assert Z.shape == (8, 3) and Z[5].tolist() == [True, False, True]
    assert game_values(lambda c: c.sum(1), 3).tolist() == Z.sum(1).tolist()
    with pytest.raises(InputError):
        enumerate_coalitions(40)
    with pytest.raises(InputError):
        weighted_banzhaf_values(np.zeros(6))


def _estimate_agnostic(v: np.ndarray, n: int, p: float, budget: int, seed: int) -> np.ndarray:
    s = sample_banzhaf(n, budget, p, np.random.default_rng(seed))
    fit = fit_surrogate(s.coalitions, v[bits(s.coalitions)] - v[0], s.weights, "all")
    return np.concatenate([fit.main.numpy(), fit.pair_values.numpy()])


def _estimate_crossmodal(v: np.ndarray, ni: int, nt: int, p: float, budget: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mi, mt = split_budget(budget, ni, nt)
    si, st_ = sample_banzhaf(ni, mi, p, rng), sample_banzhaf(nt, mt, p, rng)
    idx = bits(si.coalitions)[:, None] + (bits(st_.coalitions) << ni)[None, :]
    fit = fit_product_surrogate(si.coalitions, si.weights, st_.coalitions, st_.weights, v[idx] - v[0], "all")
    return np.concatenate([fit.main.numpy(), fit.pair_values.numpy()])


def test_estimates_converge_to_the_exact_interactions_as_the_budget_grows() -> None:
    n, ni, p = 8, 5, 0.4
    rng = np.random.default_rng(0)
    Z = enumerate_coalitions(n).astype(float)
    # a smooth non-additive game (a squashed linear score), like a similarity under masking
    v = np.tanh(Z @ rng.normal(size=n) / 2 + 0.3 * (Z[:, 0] * Z[:, 5] * Z[:, 6]))
    ex = exact_fixlip(v, p)
    truth = np.concatenate([ex.main.numpy(), ex.pair_values.numpy()])
    estimators = (
        lambda b, s: _estimate_agnostic(v, n, p, b, s),
        lambda b, s: _estimate_crossmodal(v, ni, n - ni, p, b, s),
    )
    for est in estimators:
        errs = [np.mean([np.abs(est(b, s) - truth).max() for s in range(6)]) for b in (60, 120)]
        assert errs[1] < errs[0]
        np.testing.assert_allclose(est(2**n, 0), truth, atol=1e-10)  # full budget: exact


@pytest.mark.optional
def test_matches_shapiq_exact_fbii_at_p_one_half() -> None:
    shapiq = pytest.importorskip("shapiq")
    n = 5
    v = np.random.default_rng(3).normal(size=2**n)

    def game(C: np.ndarray) -> np.ndarray:
        return v[bits(np.asarray(C, dtype=bool))]

    iv = shapiq.ExactComputer(game, n_players=n)("FBII", order=2)
    ours = exact_fixlip(v, 0.5)
    for i in range(n):
        assert ours.main[i].item() == pytest.approx(iv[(i,)], abs=1e-10)
    for (i, j), val in zip(ours.pairs.tolist(), ours.pair_values.tolist(), strict=True):
        assert val == pytest.approx(iv[(i, j)], abs=1e-10)
    # shapiq fits v itself, FIxLIP fits v − v(∅)
    assert ours.intercept + v[0] == pytest.approx(iv[()], abs=1e-10)


def test_exact_fixlip_accepts_tensors() -> None:
    v = torch.arange(8, dtype=torch.float64)
    assert exact_fixlip(v, 0.5).main.tolist() == pytest.approx([1.0, 2.0, 4.0])
