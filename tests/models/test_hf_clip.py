"""The transformers CLIP adapter against the model's own forward pass."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import dualex
from dualex.errors import InputError
from dualex.models.hf import HFClip
from dualex.models.parts import masked_pixels
from dualex.testing import TINY_BOS, TINY_EOS, TINY_PAD, random_image, tiny_hf_clip, tiny_word_tokenizer

CAPTIONS = ["a red dog", "two cats on a mat"]  # different lengths: row 0 is padded


@pytest.fixture(scope="module")
def model():
    return tiny_hf_clip()


@pytest.fixture(scope="module")
def pair(model):
    return model.prepare([random_image(0), random_image(1, (50, 30))], CAPTIONS)


def own_text(model, pair) -> torch.Tensor:
    return model.module.get_text_features(
        input_ids=pair.text.ids, attention_mask=pair.text.mask
    ).pooler_output


def own_image(model, pair) -> torch.Tensor:
    return model.module.get_image_features(pixel_values=pair.image.pixels).pooler_output


@pytest.mark.parametrize("layer", [0, 1, 2, -1])
def test_tail_of_hidden_equals_own_features(model, pair, layer):
    with torch.no_grad():
        e_txt = model.tower("text").tail(pair.text, model.tower("text").hidden(pair.text, layer), layer)
        e_img = model.tower("image").tail(pair.image, model.tower("image").hidden(pair.image, layer), layer)
        torch.testing.assert_close(e_txt, own_text(model, pair), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(e_img, own_image(model, pair), atol=1e-5, rtol=1e-5)


def test_inputs_structure(model, pair):
    t, i = pair.text, pair.image
    assert t.ids[0, :5].tolist()[0] == TINY_BOS
    assert t.pool_index.tolist() == [4, 6]  # EOS after 3 and 5 words
    assert t.ids[0, 4].item() == TINY_EOS and t.mask[0].tolist() == [1] * 5 + [0] * 2
    assert t.players(0).tolist() == [1, 2, 3]
    assert i.n_prefix == 1 and i.grid == (4, 4)
    assert i.players(0).tolist() == list(range(1, 17))
    assert model.tower("image").hidden(i, 1).shape[:2] == (2, 17)


def test_score_is_own_logits(model, pair):
    scores = model.score(pair)
    with torch.no_grad():
        out = model.module(
            input_ids=pair.text.ids, attention_mask=pair.text.mask, pixel_values=pair.image.pixels
        )
    torch.testing.assert_close(scores.score, out.logits_per_image.diagonal(), atol=1e-5, rtol=1e-5)
    assert model.logit_bias == 0.0
    torch.testing.assert_close(scores.score, model.logit_scale * scores.cosine)


def test_tail_broadcasts_one_row_to_many(model, pair):
    one = pair.image.select([1])
    h = model.tower("image").hidden(one, 1)
    rows = torch.cat([h, 2 * h])
    with torch.no_grad():
        many = model.tower("image").tail(one, rows, 1)
        torch.testing.assert_close(many[1], model.tower("image").tail(one, rows[1:], 1)[0])
    with pytest.raises(InputError):
        model.tower("text").tail(pair.text, torch.cat([h, h, h])[:, :7], 1)


def test_mask_with_all_kept_changes_nothing(model, pair):
    img = model.tower("image").mask(pair.image, torch.ones(3, 16, dtype=torch.bool))
    assert torch.equal(img.pixels, pair.image.pixels[[0, 0, 0]])
    txt = model.tower("text").mask(pair.text, torch.ones(2, 3, dtype=torch.bool))
    assert torch.equal(txt.ids, pair.text.ids[[0, 0]]) and torch.equal(txt.mask, pair.text.mask[[0, 0]])


def test_masking_a_patch_zeroes_exactly_that_patch(model, pair):
    keep = torch.ones(1, 16, dtype=torch.bool)
    keep[0, 4 * 3 + 1] = False  # row 3, column 1
    out = model.tower("image").mask(pair.image, keep)
    out = replace(out, pixels=masked_pixels(out))  # removals are applied after the patch embedding
    changed = (out.pixels != pair.image.pixels[:1]).any(1)[0]
    block = torch.zeros_like(changed)
    block[24:32, 8:16] = True
    assert bool(changed.any()) and bool((changed <= block).all())
    assert bool((out.pixels[0, :, 24:32, 8:16] == 0).all())


def test_text_mask_removes_attention_only(model, pair):
    out = model.tower("text").mask(pair.text, torch.tensor([[True, False, True]]))
    assert torch.equal(out.ids, pair.text.ids[:1])
    assert out.mask[0].tolist() == [1, 1, 0, 1, 1, 0, 0]
    with torch.no_grad():
        assert not torch.allclose(model.tower("text").encode(out), model.tower("text").encode(pair.text.select([0])))


def test_text_references(model, pair):
    ref = model.tower("text").reference(pair.text, "default")
    assert ref.ids[:, :3].tolist() == [[TINY_BOS, model.filler_id(), TINY_EOS]] * 2
    assert bool((ref.ids[:, 3:] == TINY_PAD).all()) and ref.pool_index.tolist() == [2, 2]
    assert ref.mask[1].tolist() == [1, 1, 1, 0, 0, 0, 0]
    same = model.tower("text").reference(pair.text, "same_length")
    assert same.pool_index.tolist() == pair.text.pool_index.tolist()
    assert same.ids[1].tolist() == [TINY_BOS, *[model.filler_id()] * 5, TINY_EOS]
    assert torch.equal(same.mask, pair.text.mask)
    with pytest.raises(InputError):
        model.tower("text").reference(pair.text, "nonsense")


def test_image_references(model, pair):
    assert bool((model.tower("image").reference(pair.image, "zeros").pixels == 0).all())
    black = model.tower("image").reference(pair.image, "black").pixels
    torch.testing.assert_close(black[0, :, 0, 0], model.pipeline.black().flatten())
    with pytest.raises(InputError):
        model.tower("image").reference(pair.image, "blur")


def test_layer_out_of_range(model, pair):
    for bad in (3, -3):
        with pytest.raises(InputError, match="out of range"):
            model.tower("image").hidden(pair.image, bad)
        with pytest.raises(InputError, match="out of range"):
            model.tower("text").tail(pair.text, model.tower("text").hidden(pair.text, 0), bad)


def test_bad_image_path(model, tmp_path):
    with pytest.raises(InputError, match="not found"):
        model.prepare(str(tmp_path / "missing.jpg"), "a dog")


@pytest.mark.parametrize("side", ["text", "image"])
def test_jvp_and_vjp_through_the_tail(model, pair, side):
    inputs = pair.side(side).select([0])
    h = model.tower(side).hidden(inputs, 1).detach()
    g = torch.Generator().manual_seed(1)
    v = torch.randn(h.shape, generator=g)

    def f(x):
        return model.tower(side).tail(inputs, x, 1)

    with sdpa_kernel(SDPBackend.MATH):
        out, tangent = torch.func.jvp(f, (h,), (v,))
        _, pullback = torch.func.vjp(f, h)
        u = torch.randn(out.shape, generator=g)
        (cot,) = pullback(u)
        fd = (f(h + 1e-2 * v) - f(h - 1e-2 * v)) / 2e-2
    torch.testing.assert_close((u * tangent).sum(), (cot * v).sum(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tangent, fd, atol=5e-3, rtol=5e-2)


def test_wrap_and_load(model, tmp_path):
    wrapped = dualex.wrap(model.module, tokenizer=tiny_word_tokenizer())
    assert isinstance(wrapped, HFClip) and wrapped.family == "hf-clip"
    with pytest.raises(InputError, match="tokenizer"):
        dualex.wrap(model.module, tokenizer=None)
    model.module.save_pretrained(tmp_path)
    with pytest.raises(InputError, match="no tokenizer"):
        dualex.load(f"hf:{tmp_path}", device="cpu")
