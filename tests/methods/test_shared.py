"""Shared passes: one input against K others equals the K one-pair calls (same shapes, no padding rows)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dualex
from dualex.methods.shared import distinct_rows, per_distinct
from dualex.testing import random_image, tiny_hf_clip, tiny_hf_siglip, tiny_openclip

CAPTIONS = ["a red dog", "a small blue cat runs home", "two birds"]  # different lengths: a batch pads them
FIELDS = ("cross", "cross_prefix", "text_pairs", "image_pairs", "text_main", "image_main")
OPTIONS = {
    "ij": {"n_steps": 4},
    "fixlip": {"budget": 64, "n_boot": 0, "holdout": 0},
    "gradxinput": {},
    "ig": {"n_steps": 4, "internal_batch_size": 64},
}


@pytest.fixture(scope="module", params=["clip", "siglip", "openclip"])
def model(request):
    return {"clip": tiny_hf_clip, "siglip": tiny_hf_siglip, "openclip": tiny_openclip}[request.param]()


def assert_same(batched: dualex.Explanation, single: dualex.Explanation, tol: float = 1e-5) -> None:
    assert batched.tokens == single.tokens and batched.grid == single.grid
    assert torch.equal(batched.special, single.special)
    for name in FIELDS:
        a, b = getattr(batched, name), getattr(single, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.shape == b.shape, name
            assert torch.allclose(a, b, atol=tol, rtol=0), (name, float((a - b).abs().max()))
    assert batched.score == pytest.approx(single.score, abs=tol)
    assert batched.decomposition()["similarity"] == pytest.approx(single.decomposition()["similarity"], abs=tol)
    for k, v in single.reference_terms.items():
        assert batched.reference_terms[k] == pytest.approx(v, abs=tol)


@pytest.mark.parametrize("method", list(OPTIONS))
def test_one_image_against_k_captions_equals_single_calls(model, method):
    img = random_image(3)
    batched = dualex.explain(model, img, CAPTIONS, method=method, **OPTIONS[method])
    assert len(batched) == len(CAPTIONS)
    for ex, caption in zip(batched, CAPTIONS, strict=True):
        assert_same(ex, dualex.explain(model, img, caption, method=method, **OPTIONS[method]))


@pytest.mark.parametrize("method", ["ij", "fixlip", "ig"])
def test_one_caption_against_k_images_equals_single_calls(tiny_clip, method):
    images = [random_image(s) for s in (4, 5)]
    batched = dualex.explain(tiny_clip, images, [CAPTIONS[1]] * 2, method=method, **OPTIONS[method])
    for ex, img in zip(batched, images, strict=True):
        assert_same(ex, dualex.explain(tiny_clip, img, CAPTIONS[1], method=method, **OPTIONS[method]))


def test_ij_computes_the_shared_side_once(tiny_clip, monkeypatch):
    from dualex.methods import ij

    calls: list[str] = []
    real = ij.integrated_jacobian

    def counting(model, side, *args, **kwargs):
        calls.append(side)
        return real(model, side, *args, **kwargs)

    monkeypatch.setattr(ij, "integrated_jacobian", counting)
    dualex.explain(tiny_clip, random_image(1), CAPTIONS, method="ij", n_steps=3)
    assert calls.count("image") == 1 and calls.count("text") == len(CAPTIONS)


def test_fixlip_embeds_the_shared_side_once(tiny_clip):
    from dualex.games.game import DualEncoderGame

    passes = {"image": 0}
    real = DualEncoderGame._embed_rows

    def counting(self, side, rows):
        if side == "image":
            passes["image"] += int(rows.shape[0])
        return real(self, side, rows)

    DualEncoderGame._embed_rows = counting
    try:
        opts = OPTIONS["fixlip"]
        dualex.explain(tiny_clip, random_image(2), ["a red dog", "a big cat"], method="fixlip", **opts)
        shared = passes["image"]
        passes["image"] = 0
        dualex.explain(tiny_clip, random_image(2), "a red dog", method="fixlip", **opts)
        one = passes["image"]
    finally:
        DualEncoderGame._embed_rows = real
    assert shared == one  # two captions of one length: the same image coalitions, embedded once


@settings(max_examples=20, deadline=None)
@given(rows=st.lists(st.integers(0, 3), min_size=1, max_size=8))
def test_distinct_rows_groups_equal_inputs(rows):
    from dualex.models.base import TextInputs

    B = len(rows)
    ids = torch.tensor([[1, 2 + r, 3] for r in rows])
    inputs = TextInputs(ids=ids, mask=torch.ones_like(ids), tokens=[["a"] * 3] * B,
                        special=torch.zeros(B, 3, dtype=torch.bool), pool_index=torch.full((B,), 2),
                        texts=[str(r) for r in rows], offsets=[[None] * 3] * B)  # fmt: skip
    first, unique = distinct_rows(inputs)
    assert [rows[u] for u in unique] == list(dict.fromkeys(rows))
    assert all(rows[unique[first[b]]] == rows[b] for b in range(B))
    out = per_distinct(inputs, lambda i: i.ids.float() * 2)
    assert torch.equal(out, ids.float() * 2)
