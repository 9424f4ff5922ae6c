"""p-faithfulness, completeness and the surrogate reading of explanations, on known games."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_toy import ToyEncoder, additive, caption

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.games.game import DualEncoderGame
from dualex.games.sampler import draw_distinct
from dualex.games.surrogate import fit_quality
from dualex.games.surrogate import surrogate_of as surrogate
from dualex.metrics import completeness_error, held_out_coalitions, p_faithfulness


def sample_coalitions(n: int, m: int, *, p: float = 0.5, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(draw_distinct(n, m, p=p, seed=seed))


def random_game(seed: int, *, n_text: int = 3, grid=(2, 2), intercept: float = 1.5) -> ToyEncoder:
    g = torch.Generator().manual_seed(seed)
    n = n_text + grid[0] * grid[1]
    p = torch.triu(torch.randn(n, n, generator=g), 1)
    return ToyEncoder(torch.randn(n, generator=g), p + p.T, n_text=n_text, grid=grid, intercept=intercept)


def test_sample_coalitions_distinct_seeded_and_biased():
    a = sample_coalitions(20, 500, p=0.7, seed=3)
    assert a.shape == (500, 20) and a.dtype == torch.bool
    assert torch.unique(a, dim=0).shape[0] == 500
    assert torch.equal(a, sample_coalitions(20, 500, p=0.7, seed=3))
    assert not torch.equal(a, sample_coalitions(20, 500, p=0.7, seed=4))
    assert float(a.float().mean()) == pytest.approx(0.7, abs=0.03)
    small = sample_coalitions(3, 100, p=0.5, seed=0)  # only 8 distinct coalitions exist
    assert small.shape == (8, 3)
    with pytest.raises(InputError):
        sample_coalitions(5, 10, p=1.0)


def test_exact_explanation_is_perfectly_faithful():
    model = random_game(0)
    pair = model.prepare(None, caption(3))
    ex = model.explanation(pair)  # the game's own terms, intercept 0 (y subtracts v(∅))
    f = p_faithfulness(model, pair, ex, n_coalitions=100, seed=1)
    assert f.n_coalitions == 100
    assert f.spearman == pytest.approx(1.0) and f.r2 == pytest.approx(1.0) and f.pearson == pytest.approx(1.0)
    assert torch.allclose(f.y, f.y_hat)


def test_scaled_and_shifted_explanations():
    model = random_game(1)
    pair = model.prepare(None, caption(3))
    ex2 = model.explanation(pair, main=2 * model.main, pairs=2 * model.pairs, intercept=0.3)
    f = p_faithfulness(model, pair, ex2, n_coalitions=100, seed=1, p=0.3)
    assert f.spearman == pytest.approx(1.0)  # rank correlation ignores scale and offset
    y = f.y.double()
    expected_r2 = 1 - float(((y - (2 * y + 0.3)) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    assert f.r2 == pytest.approx(expected_r2)


def test_product_design_is_a_grid_of_mu_p_draws():
    Z, shape = held_out_coalitions(40, 8, 1000, p=0.3, seed=5, design="product")
    m_i, m_t = shape
    assert (m_i, m_t) == (32, 31) and Z.shape == (m_i * m_t, 48)
    cells = Z.reshape(m_i, m_t, 48)
    assert bool((cells[:, :, :40] == cells[:, :1, :40]).all())  # image part constant along a row
    assert bool((cells[:, :, 40:] == cells[:1, :, 40:]).all())  # text part constant along a column
    assert float(Z.float().mean()) == pytest.approx(0.3, abs=0.03)
    again, _ = held_out_coalitions(40, 8, 1000, p=0.3, seed=5, design="product")
    assert torch.equal(Z, again)
    with pytest.raises(InputError):
        held_out_coalitions(40, 8, 1000, design="grid")


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_product_design_scores_exact_and_imperfect_explanations(p: float):
    model = random_game(7)
    pair = model.prepare(None, caption(3))
    game = DualEncoderGame(model, pair)
    f = p_faithfulness(model, pair, model.explanation(pair), n_coalitions=100, p=p, design="product", game=game)
    assert f.n_coalitions == 100  # 10 image x 10 text coalitions
    assert f.spearman == pytest.approx(1.0) and f.r2 == pytest.approx(1.0)
    passes = game.n_passes
    assert passes <= 10 + 10 + 2  # one tower pass per side coalition, not one per pair
    first = model.explanation(pair, pairs=torch.zeros_like(model.pairs))
    g = p_faithfulness(model, pair, first, n_coalitions=100, p=p, design="product", game=game)
    assert g.r2 < 0.99 and game.n_passes == passes  # the same coalitions: all from the cache
    assert torch.equal(f.y, g.y)


def test_first_order_explanation_of_interacting_game_is_imperfect():
    model = random_game(2)
    pair = model.prepare(None, caption(3))
    first = model.explanation(pair, pairs=torch.zeros_like(model.pairs))
    f = p_faithfulness(model, pair, first, n_coalitions=200)
    assert f.r2 < 0.99
    exact = additive(model.main.tolist(), n_text=3, grid=(2, 2))  # the same explanation on an additive game
    assert p_faithfulness(exact, pair, first, n_coalitions=200).r2 == pytest.approx(1.0)


def test_fit_quality_known_values():
    q = fit_quality(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 4.0, 9.0, 16.0]))
    rho, r2, r = q["spearman"], q["r2"], q["pearson"]
    assert rho == pytest.approx(1.0) and r < 1.0
    assert r2 == pytest.approx(1 - (0 + 4 + 36 + 144) / 5.0)
    assert q["mse"] == pytest.approx((0 + 4 + 36 + 144) / 4.0)
    rho = fit_quality(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 3.0]))["spearman"]
    assert math.isnan(rho)
    with pytest.raises(InputError):
        fit_quality(torch.tensor([1.0]), torch.tensor([1.0]))


def test_surrogate_folds_special_positions():
    # BOS row of cross acts as an image main effect; cross_prefix acts as a text main effect
    cross = torch.zeros(3, 2)
    cross[0] = torch.tensor([1.0, 2.0])  # BOS x patches
    cross[1] = torch.tensor([0.5, -0.5])
    ex = Explanation(
        cross=cross, tokens=["<bos>", "dog", "<eos>"], special=torch.tensor([True, False, True]), text="dog",
        grid=(1, 2), score=0.0, cosine=0.0, method="hand", cross_prefix=torch.tensor([[0.0], [3.0], [4.0]]),
        intercept=0.25,
    )  # fmt: skip
    s = surrogate(ex)
    assert s.n == 3 and s.n_text == 1 and s.order == 2
    assert s.main.tolist() == pytest.approx([1.0, 2.0, 3.0])  # patches first, then the caption player
    assert s.intercept == pytest.approx(0.25 + 4.0)
    full = torch.ones(1, 3, dtype=torch.bool)
    assert float(s.predict(full)[0]) == pytest.approx(ex.total())  # all present: the explanation's total


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_surrogate_of_exact_explanation_reproduces_game(seed):
    model = random_game(seed, n_text=2, grid=(1, 3))
    pair = model.prepare(None, caption(2))
    sur = surrogate(model.explanation(pair))
    game = DualEncoderGame(model, pair)
    keep = sample_coalitions(5, 20, seed=seed)
    assert torch.allclose(sur.predict(keep) + model.intercept, game(keep))


def test_mismatched_explanation_is_refused():
    model = random_game(0)
    other = random_game(0, n_text=2, grid=(2, 2))
    ex = other.explanation(other.prepare(None, caption(2)))
    with pytest.raises(InputError, match="same pair"):
        p_faithfulness(model, model.prepare(None, caption(3)), ex, n_coalitions=10)


def test_completeness_known_error():
    ex = Explanation(
        cross=torch.tensor([[0.5, 0.25], [0.25, 0.0]]), tokens=["a", "b"], special=torch.tensor([False, False]),
        text="a b", grid=(1, 2), score=2.0, cosine=0.2, method="hand", target=1.25,
    )  # fmt: skip
    c = completeness_error(ex)
    assert c.attributed == pytest.approx(1.0)
    assert c.error == pytest.approx(-0.25) and c.relative_error == pytest.approx(0.2)
    ex.target = None
    assert math.isnan(completeness_error(ex).error)


def test_game_cache_spares_repeated_queries():
    model = random_game(5)
    pair = model.prepare(None, caption(3))
    game = DualEncoderGame(model, pair, internal_batch_size=16)
    ex = model.explanation(pair)
    a = p_faithfulness(model, pair, ex, n_coalitions=40, seed=2, game=game)
    calls = game.calls
    assert calls == 3  # 41 distinct coalitions in passes of 16
    b = p_faithfulness(model, pair, model.explanation(pair, main=-model.main), n_coalitions=40, seed=2, game=game)
    assert game.calls == calls and torch.equal(a.y, b.y)  # same coalitions: all values from the cache
    fresh = DualEncoderGame(model, pair, cache=False)
    keep = sample_coalitions(7, 10, seed=0)
    assert torch.equal(fresh(keep), game(keep)) and fresh.calls == 1


def test_cosine_and_score_unit_explanations_are_scored_alike(tiny_clip):
    """ij's faithfulness must not depend on the unit it reports in: predictions go into the game's units."""
    from dualex.methods import explain_pair
    from dualex.testing import random_image

    pair = tiny_clip.prepare(random_image(5), "a red dog on the mat")
    cos = explain_pair(tiny_clip, pair, "ij", n_steps=2, units="cosine")[0]
    score = explain_pair(tiny_clip, pair, "ij", n_steps=2, units="score")[0]
    kw = {"p": 0.5, "n_coalitions": 64, "seed": 1}
    a, b = p_faithfulness(tiny_clip, pair, cos, **kw), p_faithfulness(tiny_clip, pair, score, **kw)
    assert a.units == b.units == "score"
    assert a.scale == pytest.approx(float(tiny_clip.logit_scale)) and b.scale == 1.0
    assert a.r2 == pytest.approx(b.r2, rel=1e-4, abs=1e-6)
    assert a.spearman == pytest.approx(b.spearman, abs=1e-9)
    assert torch.allclose(a.y_hat, b.y_hat, rtol=1e-4, atol=1e-6)
