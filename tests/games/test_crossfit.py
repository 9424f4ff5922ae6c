"""Cross-fitted diagnostics: weighted scores, exact recovery of 2-additive games, no extra game values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dualex.errors import InputError
from dualex.games.crossfit import crossfit_joint, crossfit_product, weighted_fit_quality
from dualex.games.exact import enumerate_coalitions
from dualex.games.regression import all_pairs
from dualex.games.sampler import sample_banzhaf
from dualex.games.surrogate import fit_quality


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), k=st.integers(3, 40))
def test_equal_weights_give_the_unweighted_scores(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    y, pred = rng.normal(size=k), rng.normal(size=k)
    a = weighted_fit_quality(y, pred, np.full(k, 3.0))
    b = fit_quality(torch.from_numpy(y), torch.from_numpy(pred))
    for key in ("r2", "mse", "pearson", "spearman"):
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12)


def test_weights_count_like_repeated_rows() -> None:
    y, pred = np.array([1.0, 2.0, 4.0, 3.0]), np.array([1.5, 1.0, 3.0, 3.5])
    a = weighted_fit_quality(y, pred, np.array([1.0, 2.0, 1.0, 3.0]))
    b = fit_quality(
        torch.tensor([1.0, 2.0, 2.0, 4.0, 3.0, 3.0, 3.0]), torch.tensor([1.5, 1.0, 1.0, 3.0, 3.5, 3.5, 3.5])
    )
    for key in ("r2", "mse", "pearson"):
        assert a[key] == pytest.approx(b[key], rel=1e-12)
    with pytest.raises(InputError):
        weighted_fit_quality(y, pred, -np.ones(4))


def _additive_grid(n_i: int, n_t: int, Zi: np.ndarray, Zt: np.ndarray, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = n_i + n_t
    P = all_pairs(n)
    E = torch.zeros(n, n, dtype=torch.float64)
    E[P[:, 0], P[:, 1]] = torch.randn(P.shape[0], generator=g, dtype=torch.float64)
    main = torch.randn(n, generator=g, dtype=torch.float64)
    Z = torch.cat(
        [torch.from_numpy(np.repeat(Zi, len(Zt), 0)), torch.from_numpy(np.tile(Zt, (len(Zi), 1)))], 1
    ).double()
    return (Z @ main + ((Z @ E) * Z).sum(1)).reshape(len(Zi), len(Zt))


def test_a_two_additive_game_is_predicted_exactly_out_of_sample() -> None:
    rng = np.random.default_rng(0)
    n_i, n_t = 6, 5
    si, st_ = sample_banzhaf(n_i, 50, 0.5, rng), sample_banzhaf(n_t, 28, 0.5, rng)  # > 22 and 16 terms per side
    V = _additive_grid(n_i, n_t, si.coalitions, st_.coalitions)
    q = crossfit_product(
        si.coalitions, si.weights, st_.coalitions, st_.weights, V, all_pairs(n_i + n_t), rng=rng, folds=4,
        image_fixed=si.n_enumerated, text_fixed=st_.n_enumerated,
    )  # fmt: skip
    assert q["r2"] == pytest.approx(1.0, abs=1e-9) and q["spearman"] == pytest.approx(1.0)
    assert q["crossfit_folds"] == 4 and 0 < q["crossfit_values"] < si.m * st_.m
    # joint samples likewise
    Z = np.concatenate([np.repeat(si.coalitions, st_.m, 0), np.tile(st_.coalitions, (si.m, 1))], 1)
    w = np.outer(si.weights, st_.weights).ravel()
    qj = crossfit_joint(Z, V.flatten(), w, all_pairs(n_i + n_t), rng=rng, folds=5)
    assert qj["r2"] == pytest.approx(1.0, abs=1e-9) and qj["crossfit_folds"] == 5


def test_enumerated_game_reports_the_exact_fit_in_sample() -> None:
    n_i, n_t = 3, 2
    Zi, Zt = enumerate_coalitions(n_i), enumerate_coalitions(n_t)
    V = _additive_grid(n_i, n_t, Zi, Zt) + torch.randn(
        8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    wi, wt = np.full(8, 1 / 8), np.full(4, 1 / 4)
    q = crossfit_product(Zi, wi, Zt, wt, V, "none", rng=np.random.default_rng(0), image_fixed=8, text_fixed=4)
    assert q["crossfit_folds"] == 0 and q["crossfit_values"] == 32 and q["r2"] < 1.0


def test_a_side_with_one_coalition_cannot_be_cross_fitted() -> None:
    rng = np.random.default_rng(0)
    si, st_ = sample_banzhaf(8, 20, 0.5, rng), sample_banzhaf(8, 1, 0.5, rng)
    V = torch.from_numpy(rng.normal(size=(si.m, st_.m)))
    q = crossfit_product(si.coalitions, si.weights, st_.coalitions, st_.weights, V, "none", rng=rng)
    assert math.isnan(q["r2"]) and q["crossfit_folds"] == 0
    with pytest.raises(InputError):
        crossfit_product(si.coalitions, si.weights, st_.coalitions, st_.weights, V, "none", rng=rng, folds=1)
