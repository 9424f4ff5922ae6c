"""GAME and Grad-ECLIP: recorded attention internals, non-negativity, identity start, decompositions."""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.errors import UnsupportedModelError
from dualex.methods.baselines.attention import query_positions, record_attention, recorded_pass
from dualex.methods.baselines.grad_eclip import grad_eclip_map
from dualex.testing import random_image, tiny_hf_clip, tiny_hf_siglip, tiny_openclip

CAPTION = "a red dog on mat"


@pytest.fixture(scope="module")
def siglip():
    return tiny_hf_siglip()


@pytest.fixture(scope="module")
def openclip():
    return tiny_openclip()


@pytest.fixture(scope="module")
def biased_clip():
    """A tiny CLIP whose attention output projections have non-zero biases (they start at zero)."""
    m = tiny_hf_clip(seed=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tower in (m.module.text_model, m.module.vision_model):
            for layer in tower.encoder.layers:
                b = layer.self_attn.out_proj.bias
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return m


@pytest.mark.parametrize("name", ["tiny_clip", "siglip", "openclip"])
@pytest.mark.parametrize("method", ["game", "grad_eclip"])
def test_shapes_sign_and_determinism(request, name, method):
    model = request.getfixturevalue(name)
    a = dualex.explain(model, random_image(1), CAPTION, method=method)
    b = dualex.explain(model, random_image(1), CAPTION, method=method)
    assert a.cross is None
    assert a.text_main.shape == (len(a.tokens),) and a.image_main.shape == (a.n_patches,)
    assert torch.equal(a.text_main, b.text_main) and torch.equal(a.image_main, b.image_main)
    assert bool((a.text_main >= 0).all()) and bool((a.image_main >= 0).all())  # GAME by construction, ReLU
    assert float(a.image_main.sum()) > 0


def test_game_identity_start(tiny_clip, siglip):
    """With no block updating it, the relevance is the identity row of the pooled position."""
    ex = dualex.explain(tiny_clip, random_image(2), CAPTION, method="game", start_layer=2)
    pool = int(tiny_clip.prepare(random_image(2), CAPTION).text.pool_index[0])
    expected = torch.zeros(len(ex.tokens))
    expected[pool] = 1.0
    assert torch.equal(ex.text_main, expected)
    assert torch.equal(ex.image_main, torch.zeros(ex.n_patches)) and ex.diagnostics["image_prefix"] == 1.0
    full = dualex.explain(tiny_clip, random_image(2), CAPTION, method="game")
    assert float(full.text_main[pool]) >= 1.0  # R = I + (non-negative terms)
    last = dualex.explain(tiny_clip, random_image(2), CAPTION, method="game", start_layer=-1)
    assert float((full.image_main - last.image_main).min()) >= -1e-7  # more blocks only add relevance
    # SigLIP: the pooling head's probe has no identity share; with no block its row is the head's Ā
    ex = dualex.explain(siglip, random_image(2), CAPTION, method="game", start_layer=2)
    assert float(ex.text_main[-1]) == 1.0 and float(ex.text_main[:-1].abs().sum()) == 0.0
    assert bool((ex.image_main >= 0).all()) and float(ex.image_main.sum()) > 0


def test_probs_and_gradients_match_eager_attention():
    """Recomputed probabilities and ∂f/∂A = (∂f/∂O) Vᵀ equal eager attention's weights and autograd."""
    model = tiny_hf_clip(seed=1)
    model.module.set_attn_implementation("eager")
    pair = model.prepare(random_image(3), CAPTION)
    weights: list[torch.Tensor] = []

    def keep(module, args, kwargs, output):
        weights.append(output[1])

    handles = [
        layer.self_attn.register_forward_hook(keep, with_kwargs=True)
        for layer in model.module.text_model.encoder.layers
    ]
    try:
        run = recorded_pass(model, {"text": pair.text, "image": pair.image}, ("text",), "cosine")
    finally:
        for h in handles:
            h.remove()
    with torch.enable_grad():
        e_img = model.tower("image").encode(pair.image)
        x = model.tower("text").hidden(pair.text, 0).requires_grad_(True)
        weights.clear()
        handles = [
            layer.self_attn.register_forward_hook(keep, with_kwargs=True)
            for layer in model.module.text_model.encoder.layers
        ]
        try:
            with model.dense_tails():  # these hooks need every block's self_attn call
                e_txt = model.tower("text").tail(pair.text, x, 0)
        finally:
            for h in handles:
                h.remove()
        f = torch.nn.functional.cosine_similarity(e_txt, e_img).sum()
        grads = torch.autograd.grad(f, weights)
    for site, g_out, A, gA in zip(run.recordings["text"].blocks, run.grads["text"], weights, grads, strict=True):
        torch.testing.assert_close(site.probs(), A.float(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(site.probs_grad(g_out), gA.float(), atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("name", ["biased_clip", "siglip", "openclip"])
def test_grad_eclip_attention_decomposition(request, name):
    """With softmax spatial weights and no ReLU, the map sums to ⟨∂f/∂o, o⟩ of the pooled query's output."""
    model = request.getfixturevalue(name)
    pair = model.prepare(random_image(4), CAPTION)
    inputs = {"text": pair.text, "image": pair.image}
    run = recorded_pass(model, inputs, ("text", "image"), "cosine")
    for side in ("text", "image"):
        rec = run.recordings[side]
        qs = query_positions(model, side, inputs[side], rec)
        site, grad = (rec.pool, run.pool_grad[side]) if qs is None else (rec.blocks[-1], run.grads[side][-1])
        q = 0 if qs is None else int(qs[0][0])
        bias = _out_bias(model, side, q_is_pool=rec.pool is not None and side == "image")
        m = grad_eclip_map(site, grad, q, "attention", relu=False)
        expected = float((grad[0, q] * (site.output[0, q].detach() - bias)).sum())
        assert float(m.sum()) == pytest.approx(expected, rel=1e-4, abs=1e-7)
        rectified = grad_eclip_map(site, grad, q, "loosened", relu=True)
        assert bool((rectified >= 0).all())


def _out_bias(model, side, *, q_is_pool):
    mod = model.module
    if q_is_pool:
        return mod.vision_model.head.attention.out_proj.bias
    if hasattr(mod, "text_model"):
        tower = mod.text_model if side == "text" else mod.vision_model
        return tower.encoder.layers[-1].self_attn.out_proj.bias
    blocks = model.text_tower.transformer.resblocks if side == "text" else mod.visual.transformer.resblocks
    return blocks[-1].attn.out_proj.bias


def test_recording_removes_hooks(tiny_clip):
    pair = tiny_clip.prepare(random_image(5), CAPTION)
    with record_attention(tiny_clip, "image", pair.image) as rec:
        tiny_clip.tower("image").encode(pair.image)
    assert len(rec.blocks) == tiny_clip.tower("image").n_layers
    tiny_clip.tower("image").encode(pair.image)
    assert len(rec.blocks) == tiny_clip.tower("image").n_layers


def test_side_and_units(tiny_clip):
    img = dualex.explain(tiny_clip, random_image(6), CAPTION, method="grad_eclip", side="image")
    assert img.text_main is None and img.image_main is not None
    score = dualex.explain(tiny_clip, random_image(6), CAPTION, method="grad_eclip", side="image", units="score")
    torch.testing.assert_close(score.image_main, img.image_main * tiny_clip.logit_scale, rtol=1e-4, atol=1e-6)


def test_unsupported_models_raise():
    pytest.importorskip("timm")
    from dualex.testing import TINY_FAMILIES

    model = TINY_FAMILIES["openclip:RN50"]()  # a ResNet image tower: no self-attention blocks
    for method in ("game", "grad_eclip", "rollout"):
        with pytest.raises(UnsupportedModelError, match=r"image tower of .* has no attention layers"):
            dualex.explain(model, random_image(0), "a red dog", method=method, side="image")
