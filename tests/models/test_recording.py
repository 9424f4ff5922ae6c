"""Recorded attention (`Tower.record_attention`) on every kind of attention layer, and pooled queries.

Laws checked per recorded site: the probabilities are row-stochastic, and the recorded output is the
heads' outputs ``merge(A V)`` through the output weight plus a bias that is the same at every position.
Rollout relevance adds up to 1 per side when the pooling weights do (one pooled position, average or
mean pooling).
"""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.models.attention import merge_heads
from dualex.testing import random_image, tiny_hf_clip, tiny_openclip, tiny_sentence

FAMILIES = {
    "hf-clip": tiny_hf_clip,
    "openclip": tiny_openclip,
    "openclip-avg": lambda: tiny_openclip(seed=3, vision_cfg={"pool_type": "avg"}),
    "openclip-qknorm": lambda: tiny_openclip(
        seed=2, qk_norm=True, scale_heads=True, vision_cfg={"qk_norm": True, "scale_heads": True}
    ),
    "openclip-cosine": lambda: tiny_openclip(
        seed=4, scaled_cosine_attn=True, scale_attn_inner=True, vision_cfg={"scaled_cosine_attn": True}
    ),
    "sentence": tiny_sentence,
    "sentence-cls": lambda: tiny_sentence(seed=1, pooling="cls"),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    model = FAMILIES[request.param]()
    second = "the girl is carrying a baby" if model.tower("image").modality == "text" else random_image(3)
    return request.param, model, model.prepare(second, "a red dog plays")


@pytest.mark.parametrize("side", ["text", "image"])
def test_recorded_sites_reproduce_each_layer(family, side):
    _, model, pair = family
    tower, inputs = model.tower(side), pair.side(side)
    with torch.no_grad(), tower.record_attention(inputs) as rec:
        tower.encode(inputs)
    assert len(rec.blocks) == tower.n_layers
    for site in rec.blocks:
        P = site.probs()
        torch.testing.assert_close(P.sum(-1), torch.ones_like(P.sum(-1)))
        heads = merge_heads(torch.matmul(P, site.values()))  # (R, T, H·d)
        bias = site.output.float() - heads @ site.out_weight.float().T
        torch.testing.assert_close(bias, bias[:, :1].expand_as(bias), atol=2e-5, rtol=1e-4)


def test_pooled_queries_are_the_pooling(family):
    name, model, pair = family
    for side in ("text", "image"):
        tower, inputs = model.tower(side), pair.side(side)
        pos, w = tower.pooled_queries(inputs)
        with torch.no_grad():
            h = tower.hidden(inputs, tower.n_layers)
        assert pos.shape == w.shape and int(pos.max()) < h.shape[1]
        if name == "openclip-avg" and side == "image":
            torch.testing.assert_close(pos, inputs.players(0))
            assert float(w.sum()) == pytest.approx(1.0)
        if name == "sentence":  # mean pooling over the attended tokens
            assert pos.tolist() == torch.nonzero(inputs.mask[0]).flatten().tolist()


@pytest.mark.parametrize("method", ["rollout", "game", "grad_eclip"])
def test_attention_methods_run_on_every_recorded_tower(family, method):
    model = family[1]
    second = "the girl is carrying a baby" if model.tower("image").modality == "text" else random_image(3)
    options = {"relu": False} if method == "grad_eclip" else {}  # rectified maps of random weights can be all 0
    ex = dualex.explain(model, second, "a red dog plays", method=method, **options)
    for values in (ex.text_main, ex.image_main):
        assert torch.isfinite(values).all()
        assert float(values.abs().sum()) > 0
    if method == "rollout":  # relevance of the pooled rows of row-stochastic products: sums to 1 per side
        assert float(ex.text_main.sum()) == pytest.approx(1.0, abs=1e-4)
        image_total = float(ex.image_main.sum()) + ex.diagnostics.get("image_prefix", 0.0)
        assert image_total == pytest.approx(1.0, abs=1e-4)


def test_max_pooling_has_no_pooled_queries():
    model = tiny_sentence(pooling="max")
    pair = model.prepare("a dog plays", "a red cat")
    with pytest.raises(dualex.errors.UnsupportedModelError, match="weighted sum of positions"):
        model.tower("text").pooled_queries(pair.text)
