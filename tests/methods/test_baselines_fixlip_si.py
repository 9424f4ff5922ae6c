"""FIxLIP (SI): exact on 2-additive games, completeness through the anchors, shapes, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dualex
from dualex.errors import InputError
from dualex.games.game import FunctionGame
from dualex.methods.baselines.fixlip_si import faith_shap
from dualex.testing import random_image

CAPTION = "a red dog on mat"


def two_additive(n: int, seed: int) -> tuple[FunctionGame, float, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c, a = float(rng.normal()), rng.normal(size=n)
    B = np.triu(rng.normal(size=(n, n)), 1)

    def v(Z: torch.Tensor) -> np.ndarray:
        z = Z.double().numpy()
        return c + z @ a + np.einsum("ki,ij,kj->k", z, B, z)

    return FunctionGame(v, n), c, a, B


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 9), seed=st.integers(0, 10_000), sampled=st.booleans())
def test_exact_on_two_additive_games(n, seed, sampled):
    """The surrogate class contains the game, so the weighted fit returns the game's own terms."""
    game, c, a, B = two_additive(n, seed)
    params = 1 + n + n * (n - 1) // 2
    budget = min(2**n, params + 12) if sampled else 2**n
    sur, diag = faith_shap(game, budget, np.random.default_rng(seed), "all")
    assume(diag["rank_deficient"] == 0.0)  # the sampled coalitions identify every term
    assert diag["v_empty"] == pytest.approx(c)
    assert sur.intercept == pytest.approx(0.0, abs=1e-6)  # fitted to v(S) − v(∅)
    np.testing.assert_allclose(sur.main.numpy(), a, atol=1e-6)
    np.testing.assert_allclose(sur.pair_matrix().numpy(), B + B.T, atol=1e-6)
    # Shapley values of a 2-additive game: a_i + ½ Σ_j B_ij
    np.testing.assert_allclose(sur.first_order(0.5).numpy(), a + 0.5 * (B + B.T).sum(1), atol=1e-6)


def test_crossmodal_basis_needs_image_count():
    game, *_ = two_additive(4, 0)
    with pytest.raises(InputError, match="n_image"):
        faith_shap(game, 16, np.random.default_rng(0), "crossmodal")
    sur, _ = faith_shap(game, 16, np.random.default_rng(0), "crossmodal", n_image=2)
    assert sur.pairs.tolist() == [[0, 2], [0, 3], [1, 2], [1, 3]]


def test_explain_shapes_determinism_completeness(tiny_clip):
    kw = {"method": "fixlip_si", "budget": 64}
    a = dualex.explain(tiny_clip, random_image(1), CAPTION, **kw)
    b = dualex.explain(tiny_clip, random_image(1), CAPTION, **kw)
    S, P = len(a.tokens), a.n_patches
    assert a.cross.shape == (S, P) and a.text_pairs.shape == (S, S) and a.image_pairs.shape == (P, P)
    assert torch.equal(a.cross, b.cross) and torch.equal(a.image_main, b.image_main)
    assert a.params["index"] == "FSII" and a.params["units"] == "score"
    # ∅ and N carry a large weight, so the surrogate meets v(N) − v(∅) at N (soft efficiency)
    assert a.completeness()["error"] == pytest.approx(0.0, abs=1e-3 * max(1.0, abs(a.target)))
    assert a.baseline == pytest.approx(a.score - a.target, abs=1e-5)
    c = dualex.explain(tiny_clip, random_image(1), CAPTION, pairs="crossmodal", seed=1, **kw)
    assert c.text_pairs is None and c.image_pairs is None and not torch.equal(c.cross, a.cross)


def test_bad_options(tiny_clip):
    with pytest.raises(InputError, match="budget"):
        dualex.explain(tiny_clip, random_image(1), CAPTION, method="fixlip_si", budget=1)
    with pytest.raises(InputError, match="holdout"):
        dualex.explain(tiny_clip, random_image(1), CAPTION, method="fixlip_si", budget=8, holdout=2)
