"""transformers MetaCLIP 2, Chinese-CLIP, AltCLIP, ALIGN and BLIP (`dualex.models.hf_clip_families`,
`dualex.models.hf_align`, `dualex.models.hf_blip`): `dualex.wrap(module, tokenizer=tok)` suffices for a
module built from a config, the embeddings are the library's own, and ij, fixlip and gradxinput give
finite, non-zero results."""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.testing import HF_FAMILY_KINDS, random_image, tiny_hf_family

KINDS = HF_FAMILY_KINDS


@pytest.fixture(scope="module", params=KINDS)
def family(request):
    model = tiny_hf_family(request.param, seed=1)
    return request.param, model, model.prepare([random_image(1), random_image(2)], ["a red dog", "two blue cats"])


def _features(out):
    return getattr(out, "pooler_output", out)


def test_embeddings_are_the_librarys_own(family):
    kind, model, pair = family
    m = model.module
    if kind == "blip":  # the retrieval model's contrastive (ITC) score: the cosine of its two embeddings
        with torch.no_grad():
            out = m(input_ids=pair.text.ids, attention_mask=pair.text.mask, pixel_values=pair.image.pixels,
                    use_itm_head=False)  # fmt: skip
            scores = model.similarity(model.tower("image").encode(pair.image), model.tower("text").encode(pair.text),
                                      all_pairs=True).score  # fmt: skip
        torch.testing.assert_close(scores, out.itm_score, rtol=1e-5, atol=1e-5)
        return
    with torch.no_grad():
        text = _features(m.get_text_features(input_ids=pair.text.ids, attention_mask=pair.text.mask))
        image = _features(m.get_image_features(pixel_values=pair.image.pixels))
        torch.testing.assert_close(model.tower("text").encode(pair.text), text, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.tower("image").encode(pair.image), image, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("method", "options"), [("ij", {"n_steps": 4}), ("fixlip", {"budget": 64}), ("gradxinput", {})]
)
def test_methods_give_finite_non_zero_results(family, method, options):
    _, model, _ = family
    ex = dualex.explain(model, random_image(1), "a red dog", method=method, **options)
    values = ex.cross if ex.cross is not None else torch.cat([ex.text_main, ex.image_main])
    assert torch.isfinite(values).all() and float(values.abs().sum()) > 0


def test_wrap_picks_the_family_by_model_type(family):
    kind, model, _ = family
    assert model.family == f"hf-{kind}"
    twin = dualex.wrap(model.module, tokenizer=model.tokenizer)
    assert type(twin) is type(model)


def test_align_layers_are_stages_and_its_score_uses_the_temperature():
    model = tiny_hf_family("align", seed=1)
    tower = model.tower("image")
    assert tower.layer_unit == "stage" and tower.n_layers == 7
    assert model.logit_scale == pytest.approx(1.0 / float(model.module.temperature))
    ex = dualex.explain(model, random_image(1), "a red dog", method="ij", n_steps=2, image_layer=0)
    assert ex.grid == (32, 32)  # the stem's map at 64 px
