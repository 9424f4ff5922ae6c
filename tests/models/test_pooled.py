"""Pooled tails (`DualEncoder.pooled_block`): the last block for the pooled row only, same embeddings."""

from __future__ import annotations

import pytest
import torch

from dualex.testing import (
    random_image,
    tiny_hf_clip,
    tiny_hf_siglip,
    tiny_hf_siglip2,
    tiny_openclip,
    tiny_sentence,
)

FACTORIES = {
    "hf-clip": tiny_hf_clip,
    "hf-siglip": tiny_hf_siglip,
    "hf-siglip2": tiny_hf_siglip2,
    "openclip": tiny_openclip,
    "openclip-eos": lambda: tiny_openclip(pool_type="eos"),
    "openclip-bidirectional": lambda: tiny_openclip(seed=1, no_causal_mask=True, pool_type="last"),
    "openclip-custom": lambda: tiny_openclip(seed=2, qk_norm=True, scale_heads=True, scale_attn=True),
    "sentence": tiny_sentence,
}
POOLED_SIDES = {"hf-siglip": ("text",), "hf-siglip2": ("text",), "sentence": ()}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_pooled_tail_equals_dense_tail(name):
    model = FACTORIES[name]()
    if model.tower("image").modality == "text":
        pair = model.prepare(["a dog plays", "a man is eating food"], ["a cat", "the girl is carrying a baby"])
    else:  # two captions of different lengths: different pooled rows per batch row
        pair = model.prepare([random_image(1), random_image(2)], ["a red dog", "two blue cats sit on a mat"])
    for side in ("text", "image"):
        inputs = pair.side(side)
        pooled = model.tower(side).pooled_block(inputs, 2, torch.float32) is not None
        assert pooled == (side in POOLED_SIDES.get(name, ("text", "image")))
        for layer in range(model.tower(side).n_layers + 1):
            h = model.tower(side).hidden(inputs, layer)
            fast = model.tower(side).tail(inputs, h, layer)
            with model.dense_tails():
                slow = model.tower(side).tail(inputs, h, layer)
            torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert model.pooled_tails  # restored after the context


def test_dense_tails_restores_an_instance_setting():
    model = tiny_hf_clip()
    model.pooled_tails = False
    with model.dense_tails():
        assert not model.pooled_tails
    assert model.pooled_tails is False
    del model.pooled_tails
    with model.dense_tails():
        pass
    assert "pooled_tails" not in model.__dict__
