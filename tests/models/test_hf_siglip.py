"""The transformers SigLIP / SigLIP-2 adapters against the models' own forward passes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import dualex
from dualex.errors import InputError
from dualex.models.base import ImageInputs, TextInputs
from dualex.models.hf_siglip import HFSiglip, HFSiglip2, patchify
from dualex.models.parts import masked_pixels
from dualex.testing import (
    NoBosWordTokenizer,
    random_image,
    tiny_hf_siglip,
    tiny_hf_siglip2,
    tiny_hf_tokenizer,
)

CAPTIONS = ["a red dog", "two cats on a mat"]
FAMILIES = ["siglip", "siglip2"]


@pytest.fixture(scope="module")
def models():
    return {"siglip": tiny_hf_siglip(), "siglip2": tiny_hf_siglip2()}


@pytest.fixture(scope="module", params=FAMILIES)
def model(request, models):
    return models[request.param]


@pytest.fixture(scope="module")
def pair(model):
    return model.prepare([random_image(0), random_image(1, (50, 30))], CAPTIONS)


def own_image_inputs(model, inputs: ImageInputs) -> dict[str, torch.Tensor]:
    """What the transformers model itself takes for these images."""
    if isinstance(model, HFSiglip2):
        return model.model_inputs(inputs)
    size = model.vision_config.image_size
    resize = tuple(inputs.pixels.shape[-2:]) != (size, size)
    return {"pixel_values": inputs.pixels, "interpolate_pos_encoding": resize}


def own_image_features(model, inputs: ImageInputs) -> torch.Tensor:
    return model.module.get_image_features(**own_image_inputs(model, inputs)).pooler_output


def own_logits(model, pair) -> torch.Tensor:
    return model.module(input_ids=pair.text.ids, **own_image_inputs(model, pair.image)).logits_per_image


# ---------------------------------------------------------------------------- towers
@pytest.mark.parametrize("layer", [0, 1, 2, -1])
def test_tail_of_hidden_equals_own_features(model, pair, layer):
    with torch.no_grad():
        e_txt = model.tower("text").tail(pair.text, model.tower("text").hidden(pair.text, layer), layer)
        e_img = model.tower("image").tail(pair.image, model.tower("image").hidden(pair.image, layer), layer)
        own_txt = model.module.get_text_features(input_ids=pair.text.ids).pooler_output
        own_img = own_image_features(model, pair.image)
    torch.testing.assert_close(e_txt, own_txt, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e_img, own_img, atol=1e-5, rtol=1e-5)


def test_hidden_shapes_have_no_prefix(model, pair):
    h = model.tower("image").hidden(pair.image, 1)
    assert pair.image.n_prefix == 0
    assert h.shape[:2] == (2, pair.image.n_patches)
    assert pair.image.players(0).tolist() == list(range(pair.image.n_patches))
    assert model.tower("text").hidden(pair.text, 1).shape[:2] == pair.text.ids.shape


def test_score_is_own_presigmoid_logit(model, pair):
    scores = model.score(pair)
    with torch.no_grad():
        logits = own_logits(model, pair)
    torch.testing.assert_close(scores.score, logits.diagonal(), atol=1e-5, rtol=1e-5)
    assert model.logit_scale == pytest.approx(10.0, rel=1e-6)
    assert model.logit_bias == pytest.approx(-2.5)
    torch.testing.assert_close(scores.score, 10.0 * scores.cosine - 2.5)


def test_text_is_fixed_length_fully_attended_and_pooled_last(model, pair):
    t = pair.text
    S = t.ids.shape[1]
    assert S == 16 == model.text_length
    assert bool((t.mask == 1).all())
    assert t.pool_index.tolist() == [S - 1, S - 1]
    assert t.players(0).tolist() == [0, 1, 2]  # no BOS: words start at position 0
    assert t.ids[0, 3].item() == model.eos_id()
    assert bool((t.ids[0, 4:] == model.pad_id()).all())


def test_tail_broadcasts_one_row_to_many(model, pair):
    one_t, one_i = pair.text.select([0]), pair.image.select([0])
    h_t = model.tower("text").hidden(one_t, 1)
    h_i = model.tower("image").hidden(one_i, 1)
    rows_t = torch.cat([h_t, h_t * 0.5, h_t + 0.1])
    rows_i = torch.cat([h_i, h_i * 0.5, h_i + 0.1])
    with torch.no_grad():
        many_t = model.tower("text").tail(one_t, rows_t, 1)
        many_i = model.tower("image").tail(one_i, rows_i, 1)
        for r in range(3):
            torch.testing.assert_close(many_t[r], model.tower("text").tail(one_t, rows_t[r : r + 1], 1)[0])
            torch.testing.assert_close(many_i[r], model.tower("image").tail(one_i, rows_i[r : r + 1], 1)[0])
    with pytest.raises(InputError):
        model.tower("text").tail(pair.text, rows_t, 1)


# ---------------------------------------------------------------------------- masking
def test_mask_with_all_kept_changes_nothing(model, pair):
    img = model.tower("image").mask(pair.image, torch.ones(2, pair.image.n_patches, dtype=torch.bool))
    torch.testing.assert_close(img.pixels, pair.image.pixels[[0, 0]])
    n_t = model.tower("text").n_players(pair.text)
    for how in ("default", "drop", "pad"):
        txt = model.tower("text").mask(pair.text, torch.ones(2, n_t, dtype=torch.bool), how=how)
        assert torch.equal(txt.ids, pair.text.ids[[0, 0]])
        assert torch.equal(txt.mask, pair.text.mask[[0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(model.tower("image").encode(img)[0], model.tower("image").encode(pair.image)[0])


def test_masking_a_patch_zeroes_exactly_that_patch(model, pair):
    rows, cols = pair.image.grid
    p = model.patch_size
    keep = torch.ones(1, rows * cols, dtype=torch.bool)
    k = cols + 2  # row 1, column 2
    keep[0, k] = False
    out = model.tower("image").mask(pair.image, keep)
    out = replace(out, pixels=masked_pixels(out))  # removals are applied after the patch embedding
    changed = (out.pixels != pair.image.pixels[:1]).any(1)[0]  # (H, W)
    block = torch.zeros_like(changed)
    block[p : 2 * p, 2 * p : 3 * p] = True
    assert bool((changed <= block).all()) and bool(changed.any())
    assert bool((out.pixels[0, :, p : 2 * p, 2 * p : 3 * p] == 0).all())
    if isinstance(model, HFSiglip2):  # the model sees exactly one zero patch
        a = model.model_inputs(out)["pixel_values"][0]
        b = model.model_inputs(pair.image)["pixel_values"][0]
        diff = (a != b).any(-1)
        assert diff.nonzero().flatten().tolist() == [k]
        assert bool((a[k] == 0).all())
        assert torch.equal(out.extra["spatial_shapes"], pair.image.extra["spatial_shapes"][:1])


def test_text_masking_kinds(model, pair):
    keep = torch.tensor([[True, False, True]])  # remove "red" from "a red dog"
    att = model.tower("text").mask(pair.text, keep)
    assert torch.equal(att.ids, pair.text.ids[:1])
    assert att.mask[0].tolist() == [1, 0] + [1] * 14  # EOS, padding and the pooled last position stay
    drop = model.tower("text").mask(pair.text, keep, how="drop")
    assert torch.equal(drop.ids, model.tower("text").prepare(["a dog"]).ids)
    assert drop.tokens[0][:3] == ["a", "dog", "<eos>"]
    assert drop.special[0].tolist() == model.tower("text").prepare(["a dog"]).special[0].tolist()
    pad = model.tower("text").mask(pair.text, keep, how="pad")
    assert pad.ids[0, 1].item() == model.filler_id()
    with torch.no_grad():
        e = model.tower("text").encode(pair.text.select([0]))
        for masked in (att, drop, pad):
            assert not torch.allclose(model.tower("text").encode(masked), e)
    with pytest.raises(InputError):
        model.tower("text").mask(pair.text, torch.ones(1, 5, dtype=torch.bool), how="drop")
    with pytest.raises(InputError):
        model.tower("text").mask(pair.text, keep, how="nonsense")


# ---------------------------------------------------------------------------- references
def test_default_text_reference_is_the_empty_caption(model, pair):
    ref = model.tower("text").reference(pair.text, "default")
    S = pair.text.ids.shape[1]
    assert ref.ids[:, 0].tolist() == [model.eos_id()] * 2
    assert bool((ref.ids[:, 1:] == model.pad_id()).all())
    if isinstance(model, HFSiglip):  # v1: padding id == end-of-text id, so every position holds it
        assert bool((ref.ids == model.eos_id()).all())
    assert bool((ref.mask == 1).all()) and ref.pool_index.tolist() == [S - 1] * 2
    assert bool(ref.special.all())
    none = model.tower("text").mask(pair.text, torch.zeros(1, 3, dtype=torch.bool), how="drop")
    assert torch.equal(none.ids[0], ref.ids[0])


def test_same_length_text_reference_replaces_only_words(model, pair):
    ref = model.tower("text").reference(pair.text, "same_length")
    words = ~pair.text.special
    assert bool((ref.ids[words] == model.filler_id()).all())
    assert torch.equal(ref.ids[~words], pair.text.ids[~words])
    assert model.filler_id() not in (model.eos_id(),)
    assert not torch.equal(ref.ids, model.tower("text").reference(pair.text, "default").ids)
    with pytest.raises(InputError):
        model.tower("text").reference(pair.text, "bos")


@pytest.mark.parametrize("kind", ["default", "same_length"])
def test_path_endpoint_is_the_reference(model, pair, kind):
    """Pooling at S - 1 with every position attended: the α = 0 end of a path is pooled as the reference."""
    ref = model.tower("text").reference(pair.text, kind)
    with torch.no_grad():
        r = model.tower("text").hidden(ref, 1)
        torch.testing.assert_close(model.tower("text").tail(pair.text, r, 1), model.tower("text").encode(ref))


def test_image_references(model, pair):
    zeros = model.tower("image").reference(pair.image, "zeros")
    assert bool((zeros.pixels == 0).all()) and zeros.extra.keys() == pair.image.extra.keys()
    black = model.tower("image").reference(pair.image, "black")
    assert torch.allclose(black.pixels, torch.full_like(black.pixels, -1.0))  # (0 - 0.5) / 0.5


# ---------------------------------------------------------------------------- errors
def test_layer_out_of_range(model, pair):
    n = model.tower("text").n_layers
    for bad in (n + 1, -(n + 1)):
        with pytest.raises(InputError, match="out of range"):
            model.tower("text").hidden(pair.text, bad)
        with pytest.raises(InputError, match="out of range"):
            model.tower("image").tail(pair.image, model.tower("image").hidden(pair.image, 0), bad)


def test_bad_image_path(model, tmp_path):
    with pytest.raises(InputError, match="not found"):
        model.prepare(tmp_path / "missing.png", "a dog")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(InputError):
        model.prepare(bad, "a dog")


def test_text_longer_than_the_tower():
    m = tiny_hf_siglip()
    m.tokenizer = NoBosWordTokenizer(max_length=20)
    with pytest.raises(InputError, match="at most 16"):
        m.tower("text").prepare(["a dog"])


# ---------------------------------------------------------------------------- torch.func
@pytest.mark.parametrize("side", ["text", "image"])
def test_jvp_and_vjp_through_the_tail(model, pair, side):
    inputs = pair.side(side).select([0])
    h = model.tower(side).hidden(inputs, 1).detach()
    g = torch.Generator().manual_seed(0)
    v = torch.randn(h.shape, generator=g)

    def f(x):
        return model.tower(side).tail(inputs, x, 1)

    with sdpa_kernel(SDPBackend.MATH):
        out, tangent = torch.func.jvp(f, (h,), (v,))
        out2, pullback = torch.func.vjp(f, h)
        u = torch.randn(out.shape, generator=g)
        (cot,) = pullback(u)
        fd = (f(h + 1e-2 * v) - f(h - 1e-2 * v)) / 2e-2
    torch.testing.assert_close(out, out2)
    assert h.abs().sum() > 0 and tangent.abs().sum() > 0
    torch.testing.assert_close((u * tangent).sum(), (cot * v).sum(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(tangent, fd, atol=5e-3, rtol=5e-2)


# ---------------------------------------------------------------------------- SigLIP-2 specifics
def test_siglip2_patches_match_the_hf_processor(models):
    from PIL import Image
    from transformers import Siglip2ImageProcessor

    m = models["siglip2"]
    img = random_image(3, (32, 32))
    processor = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    hf = processor(images=[Image.fromarray(img)], return_tensors="pt")
    ours = m.model_inputs(m.tower("image").prepare([img]))
    torch.testing.assert_close(ours["pixel_values"], hf["pixel_values"], atol=1e-5, rtol=0)
    assert torch.equal(ours["spatial_shapes"], hf["spatial_shapes"].long())
    assert torch.equal(ours["pixel_attention_mask"].bool(), hf["pixel_attention_mask"].bool())


def test_siglip2_grid_larger_than_position_table():
    m = tiny_hf_siglip2(max_num_patches=40)  # 6 × 6 grid on a 4 × 4 position table
    inputs = m.tower("image").prepare([random_image(4)])
    assert inputs.grid == (6, 6) and inputs.pixels.shape[-2:] == (48, 48)
    with torch.no_grad():
        for layer in (0, 2):
            e = m.tower("image").tail(inputs, m.tower("image").hidden(inputs, layer), layer)
            torch.testing.assert_close(e, own_image_features(m, inputs), atol=1e-5, rtol=1e-5)


def test_siglip2_padding_patches_are_ignored(models):
    """Extra padding patches (mask 0), as the NaFlex processor adds them, do not change the embedding."""
    m = models["siglip2"]
    inputs = m.tower("image").prepare([random_image(5)])
    padded = ImageInputs(
        pixels=torch.cat([inputs.pixels, torch.zeros(1, 3, 8, 32)], dim=2),  # one extra row of patches
        grid=(5, 4),
        n_prefix=0,
        transforms=inputs.transforms,
        display=inputs.display,
        extra={
            "spatial_shapes": torch.tensor([[4, 4]]),
            "pixel_attention_mask": torch.tensor([[1] * 16 + [0] * 4]),
        },
    )
    with torch.no_grad():
        e = m.tower("image").tail(padded, m.tower("image").hidden(padded, 1), 1)
        torch.testing.assert_close(e, m.tower("image").encode(inputs), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(e, own_image_features(m, padded), atol=1e-5, rtol=1e-5)


def test_patchify_layout():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    p = patchify(x, 2)
    assert p.shape == (2, 6, 12)
    # patch (row 1, col 2), pixel (0, 1), channel 2
    assert p[1, 1 * 3 + 2, (0 * 2 + 1) * 3 + 2] == x[1, 2, 2, 5]


def test_siglip_v1_other_input_size_interpolates_positions(models):
    m = tiny_hf_siglip()
    m.pipeline.size = (48, 48)
    inputs = m.tower("image").prepare([random_image(6)])
    assert inputs.grid == (6, 6)
    with torch.no_grad():
        e = m.tower("image").tail(inputs, m.tower("image").hidden(inputs, 1), 1)
        torch.testing.assert_close(e, own_image_features(m, inputs), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- loading and wrapping
@pytest.mark.parametrize("family", FAMILIES)
def test_load_saved_directory(models, family, tmp_path):
    from transformers import Siglip2ImageProcessor, SiglipImageProcessor

    module = models[family].module
    module.save_pretrained(tmp_path)
    tiny_hf_tokenizer(pad_is_eos=family == "siglip").save_pretrained(tmp_path)
    if family == "siglip":
        SiglipImageProcessor(size={"height": 40, "width": 40}).save_pretrained(tmp_path)
    else:
        Siglip2ImageProcessor(patch_size=8, max_num_patches=25).save_pretrained(tmp_path)
    model = dualex.load(f"hf:{tmp_path}", device="cpu")
    assert type(model) is {"siglip": HFSiglip, "siglip2": HFSiglip2}[family]
    assert model.name == f"hf:{tmp_path}"
    pair = model.prepare([random_image(0)], ["a red dog"])
    assert pair.image.grid == (5, 5)
    vocab = model.tokenizer.tok.get_vocab()
    assert pair.text.ids[0, :4].tolist() == [vocab["a"], vocab["red"], vocab["dog"], vocab["</s>"]]
    assert pair.text.ids.shape[1] == 16 and bool((pair.text.mask == 1).all())
    assert model.filler_id() == 3  # the tokenizer's "!"
    with torch.no_grad():
        own = own_logits(model, pair).diagonal()
        torch.testing.assert_close(model.score(pair).score, own, atol=1e-5, rtol=1e-5)


def test_load_without_tokenizer_says_how_to_wrap(models, tmp_path):
    models["siglip"].module.save_pretrained(tmp_path)
    with pytest.raises(InputError, match=r"dualex\.wrap\(module, tokenizer="):
        dualex.load(f"hf:{tmp_path}", device="cpu")


@pytest.mark.parametrize("family", FAMILIES)
def test_wrap_module_with_hf_tokenizer(models, family):
    tok = tiny_hf_tokenizer(pad_is_eos=family == "siglip")
    model = dualex.wrap(models[family].module, tokenizer=tok)
    assert isinstance(model, {"siglip": HFSiglip, "siglip2": HFSiglip2}[family])
    t = model.tower("text").prepare(["A red dog", "two cats"])
    assert isinstance(t, TextInputs)
    vocab = tok.get_vocab()
    assert t.ids[0, :4].tolist() == [vocab["a"], vocab["red"], vocab["dog"], vocab["</s>"]]
    assert t.ids.shape == (2, 16) and bool((t.mask == 1).all())
    assert t.special[0].tolist() == [False] * 3 + [True] * 13
    assert t.offsets[0][:3] == [(0, 1), (2, 5), (6, 9)]
    assert model.pad_id() == (1 if family == "siglip" else 0)
    with pytest.raises(InputError, match="tokenizer"):
        dualex.wrap(models[family].module)
