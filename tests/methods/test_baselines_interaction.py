"""InteractionLIME and InteractionCAM: exact bilinear recovery, features, shapes, determinism, units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dualex
from dualex.errors import InputError
from dualex.methods.baselines.interaction_cam import position_features
from dualex.methods.baselines.interaction_lime import (
    fit_bilinear,
    interaction_modes,
    lime_kernel,
    perturbations,
    split_samples,
)
from dualex.testing import random_image, tiny_hf_siglip

CAPTION = "a red dog on mat"


@pytest.fixture(scope="module")
def siglip():
    return tiny_hf_siglip()


# ---------------------------------------------------------------------------------------------- InteractionLIME
@settings(max_examples=25, deadline=None)
@given(
    n_t=st.integers(1, 6),
    n_i=st.integers(1, 9),
    seed=st.integers(0, 10_000),
    main_effects=st.booleans(),
    width=st.sampled_from([None, 0.25, 1.0]),
)
def test_fit_recovers_exact_bilinear_game(n_t, n_i, seed, main_effects, width):
    """A game that is exactly [1, z_T]ᵀ Θ [1, z_I] (or z_Tᵀ W z_I) is recovered from a perturbation grid."""
    rng = np.random.default_rng(seed)
    shape = (n_t + 1, n_i + 1) if main_effects else (n_t, n_i)
    theta = rng.normal(size=shape)
    m_t, m_i = split_samples(256, n_t, n_i)
    z_t, z_i = perturbations(n_t, m_t, 0.5, rng), perturbations(n_i, m_i, 0.5, rng)
    xt = np.hstack([np.ones((len(z_t), 1)), z_t]) if main_effects else z_t.astype(float)
    xi = np.hstack([np.ones((len(z_i), 1)), z_i]) if main_effects else z_i.astype(float)
    assume(np.linalg.matrix_rank(xt) == xt.shape[1] and np.linalg.matrix_rank(xi) == xi.shape[1])  # identifiable
    y = xt @ theta @ xi.T
    fit = fit_bilinear(z_t, z_i, y, lime_kernel(z_t, width), lime_kernel(z_i, width), main_effects=main_effects)
    np.testing.assert_allclose(fit, theta, atol=1e-8 * max(1.0, np.abs(theta).max()) * 100)


def test_fit_ridge_shrinks_and_rejects_negative():
    rng = np.random.default_rng(0)
    z_t, z_i = perturbations(6, 20, 0.5, rng), perturbations(7, 30, 0.5, rng)
    y = rng.normal(size=(20, 30))
    w_t, w_i = np.ones(20), np.ones(30)
    free = fit_bilinear(z_t, z_i, y, w_t, w_i)
    ridge = fit_bilinear(z_t, z_i, y, w_t, w_i, alpha=100.0)
    assert np.linalg.norm(ridge) < np.linalg.norm(free)
    with pytest.raises(InputError, match="alpha"):
        fit_bilinear(z_t, z_i, y, w_t, w_i, alpha=-1.0)


def test_perturbations_and_kernel():
    rng = np.random.default_rng(1)
    z = perturbations(3, 8, 0.5, rng)
    assert z.shape == (8, 3) and bool(z[0].all()) and len({tuple(r) for r in z}) == 8  # all 2^3, full first
    z = perturbations(20, 50, 0.5, rng)
    assert z.shape == (50, 20) and bool(z[0].all()) and len({tuple(r) for r in z}) == 50
    w = lime_kernel(np.array([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool), 0.25)
    assert w[0] == 1.0 and w[0] > w[1] > w[2] > 0


def test_lime_shapes_determinism_and_specials(tiny_clip):
    kw = {"method": "interaction_lime", "budget": 256}
    a = dualex.explain(tiny_clip, random_image(1), CAPTION, **kw)
    b = dualex.explain(tiny_clip, random_image(1), CAPTION, **kw)
    c = dualex.explain(tiny_clip, random_image(1), CAPTION, seed=1, **kw)
    S, P = len(a.tokens), a.n_patches
    assert a.cross.shape == (S, P) and a.text_main.shape == (S,) and a.image_main.shape == (P,)
    assert torch.equal(a.cross, b.cross) and not torch.equal(a.cross, c.cross)
    assert float(a.cross[a.special].abs().sum()) == 0.0 and float(a.text_main[a.special].abs().sum()) == 0.0
    assert a.target == pytest.approx(a.cosine, abs=1e-6) and 0.0 < a.diagnostics["r2"] <= 1.0
    assert a.image_map("dog").shape == a.grid
    pure = dualex.explain(tiny_clip, random_image(1), CAPTION, main_effects=False, **kw)
    assert pure.intercept == 0.0 and float(pure.image_main.abs().sum()) == 0.0


def test_interaction_modes(tiny_clip):
    ex = dualex.explain(tiny_clip, random_image(2), CAPTION, method="interaction_lime", budget=256)
    modes = interaction_modes(ex, k=20)
    sig = [m[0] for m in modes]
    assert sig == sorted(sig, reverse=True) and sig[0] == pytest.approx(ex.diagnostics["sigma_1"], rel=1e-5)
    rebuilt = sum(s * torch.outer(u, v.flatten()) for s, u, v in modes)
    torch.testing.assert_close(rebuilt, ex.cross, atol=1e-5, rtol=1e-4)
    assert all(float(v.sum()) >= 0 for _, _, v in modes)


def test_lime_bad_options(tiny_clip):
    img = random_image(1)
    with pytest.raises(InputError, match="keep probability"):
        dualex.explain(tiny_clip, img, CAPTION, method="interaction_lime", p=1.0)
    with pytest.raises(InputError, match="kernel_width"):
        dualex.explain(tiny_clip, img, CAPTION, method="interaction_lime", kernel_width=0.0)


# ---------------------------------------------------------------------------------------------- InteractionCAM
def test_position_features_at_the_pooled_position(tiny_clip, siglip):
    """The head applied to the pooled position's state alone gives the embedding itself."""
    pair = tiny_clip.prepare(random_image(3), CAPTION)
    u, e_t = position_features(tiny_clip, "text", pair.text, chunk=3)
    z, e_i = position_features(tiny_clip, "image", pair.image)
    torch.testing.assert_close(u[int(pair.text.pool_index[0])], e_t)
    torch.testing.assert_close(z[0], e_i)  # CLS
    torch.testing.assert_close(e_t, tiny_clip.tower("text").encode(pair.text)[0])
    pair = siglip.prepare(random_image(3), CAPTION)
    u, e_t = position_features(siglip, "text", pair.text)
    torch.testing.assert_close(u[-1], e_t)


