"""Equality with the published reference implementation, exclip 1.1 (optional dependency).

exCLIP's `OpenClipExplainer.explain` runs one backward pass per embedding dimension and materialises
the feature-pair matrix; dualex computes the same matrix from integrated JVPs. With exCLIP's own
references (text: BOS, "!", EOS, padding; image: zeros) and its right Riemann rule they must agree.
The ViT-B-32 comparison at layer 11, N = 10 is `benchmarks/ij_speed.py` (it prints the relative
difference); this test runs the same comparison on a tiny open_clip model.
"""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.testing import random_image, tiny_openclip

exclip = pytest.importorskip("exclip", reason="exclip 1.1 is an optional test dependency")


def exclip_matrix(model, pair, *, layer: int, n_steps: int) -> torch.Tensor:
    from exclip import OpenClipExplainer

    module = model.module
    for p in module.parameters():  # exclip differentiates through the module's own graph
        p.requires_grad_(True)
    try:
        ctx = module.positional_embedding.shape[0]  # exclip feeds the full context, padded with 0
        ids = torch.nn.functional.pad(pair.text.ids, (0, ctx - pair.text.ids.shape[1]))
        explainer = OpenClipExplainer(
            module, device=torch.device("cpu"), image_dim=pair.image.pixels.shape[-1], text_seq_len=ids.shape[1]
        )
        A = explainer.explain(ids, pair.image.pixels, text_layer=layer, image_layer=layer, N=n_steps)
    finally:
        for p in module.parameters():
            p.requires_grad_(False)
    return A.reshape(A.shape[0], -1)


@pytest.mark.parametrize("layer", [0, 1])
def test_equals_exclip_openclip(layer):
    model = tiny_openclip(seed=3)
    caption = "a photo of a dog catching a red frisbee"
    pair = model.prepare(random_image(11, (40, 52)), caption)
    ours = dualex.explain(model, random_image(11, (40, 52)), caption, method="ij", layer=layer, n_steps=10)
    theirs = exclip_matrix(model, pair, layer=layer, n_steps=10)
    n = theirs.shape[0]  # exclip cuts the rows after EOS
    assert torch.all(ours.cross[n:] == 0)
    rel = (ours.cross[:n] - theirs).abs().max() / theirs.abs().max()
    assert rel < 1e-4, rel
