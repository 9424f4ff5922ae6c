"""The structured forward mode of ij (pooled last block) equals the dense modes and a full Jacobian.

For every adapter family (transformers CLIP, SigLIP, SigLIP-2, open_clip with causal, bidirectional
and custom-attention text towers) at layers -1, -2 and 0, fp32: ``U`` of `integrated_jacobian` in the
structured mode (where it applies), the dense forward and reverse modes, and a brute-force float64
Jacobian of the dense tail (every row of every block) agree to 1e-5 relative.
"""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.errors import InputError
from dualex.methods.ij import integrated_jacobian, structured_applies
from dualex.methods.quadrature import alphas_and_weights
from dualex.testing import (
    random_image,
    tiny_hf_clip,
    tiny_hf_siglip,
    tiny_hf_siglip2,
    tiny_openclip,
    tiny_sentence,
)

CAPTION = "a red dog runs home"
N_STEPS = 3

FACTORIES = {
    "hf-clip": lambda: tiny_hf_clip(layers=3),
    "hf-siglip": lambda: tiny_hf_siglip(layers=3),
    "hf-siglip2": lambda: tiny_hf_siglip2(layers=3),
    "openclip": lambda: tiny_openclip(layers=3),
    "openclip-bidirectional": lambda: tiny_openclip(layers=3, seed=1, no_causal_mask=True, pool_type="last"),
    "openclip-custom": lambda: tiny_openclip(
        layers=3, seed=2, qk_norm=True, scale_heads=True, scale_attn_inner=True, scale_attn=True
    ),
    "openclip-cosine": lambda: tiny_openclip(layers=3, seed=4, scaled_cosine_attn=True, scale_heads=True),
}


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def model(request):
    return FACTORIES[request.param]()


def _path(model, side, inputs, layer):
    ref = model.tower(side).reference(inputs, "default" if side == "text" else "zeros")
    with torch.no_grad():
        x = model.tower(side).hidden(inputs, layer)
        r = model.tower(side).hidden(ref, layer)
    return x, r


def brute_force_u(model, side, inputs, x, r, layer, alphas, weights):
    """``U[k, s] = Σ_n w_n Σ_i J_n[k, s, i] (x − r)[s, i]`` from full float64 Jacobians of the dense tail."""
    model.pooled_tails = False
    module = model.module.double()
    try:
        x64, r64 = x.double(), r.double()
        U = 0
        for a, w in zip(alphas.tolist(), weights.tolist(), strict=True):
            h = r64 + a * (x64 - r64)
            J = torch.autograd.functional.jacobian(lambda z: model.tower(side).tail(inputs, z, layer), h)[0, :, 0]
            U = U + w * torch.einsum("ksi,si->ks", J, (x64 - r64)[0])
    finally:
        module.float()
        model.pooled_tails = True
    return U


