"""A batch of pairs gives exactly what each pair gives alone: every method × one tiny model per adapter.

Same token axis (no padding rows), the same values to 1e-5, and seeded methods with the randomness of
their single call (row b of a batch is not "seed + b").
"""

from __future__ import annotations

import functools

import pytest
import torch

import dualex
from dualex.errors import UnsupportedModelError
from dualex.methods import list_methods
from dualex.testing import TINY_FAMILIES, tiny_pair_inputs

ADAPTERS = ["hf-clip", "hf-siglip", "hf-siglip2", "hf-blip", "hf-align", "hf-chinese-clip", "openclip", "sentence",
            "openclip:RN50"]
"""One tiny model per adapter module (hf, hf_siglip x2 towers, hf_blip, hf_align, hf_clip_families, openclip,
sentence, openclip_towers)."""
CHEAP = {
    "ij": {"n_steps": 2},
    "ig": {"n_steps": 2},
    "fixlip": {"budget": 48, "n_boot": 0, "holdout": 0},
    "fixlip_si": {"budget": 48, "n_boot": 0, "holdout": 0},
    "interaction_lime": {"budget": 48, "n_boot": 0},
    "rise": {"budget": 16},
    "random": {"seed": 5},
}
METHODS = sorted(list_methods())


@functools.cache
def model(name: str) -> dualex.DualEncoder:
    return TINY_FAMILIES[name]()


def _terms(ex: dualex.Explanation) -> dict[str, torch.Tensor]:
    out = {k: v for k in ("cross", "cross_prefix", "text_pairs", "image_pairs", "text_main", "image_main")
           if (v := getattr(ex, k)) is not None}  # fmt: skip
    out.update({f"stderr.{k}": v for k, v in ex.stderr.items()})
    return out


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_single(method, adapter):
    m = model(adapter)
    images, texts = tiny_pair_inputs(m)
    images, texts = [images[0], images[1], images[0]], [texts[0], texts[1], texts[1] + " and more words here"]
    opts = CHEAP.get(method, {})
    try:
        batch = dualex.explain(m, images, texts, method=method, **opts)
    except UnsupportedModelError:
        pytest.skip(f"{method} does not support {adapter}")
    for b, (img, txt) in enumerate(zip(images, texts, strict=True)):
        one = dualex.explain(m, img, txt, method=method, **opts)
        got = batch[b]
        assert got.tokens == one.tokens and torch.equal(got.special, one.special), f"pair {b}: token axis"
        assert got.grid == one.grid
        a, e = _terms(got), _terms(one)
        assert a.keys() == e.keys(), f"pair {b}: terms {sorted(a)} vs {sorted(e)}"
        for k in e:
            assert a[k].shape == e[k].shape, f"pair {b}: {k} shape {tuple(a[k].shape)} vs {tuple(e[k].shape)}"
            torch.testing.assert_close(a[k], e[k], atol=1e-5, rtol=1e-4, msg=lambda s, k=k, b=b: f"pair {b} {k}: {s}")
        assert got.score == pytest.approx(one.score, abs=1e-5)