@pytest.mark.parametrize("pairwise", [True, False])
def test_cam_shapes_determinism_and_units(tiny_clip, siglip, pairwise):
    kw = {"method": "interaction_cam", "pairwise": pairwise}
    a = dualex.explain(tiny_clip, random_image(4), CAPTION, **kw)
    b = dualex.explain(tiny_clip, random_image(4), CAPTION, **kw)
    s = dualex.explain(tiny_clip, random_image(4), CAPTION, units="score", **kw)
    scale = tiny_clip.logit_scale
    if pairwise:
        assert a.cross.shape == (len(a.tokens), a.n_patches) and a.cross_prefix.shape == (len(a.tokens), 1)
        assert torch.equal(a.cross, b.cross)
        torch.testing.assert_close(s.cross, a.cross * scale, rtol=1e-4, atol=1e-6)  # linear in f
        assert a.text_main is None
    else:
        assert a.cross is None and a.text_main.shape == (len(a.tokens),) and a.image_main.shape == (a.n_patches,)
        assert torch.equal(a.image_main, b.image_main)
        torch.testing.assert_close(s.image_main, a.image_main * scale, rtol=1e-4, atol=1e-6)
    sig = dualex.explain(siglip, random_image(4), CAPTION, **kw)
    assert (sig.cross if pairwise else sig.image_main) is not None and sig.cross_prefix is None