def _rel(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("layer", [-1, -2, 0])
@pytest.mark.parametrize("side", ["text", "image"])
def test_structured_equals_dense_and_brute_force(model, side, layer):
    pair = model.prepare(random_image(1), CAPTION)
    inputs = pair.side(side)
    L = model.tower(side).check_layer(layer)
    x, r = _path(model, side, inputs, L)
    alphas, weights = alphas_and_weights(N_STEPS, "riemann_right")
    kw = {"alphas": alphas, "weights": weights}
    auto = integrated_jacobian(model, side, inputs, x, r, L, **kw)
    fwd = integrated_jacobian(model, side, inputs, x, r, L, mode="forward", internal_batch_size=7, **kw)
    rev = integrated_jacobian(model, side, inputs, x, r, L, mode="reverse", **kw)
    bf = brute_force_u(model, side, inputs, x, r, L, alphas, weights)
    assert _rel(auto, bf) < 1e-5
    assert _rel(fwd, bf) < 1e-5
    assert _rel(rev, bf) < 1e-5
    pooled = model.family not in ("hf-siglip", "hf-siglip2") or side == "text"
    assert structured_applies(model, side, inputs, L) == (pooled and layer == -1)
    if pooled and layer == -1:
        small = integrated_jacobian(model, side, inputs, x, r, L, mode="structured", internal_batch_size=5, **kw)
        assert _rel(small, bf) < 1e-5
    model.pooled_tails = False  # today's dense path: every row of the last block
    try:
        dense = integrated_jacobian(model, side, inputs, x, r, L, mode="dense", **kw)
    finally:
        model.pooled_tails = True
    assert _rel(dense, bf) < 1e-5


def test_structured_with_masked_caption_tokens():
    """Pooled-row attention masks: removed tokens (attention mask 0) under the causal mask."""
    model = tiny_hf_clip(layers=2)
    pair = model.prepare(random_image(2), CAPTION)
    keep = torch.tensor([[True, False, True, False, True]])
    inputs = model.tower("text").mask(pair.text, keep)
    L = model.tower("text").check_layer(-1)
    x, r = _path(model, "text", inputs, L)
    alphas, weights = alphas_and_weights(N_STEPS, "gausslegendre")
    kw = {"alphas": alphas, "weights": weights}
    s = integrated_jacobian(model, "text", inputs, x, r, L, mode="structured", **kw)
    bf = brute_force_u(model, "text", inputs, x, r, L, alphas, weights)
    assert _rel(s, bf) < 1e-5


def test_explanations_agree_across_modes():
    model = tiny_hf_clip(layers=2)
    img = random_image(3)
    a = dualex.explain(model, img, CAPTION, method="ij", n_steps=4)
    b = dualex.explain(model, img, CAPTION, method="ij", n_steps=4, mode="dense")
    torch.testing.assert_close(a.cross, b.cross, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(a.cross_prefix, b.cross_prefix, atol=1e-7, rtol=1e-5)


def test_mean_pooled_tower_falls_back_to_dense():
    model = tiny_sentence()
    pair = model.prepare(["a man is eating food"], ["a dog plays"])
    assert model.tower("text").pooled_block(pair.text, 1, torch.float32) is None
    ex = dualex.explain(model, "a dog plays", "a man is eating food", method="ij", n_steps=3)
    dense = dualex.explain(model, "a dog plays", "a man is eating food", method="ij", n_steps=3, mode="dense")
    torch.testing.assert_close(ex.cross, dense.cross)


def test_structured_where_it_does_not_apply_is_a_clear_error():
    model = tiny_hf_siglip(layers=2)
    with pytest.raises(InputError, match="structured"):
        dualex.explain(model, random_image(4), CAPTION, method="ij", n_steps=2, mode="structured")
    with pytest.raises(InputError, match="mode"):
        dualex.explain(model, random_image(4), CAPTION, method="ij", n_steps=2, mode="fast")


@pytest.mark.parametrize("name", ["hf-siglip", "hf-siglip2", "hf-siglip2-padded"])
def test_structured_attention_pooling_head(name):
    """SigLIP's image head is one probe query over all rows: structured at a split at its input."""
    model = FACTORIES[name.removesuffix("-padded")]()
    inputs = model.prepare(random_image(5), CAPTION).image
    if name.endswith("padded"):  # padding patches: the head's key mask
        inputs.extra["pixel_attention_mask"][:, -3:] = 0
    L = model.tower("image").check_layer(model.tower("image").n_layers)
    assert structured_applies(model, "image", inputs, L)
    x, r = _path(model, "image", inputs, L)
    alphas, weights = alphas_and_weights(N_STEPS, "riemann_right")
    kw = {"alphas": alphas, "weights": weights}
    s = integrated_jacobian(model, "image", inputs, x, r, L, mode="structured", **kw)
    fwd = integrated_jacobian(model, "image", inputs, x, r, L, mode="forward", **kw)
    bf = brute_force_u(model, "image", inputs, x, r, L, alphas, weights)
    assert _rel(s, bf) < 1e-5
    assert _rel(fwd, bf) < 1e-5
