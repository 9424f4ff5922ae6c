"""`dualex.methods.dual`: batched tangents in eager torch equal ``torch.func.jvp`` one tangent at a time.

Each covered operation, and the structured ij of every adapter family with a pooled block (both
engines), agree to float rounding; an uncovered operation raises `NotCoveredError` instead of dropping a
tangent, and the structured mode then falls back to ``torch.func``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional

from dualex.autodiff import math_attention
from dualex.methods.dual import NotCoveredError, jvp_batch
from dualex.methods.ij import structured_block, structured_jacobian
from dualex.methods.quadrature import alphas_and_weights
from dualex.testing import random_image, tiny_hf_clip, tiny_hf_siglip, tiny_openclip

W = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
B = torch.randn(6, generator=torch.Generator().manual_seed(1))
G = torch.randn(5, generator=torch.Generator().manual_seed(2))
M = torch.randn(5, 3, generator=torch.Generator().manual_seed(3))

MAPS = {
    "linear": lambda x: functional.linear(x, W, B),
    "linear module": lambda x: torch.nn.functional.linear(x, W) * 2.0 - 1.0,
    "layer_norm": lambda x: functional.layer_norm(x, (5,), G, B[:5], 1e-5),
    "layer_norm module": lambda x: torch.nn.LayerNorm(5)(x),
    "gelu": lambda x: functional.gelu(x),
    "gelu tanh": lambda x: functional.gelu(x, approximate="tanh"),
    "quick gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "new gelu": lambda x: 0.5 * x * (1.0 + torch.tanh(0.79788456 * (x + 0.044715 * torch.pow(x, 3.0)))),
    "normalize": lambda x: functional.normalize(x, dim=-1) * G,
    "matmul": lambda x: (x @ M).exp() + (x**2).sum(-1, keepdim=True) - x.mean((0, 2), keepdim=True).sum(),
    "rmatmul": lambda x: W @ x.transpose(-1, -2),
    "arithmetic": lambda x: (G - x) / 3.0 + x * x - (1.0 - x).tanh() + G / (x * x + 1.0) + torch.sub(x, G, alpha=2.0),
    "shapes": lambda x: x.reshape(*x.shape[:-1], 5, 1).transpose(-1, -2).flatten(-2).chunk(5, dim=-1)[1],
    "index": lambda x: x[:, 1] * 2 + x[..., 0, 0:1] + x[torch.arange(3), torch.tensor([0, 2, 1])],
    "to": lambda x: x.to(torch.float64).float() + x.unsqueeze(0).squeeze(0),
}


@pytest.mark.parametrize("name", sorted(MAPS))
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16), c=st.integers(1, 4))
def test_each_map_equals_functorch(name, seed, c):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, 5, generator=g, dtype=torch.float64).float()
    tangents = torch.randn(c, 3, 4, 5, generator=g)
    fn = MAPS[name]
    try:
        out, jv = jvp_batch(fn, (x,), (tangents,), 1)
    except NotCoveredError:
        pytest.fail(f"{name} is not covered")
    assert torch.allclose(out, fn(x), rtol=1e-6, atol=1e-6)
    for i in range(c):
        with math_attention():  # loads torch's jvp decompositions quietly
            want = torch.func.jvp(fn, (x,), (tangents[i],))[1]
        assert torch.allclose(jv[i], want, rtol=1e-5, atol=1e-5), name


def test_uncovered_operations_raise():
    x, t = torch.randn(2, 3), torch.randn(1, 2, 3)
    with pytest.raises(NotCoveredError):
        jvp_batch(lambda z: torch.softmax(z, -1), (x,), (t,), 1)
    with pytest.raises(NotCoveredError):
        jvp_batch(lambda z: z @ z.transpose(0, 1), (x,), (t,), 1)
    with pytest.raises(NotCoveredError):
        jvp_batch(lambda z: torch.cat([z, z]), (x,), (t,), 1)


FAMILIES = {
    "hf-clip": lambda: tiny_hf_clip(layers=2),
    "hf-siglip": lambda: tiny_hf_siglip(layers=2),
    "openclip-custom": lambda: tiny_openclip(
        layers=2, seed=2, qk_norm=True, scale_heads=True, scale_attn_inner=True, scale_attn=True
    ),
    "openclip-cosine": lambda: tiny_openclip(layers=2, seed=4, scaled_cosine_attn=True, scale_heads=True),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_structured_engines_agree(family):
    model = FAMILIES[family]()
    pair = model.prepare(random_image(0), "a red dog runs home")
    alphas, weights = alphas_and_weights(3)
    checked = 0
    for side in ("text", "image"):
        inputs, tower = pair.side(side), model.tower(side)
        for layer in (tower.n_layers - 1, tower.n_layers):
            block = structured_block(model, side, inputs, layer, 3, torch.float32)
            if block is None:
                continue
            ref = tower.reference(inputs, "default" if side == "text" else "zeros")
            with torch.no_grad():
                x, r = tower.hidden(inputs, layer), tower.hidden(ref, layer)
            H = r + alphas.float()[:, None, None] * (x - r)
            delta = (x - r)[0]
            active = torch.nonzero(delta.abs().sum(-1) > 0).flatten()
            kw = {"rows": 7}  # several chunks
            dual = structured_jacobian(block, H, delta, weights.float(), active, engine="dual", **kw)
            func = structured_jacobian(block, H, delta, weights.float(), active, engine="functorch", **kw)
            assert float((dual - func).abs().max() / func.abs().max()) < 1e-5
            checked += 1
    assert checked >= 2


def test_fallback_to_functorch_for_uncovered_blocks():
    model = tiny_hf_clip(layers=2)
    pair = model.prepare(random_image(0), "a red dog")
    side, tower = "image", model.tower("image")
    layer = tower.n_layers - 1
    block = structured_block(model, side, pair.image, layer, 2, torch.float32)
    assert block is not None
    odd = type(block)(
        block.keys_values,
        block.query,
        lambda hp, a: torch.softmax(block.finish(hp, a), -1),  # softmax: not covered by the dual numbers
        block.index,
        block.mask,
    )
    ref = tower.reference(pair.image, "zeros")
    with torch.no_grad():
        x, r = tower.hidden(pair.image, layer), tower.hidden(ref, layer)
    H = torch.cat([r + 0.5 * (x - r), x])
    delta, w = (x - r)[0], torch.tensor([0.5, 0.5])
    active = torch.arange(delta.shape[0])
    with pytest.raises(NotCoveredError):
        structured_jacobian(odd, H, delta, w, active, rows=64, engine="dual")
    auto = structured_jacobian(odd, H, delta, w, active, rows=64)
    func = structured_jacobian(odd, H, delta, w, active, rows=64, engine="functorch")
    assert torch.allclose(auto, func)
