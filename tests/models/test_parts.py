"""Patch removal after the patch embedding equals masking the pixels, per adapter (tiny random models)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import dualex.testing
from dualex.errors import InputError
from dualex.models.parts import PATCH_FILL, PATCH_KEEP, masked_pixels
from dualex.models.preprocess import patch_keep_to_pixels
from dualex.testing import random_image

FACTORIES = ["tiny_hf_clip", "tiny_hf_siglip", "tiny_hf_siglip2", "tiny_openclip"]


def pixel_masked(model, inputs, keep: torch.Tensor, how: str):
    """The old way: K full pixel tensors with the removed patches painted over (written out here)."""
    one = inputs.select([0] * keep.shape[0])
    pm = patch_keep_to_pixels(keep, inputs.grid, tuple(one.pixels.shape[-2:])).to(one.pixels)
    fill = torch.zeros(3) if how == "zeros" else model.pipeline.black().flatten()
    fill = fill.to(one.pixels)[None, :, None, None].expand_as(one.pixels)
    return replace(one, pixels=one.pixels * pm + fill * (1 - pm))


@pytest.mark.parametrize("how", ["zeros", "black"])
@pytest.mark.parametrize("factory", FACTORIES)
def test_masking_after_the_patch_embedding_gives_the_same_game(factory: str, how: str) -> None:
    if factory == "tiny_openclip":
        pytest.importorskip("open_clip")
    model = getattr(dualex.testing, factory)()
    pair = model.prepare(random_image(3), "a red dog")
    P = pair.image.n_patches
    keep = torch.rand(9, P, generator=torch.Generator().manual_seed(1)) < 0.5
    keep[0] = True
    keep[1] = False
    lazy = model.tower("image").mask(pair.image, keep, how=how)
    assert lazy.batch_size == 9 and lazy.pixels.stride(0) == 0  # no per-coalition pixel tensor
    assert torch.equal(lazy.extra[PATCH_KEEP].cpu(), keep)
    eager = pixel_masked(model, pair.image, keep, how)
    torch.testing.assert_close(masked_pixels(lazy), eager.pixels, atol=1e-6, rtol=0)
    with torch.no_grad():
        e_lazy = model.tower("image").encode(lazy)
        e_eager = model.tower("image").encode(eager)
        e_txt = model.tower("text").encode(pair.text)
        v_lazy = model.similarity(e_lazy, e_txt.expand(9, -1)).score
        v_eager = model.similarity(e_eager, e_txt.expand(9, -1)).score
        full = model.tower("image").encode(pair.image)
    torch.testing.assert_close(e_lazy, e_eager, atol=1e-6, rtol=0)
    assert float((v_lazy - v_eager).abs().max()) <= 1e-6
    torch.testing.assert_close(e_lazy[0], full[0], atol=1e-6, rtol=0)  # everything kept: the plain image
    # hidden states at every layer follow the same path
    with torch.no_grad():
        h_lazy = model.tower("image").hidden(lazy, 1)
        h_eager = model.tower("image").hidden(eager, 1)
    torch.testing.assert_close(h_lazy, h_eager, atol=1e-5, rtol=0)


def test_masked_inputs_select_and_refuse_bad_coalitions() -> None:
    model = dualex.testing.tiny_hf_clip()
    pair = model.prepare(random_image(0), "a dog")
    keep = torch.rand(4, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    lazy = model.tower("image").mask(pair.image, keep)
    two = lazy.select([2, 0])  # a real copy of two rows keeps their coalitions
    assert torch.equal(two.extra[PATCH_KEEP].cpu(), keep[[2, 0]]) and two.extra[PATCH_FILL].shape == (2, 3)
    with torch.no_grad():
        image = model.tower("image")
        torch.testing.assert_close(image.encode(two), image.encode(lazy)[[2, 0]], atol=1e-6, rtol=0)
    with pytest.raises(InputError):
        model.tower("image").mask(pair.image, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(InputError):
        model.tower("image").mask(pair.image, keep, how="blur")
