"""Coalition samplers: exact enumeration, distinctness, weights, seeds, the reference's budget split."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualex.errors import InputError
from dualex.games.sampler import (
    banzhaf_kernel,
    sample_banzhaf,
    sample_kernel,
    sample_shapley,
    shapley_kernel,
    split_budget,
)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), p=st.floats(0.05, 0.95))
def test_budget_of_all_coalitions_enumerates_them_with_exact_weights(n: int, p: float) -> None:
    s = sample_banzhaf(n, 2**n, p, np.random.default_rng(0))
    assert s.m == 2**n and s.n_draws == 0 and s.n_enumerated == 2**n
    assert len({r.tobytes() for r in s.coalitions}) == 2**n
    k = s.coalitions.sum(1)
    np.testing.assert_allclose(s.weights, p**k * (1 - p) ** (n - k), rtol=1e-12)


def test_sampled_coalitions_are_distinct_and_weights_sum_to_one() -> None:
    s = sample_banzhaf(12, 300, 0.5, np.random.default_rng(1))
    assert s.m == 300
    assert len({r.tobytes() for r in s.coalitions}) == 300
    assert (s.weights > 0).all()
    assert s.n_draws >= 300
    assert s.weights.sum() == pytest.approx(1.0, abs=1e-12)


def test_border_trick_mixes_enumerated_and_sampled_parts_on_one_scale() -> None:
    # p = 0.9 on 8 players: the largest sizes are enumerated, the rest sampled
    s = sample_banzhaf(8, 60, 0.9, np.random.default_rng(2))
    assert 0 < s.n_enumerated < s.m == 60
    full = s.coalitions.all(1)
    assert full.sum() == 1 and s.weights[full][0] == pytest.approx(0.9**8)
    # sampled weights carry the mass of the sampled sizes (spec §7.7), so the total is 1
    assert s.weights.sum() == pytest.approx(1.0, abs=1e-12)


def test_same_seed_same_sample_and_other_seed_differs() -> None:
    a = sample_banzhaf(30, 50, 0.3, np.random.default_rng(5))
    b = sample_banzhaf(30, 50, 0.3, np.random.default_rng(5))
    c = sample_banzhaf(30, 50, 0.3, np.random.default_rng(6))
    assert np.array_equal(a.coalitions, b.coalitions) and np.array_equal(a.weights, b.weights)
    assert not np.array_equal(a.coalitions, c.coalitions)


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_players_are_kept_with_probability_p(p: float) -> None:
    s = sample_banzhaf(40, 3000, p, np.random.default_rng(3))
    assert s.coalitions.mean() == pytest.approx(p, abs=0.01)
    assert (s.weights @ s.coalitions).mean() == pytest.approx(p, abs=0.01)


def test_many_players_do_not_overflow() -> None:
    s = sample_banzhaf(300, 20, 0.5, np.random.default_rng(0))
    assert s.m == 20 and np.isfinite(s.weights).all()
    assert banzhaf_kernel(300, 0.5)[150] > 0


def test_shapley_sampler_anchors_and_size_law() -> None:
    n = 10
    kern = shapley_kernel(n)
    k = np.arange(n + 1)
    mass = np.array([math.comb(n, i) for i in k]) * kern
    assert mass.sum() == pytest.approx(1.0) and kern[0] == kern[n] == 0
    inner = k[1:-1]
    np.testing.assert_allclose(mass[1:-1], (1 / (inner * (n - inner))) / (1 / (inner * (n - inner))).sum())
    s = sample_shapley(n, 400, np.random.default_rng(0), anchor_weight=1e6)
    assert not s.coalitions[0].any() and s.coalitions[1].all()
    assert s.weights[0] == s.weights[1] == 1e6
    sizes = s.coalitions[2:].sum(1)
    assert sizes.min() >= 1 and sizes.max() <= n - 1
    assert s.weights[2:].sum() == pytest.approx(1.0, abs=1e-12)


def test_split_budget_matches_the_reference_example() -> None:
    # spec §2.3: B = 2^19, 49 patches, 8 tokens -> m_T = 119, m_I = 4405 (524,195 values)
    assert split_budget(2**19, 49, 8) == (4405, 119)
    # roles swap when the text has more players; small sides are capped at 2^n
    assert split_budget(2**10, 4, 30) == (5, 204)
    assert split_budget(2**12, 3, 2) == (8, 4)
    assert split_budget(2**20, 196, 20) == (9986, 105)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.2, 1.5, True, "0.5"])
def test_invalid_p_is_rejected(p: object) -> None:
    with pytest.raises(InputError):
        sample_banzhaf(5, 10, p, np.random.default_rng(0))  # type: ignore[arg-type]


def test_invalid_budgets_and_kernels_are_rejected() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(InputError):
        sample_banzhaf(5, 0, 0.5, rng)
    with pytest.raises(InputError):
        split_budget(3, 4, 4)
    with pytest.raises(InputError):
        sample_kernel(3, 4, np.ones(3), rng)
    with pytest.raises(InputError):
        sample_shapley(1, 4, rng)


def test_draws_and_grid_splits():
    from dualex.games.sampler import draw_distinct, draw_iid, split_grid

    rng = np.random.default_rng(0)
    z = draw_iid(30, 4000, 0.3, rng)
    assert z.shape == (4000, 30) and z.dtype == bool and abs(z.mean() - 0.3) < 0.01
    d = draw_distinct(30, 500, p=0.7, seed=1)
    assert len({r.tobytes() for r in d}) == 500 and np.array_equal(d, draw_distinct(30, 500, p=0.7, seed=1))
    assert split_grid(1000, 49, 8, shape="square") == (32, 31)
    assert split_grid(1000, 49, 8) == (166, 6)  # the reference's shape: 6 = ceil(sqrt(1000) · 8 / 49)
    assert split_grid(1000, 8, 49) == (6, 166)
    with pytest.raises(InputError):
        split_grid(1000, 49, 8, shape="round")


def test_budget_beyond_all_coalitions_enumerates_them_at_once() -> None:
    s = sample_banzhaf(5, 10**12, 0.3, np.random.default_rng(0))  # issue 24: this used to hang
    assert s.m == 32 and s.n_draws == 0 and s.n_enumerated == 32
    sh = sample_shapley(5, 10**12, np.random.default_rng(0))
    assert sh.m == 32  # ∅ and N as anchors, then the 30 others


def test_a_sample_too_large_to_hold_is_refused_at_once() -> None:
    from dualex.games.sampler import MAX_SAMPLE

    with pytest.raises(InputError, match="4,194,304"):
        sample_banzhaf(80, 10**12, 0.5, np.random.default_rng(0))
    with pytest.raises(InputError, match="distinct"):
        sample_kernel(40, MAX_SAMPLE + 1, banzhaf_kernel(40, 0.5), np.random.default_rng(0))
