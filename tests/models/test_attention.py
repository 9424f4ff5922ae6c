"""The adapter contract's optional capabilities: block views, token projection, float copies, saving."""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.errors import UnsupportedModelError
from dualex.testing import (
    random_image,
    tiny_hf_clip,
    tiny_hf_siglip,
    tiny_hf_siglip2,
    tiny_hf_tokenizer,
    tiny_openclip,
    tiny_sentence,
)

CAPTION = "a red dog on mat"
BUILDERS = {
    "hf-clip": tiny_hf_clip,
    "hf-siglip": tiny_hf_siglip,
    "hf-siglip2": tiny_hf_siglip2,
    "openclip": tiny_openclip,
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def model(request):
    if request.param == "openclip":
        pytest.importorskip("open_clip")
    return BUILDERS[request.param]()


@pytest.mark.parametrize("side", ["text", "image"])
def test_blocks_reproduce_the_tower(model, side):
    """Running every block view with its own probabilities, then the head alone, gives ``encode``."""
    pair = model.prepare(random_image(0), CAPTION)
    inputs = pair.side(side)
    with torch.no_grad():
        h = model.tower(side).hidden(inputs, 0)
        mask = model.tower(side).attention_mask(inputs, 1, h.dtype)
        blocks = model.tower(side).attention_blocks()
        assert len(blocks) == model.tower(side).n_layers
        for i, blk in enumerate(blocks):
            h, A = blk.run(h, mask)
            assert A.shape == (1, blk.n_heads, h.shape[1], h.shape[1])
            torch.testing.assert_close(A.sum(-1), torch.ones_like(A.sum(-1)))
            torch.testing.assert_close(h, model.tower(side).hidden(inputs, i + 1), atol=1e-5, rtol=1e-4)
        e = model.tower(side).tail(inputs, h, model.tower(side).n_layers)
        torch.testing.assert_close(e, model.tower(side).encode(inputs), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("side", ["text", "image"])
def test_project_tokens_at_the_pooled_position_is_the_embedding(model, side):
    pair = model.prepare(random_image(1), CAPTION)
    inputs = pair.side(side)
    with torch.no_grad():
        h = model.tower(side).hidden(inputs, model.tower(side).n_layers)
        dense = model.tower(side).project_tokens(inputs, h)
        e = model.tower(side).encode(inputs)
    assert dense.shape == (1, h.shape[1], e.shape[-1])
    if side == "image" and model.family.startswith("hf-siglip"):
        with pytest.raises(UnsupportedModelError, match="attention head"):
            model.tower(side).pooled_position(inputs)
        return
    q = model.tower(side).pooled_position(inputs)
    torch.testing.assert_close(dense[0, q], e[0], atol=1e-5, rtol=1e-4)


def test_siglip_dense_features_are_the_head_with_one_key():
    """SigLIP's per-position head features equal the head run on that position alone (softmax over one key)."""
    model = tiny_hf_siglip()
    pair = model.prepare(random_image(2), CAPTION)
    with torch.no_grad():
        h = model.tower("image").hidden(pair.image, model.tower("image").n_layers)
        dense = model.tower("image").project_tokens(pair.image, h)[0]
        alone = model.tower("image").tail(pair.image, h[0, :, None, :], model.tower("image").n_layers)
    torch.testing.assert_close(dense, alone, atol=1e-5, rtol=1e-4)


def test_float32_copy_leaves_the_model_alone():
    model = tiny_hf_clip()
    assert model.float32() is model
    half = tiny_hf_clip().to("cpu")
    half.module.to(torch.bfloat16)
    twin = half.float32()
    assert twin is not half and twin.dtype == torch.float32 and half.dtype == torch.bfloat16
    assert twin.tokenizer is half.tokenizer and twin.name == half.name


def test_models_without_attention_internals_say_so():
    model = tiny_sentence()
    pair = model.prepare("a man is eating", "a dog plays")
    for call in (  # its attention is recorded (`test_recording`), but its post-norm blocks are not pre-norm
        lambda: model.tower("text").attention_blocks(),
        lambda: model.tower("text").attention_mask(pair.text, 1, torch.float32),
        lambda: model.tower("text").project_tokens(pair.text, torch.zeros(1, 3, 32)),
    ):
        with pytest.raises(UnsupportedModelError, match=r"tower of tiny-sentence .* has no"):
            call()
    assert model.contrastive_loss is None
    with pytest.raises(UnsupportedModelError, match="cannot save"):
        model.save_pretrained("unused")


def test_siglip_save_pretrained_round_trip(tmp_path):
    """A SigLIP with a transformers tokenizer saves and reloads (module, tokenizer, image pipeline)."""
    base = tiny_hf_siglip()
    from dualex.models.hf_siglip import HFSiglip

    model = HFSiglip(base.module, tokenizer=tiny_hf_tokenizer(), name="tiny")
    assert model.contrastive_loss == "sigmoid" and tiny_hf_clip().contrastive_loss == "softmax"
    name = model.save_pretrained(tmp_path / "out")
    assert name == f"hf:{tmp_path / 'out'}"
    back = dualex.load(name, device="cpu")
    assert back.pipeline.size == model.pipeline.size and back.pipeline.mode == "resize"
    a, b = model.prepare(random_image(3), "a red dog"), back.prepare(random_image(3), "a red dog")
    assert torch.equal(a.image.pixels, b.image.pixels) and torch.equal(a.text.ids, b.text.ids)
    torch.testing.assert_close(back.tower("image").encode(b.image), model.tower("image").encode(a.image))
    assert tiny_hf_siglip2().contrastive_loss is None


def test_hf_text_masking_multiplies_the_mask(tiny_clip):
    """A removed token stays removed when a masked row is masked again (the mask is multiplied, not overwritten)."""
    pair = tiny_clip.prepare(random_image(4), CAPTION)
    n = tiny_clip.tower("text").n_players(pair.text)
    first = torch.ones(n, dtype=torch.bool)
    first[1] = False
    once = tiny_clip.tower("text").mask(pair.text, first)
    twice = tiny_clip.tower("text").mask(once, torch.ones(1, n, dtype=torch.bool))
    pos = pair.text.players(0)
    assert int(twice.mask[0, pos[1]]) == 0 and torch.equal(twice.mask, once.mask)


def test_hf_same_length_reference_puts_eos_at_the_captions_eos(tiny_clip):
    pair = tiny_clip.prepare([random_image(5)] * 2, ["a dog", "a red dog on the mat"])
    ref = tiny_clip.tower("text").reference(pair.text, "same_length")
    eos = tiny_clip.eos_id()
    for b in range(2):
        at = int((pair.text.ids[b] == eos).int().argmax())
        assert int(ref.ids[b, at]) == eos and int(ref.ids[b, 0]) == tiny_clip.bos_id()
        assert int(ref.mask[b, : at + 1].sum()) == at + 1 and int(ref.mask[b, at + 1 :].sum()) == 0
        assert int(ref.pool_index[b]) == at
