"""The FIxLIP approximator over plain games: exact at full budget, FSII, identification warnings, options."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dualex.errors import InputError
from dualex.games.approximator import RegressionApproximator
from dualex.games.exact import enumerate_coalitions, exact_fixlip, game_values
from dualex.games.game import FunctionGame
from dualex.games.regression import fit_surrogate
from dualex.games.sampler import sample_shapley


def _game(n: int = 6, seed: int = 0) -> FunctionGame:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g, dtype=torch.float64)
    W = torch.randn(n, n, generator=g, dtype=torch.float64)

    def fn(Z: torch.Tensor) -> torch.Tensor:
        z = Z.double()
        return torch.tanh(z @ w + ((z @ W) * z).sum(1) / n) + (z.sum(1) / n) ** 3

    return FunctionGame(fn, n)


class GridGame:
    """A `FunctionGame` with sides: ``grid`` evaluates all image × text combinations."""

    def __init__(self, base: FunctionGame, n_image: int) -> None:
        self.base, self.n_players, self.n_image = base, base.n_players, n_image

    def __call__(self, Z: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.base(Z)

    def grid(self, Zi: np.ndarray, Zt: np.ndarray) -> torch.Tensor:
        Z = np.concatenate([np.repeat(Zi, len(Zt), 0), np.tile(Zt, (len(Zi), 1))], 1)
        return self.base(Z).reshape(len(Zi), len(Zt))


@pytest.mark.parametrize("estimator", ["agnostic", "crossmodal"])
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_a_budget_beyond_all_coalitions_is_exact_fixlip(estimator: str, p: float) -> None:
    game = GridGame(_game(6), 4)
    truth = exact_fixlip(game_values(game, 6), p)
    index = "FBII" if p == 0.5 else "FWBII"
    res = RegressionApproximator(index, p=p, estimator=estimator, n_boot=0).approximate(10**12, game)
    assert res.diagnostics["exact"] == 1.0 and res.diagnostics["underdetermined"] == 0.0
    assert res.surrogate.intercept == pytest.approx(truth.intercept, abs=1e-12)
    torch.testing.assert_close(res.surrogate.main, truth.main, atol=1e-12, rtol=0)
    torch.testing.assert_close(res.surrogate.pair_matrix(), truth.pair_matrix(), atol=1e-12, rtol=0)
    assert res.diagnostics["crossfit_folds"] == 0  # nothing random: in-sample quality of the exact fit
    assert res.index == index and res.p == p


def test_fsii_is_the_shapley_kernel_fit_and_first_order_is_order_one() -> None:
    game = _game(7)
    res = RegressionApproximator("FSII", n_boot=0, holdout=0).approximate(60, game, seed=np.random.default_rng(3))
    s = sample_shapley(7, 60, np.random.default_rng(3))
    y = game(s.coalitions)
    ref = fit_surrogate(s.coalitions, y - y[0], s.weights)
    torch.testing.assert_close(res.surrogate.pair_values, ref.pair_values, atol=1e-12, rtol=0)
    first = RegressionApproximator("FBII", 1, estimator="agnostic", n_boot=0).approximate(64, game)
    assert first.surrogate.pairs.numel() == 0 and first.surrogate.main.shape == (7,)


def test_underdetermined_budget_warns_with_the_budget_that_suffices() -> None:
    game = GridGame(_game(14), 10)  # 10 image players (11 order-≤1 terms), 4 text players
    approx = RegressionApproximator("FBII", n_boot=4)
    with pytest.warns(UserWarning, match=r"budget 32: .*budget \d+ would suffice") as rec:
        res = approx.approximate(32, game)
    assert res.diagnostics["underdetermined"] == 1.0
    need = int(res.diagnostics["budget_needed"])
    assert str(need) in str(rec[0].message) and need > 32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = approx.approximate(need, game)
        assert approx.budget_needed(need - 1, 10, 4) == need  # the smallest one
    assert ok.diagnostics["underdetermined"] == 0.0 and ok.diagnostics["budget_needed"] == need
    assert ok.stderr is not None and bool(torch.isfinite(ok.stderr.main).all())
    with warnings.catch_warnings():  # without errors there is nothing to warn about, the flag stays
        warnings.simplefilter("error")
        quiet = RegressionApproximator("FBII", n_boot=0).approximate(32, game)
    assert quiet.diagnostics["underdetermined"] == 1.0


def test_crossfit_uses_no_extra_game_values_and_holdout_does() -> None:
    calls: list[int] = []
    base = _game(12)

    def counted(Z: torch.Tensor) -> torch.Tensor:
        calls.append(int(Z.shape[0]))
        return base.fn(Z)

    game = GridGame(FunctionGame(counted, 12), 8)
    cf = RegressionApproximator("FBII", n_boot=0).approximate(400, game, seed=1)
    n_fit = sum(calls)
    calls.clear()
    RegressionApproximator("FBII", n_boot=0, holdout=0).approximate(400, game, seed=1)
    assert sum(calls) == n_fit  # cross-fitting evaluates nothing beyond the fit's values
    calls.clear()
    ho = RegressionApproximator("FBII", n_boot=0, holdout=256).approximate(400, game, seed=1)
    assert sum(calls) > n_fit and ho.diagnostics["holdout_values"] > 0
    for d in (cf.diagnostics, ho.diagnostics):
        assert {"r2", "spearman", "pearson", "mse"} <= set(d)
    assert cf.diagnostics["crossfit_values"] > 0 and cf.diagnostics["crossfit_folds"] >= 2


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("XYZ",), {}),
        (("FBII",), {"p": 0.3}),
        (("FSII",), {"estimator": "crossmodal"}),
        (("FWBII",), {"p": 1.0}),
        (("FBII", 3), {}),
        (("FBII",), {"n_boot": 1}),
        (("FBII",), {"holdout": 2}),
        (("FBII",), {"folds": 1}),
        (("FBII",), {"pairs": "some"}),
    ],
)
def test_bad_options_are_refused(args: tuple, kwargs: dict) -> None:
    with pytest.raises(InputError):
        RegressionApproximator(*args, **kwargs)


def test_impossible_budget_is_refused_before_any_game_value() -> None:
    def boom(Z: torch.Tensor) -> torch.Tensor:
        raise AssertionError("no game value should be computed")

    game = GridGame(FunctionGame(boom, 100), 80)
    with pytest.raises(InputError, match="image coalitions"):
        RegressionApproximator("FBII").approximate(10**14, game)
    with pytest.raises(InputError, match="joint coalitions"):
        RegressionApproximator("FBII", estimator="agnostic").approximate(10**12, game)
    assert enumerate_coalitions(2).shape == (4, 2)
