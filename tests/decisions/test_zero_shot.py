"""Zero-shot decisions: the classifier's scores, and the prompt ensemble's explanation adds up."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import dualex
from dualex.decisions.ensemble import class_embedding, ensemble_weight
from dualex.errors import InputError
from dualex.testing import random_image, tiny_hf_siglip

CLASSES = ["dog", "cat", "bird"]
TEMPLATES = ["a {}", "a photo of a big {}", "{} runs"]


def classifier_scores(model, image, classes, templates) -> torch.Tensor:
    """CLIP's zero-shot classifier written against the transformers module directly."""
    m = model.module
    img = model.tower("image").prepare([image])
    with torch.no_grad():
        f_img = m.get_image_features(pixel_values=img.pixels)
        f_img = getattr(f_img, "pooler_output", f_img)
        f_img = f_img / f_img.norm(dim=-1, keepdim=True)
        rows = []
        for c in classes:
            t = model.tower("text").prepare([tpl.replace("{}", c) for tpl in templates])
            f = m.get_text_features(input_ids=t.ids, attention_mask=t.mask)
            f = getattr(f, "pooler_output", f)
            f = f / f.norm(dim=-1, keepdim=True)
            mean = f.mean(0)
            rows.append(mean / mean.norm())
        cos = f_img @ torch.stack(rows).T
    bias = float(m.logit_bias) if hasattr(m, "logit_bias") else 0.0
    return (cos[0] * m.logit_scale.exp() + bias).float()


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_scores_equal_the_classifier(tiny_clip, which):
    model = tiny_clip if which == "clip" else tiny_hf_siglip()
    img = random_image(1)
    d = dualex.zero_shot(model, img, CLASSES, TEMPLATES, n_steps=3)
    assert torch.allclose(d.scores, classifier_scores(model, img, CLASSES, TEMPLATES), atol=1e-4)
    assert d.predicted == CLASSES[int(d.scores.argmax())]
    assert d.runner_up == CLASSES[int(torch.argsort(d.scores, descending=True)[1])]
    assert d.contrast.labels == (d.predicted, d.runner_up)
    assert torch.allclose(d.probabilities().sum(), torch.tensor(1.0))


@pytest.mark.parametrize(("method", "opts"), [("ij", {"n_steps": 4, "units": "score"}), ("ij", {"n_steps": 4}),
                                              ("fixlip", {"budget": 64, "n_boot": 0, "holdout": 0})])  # fmt: skip
def test_ensemble_explanations_add_up_to_the_class_scores(method, opts):
    model = tiny_hf_siglip()  # logit bias ≠ 0
    d = dualex.zero_shot(model, random_image(2), CLASSES, TEMPLATES, method=method, **opts)
    for name, ex in d.explanations.items():
        k = d.index(name)
        dec = ex.decomposition()
        expected = float(d.scores[k]) if ex.units == "score" else float(d.cosines[k])
        assert dec["similarity"] == pytest.approx(expected, abs=1e-5)
        assert abs(dec["residual"]) <= 1e-4, dec
        assert len(ex.params["templates"]) == len(TEMPLATES)
        # every template's tokens have rows
        text = model.tower("text")
        assert ex.cross.shape[0] == sum(len(text.prepare([t.replace("{}", name)]).tokens[0]) for t in TEMPLATES)
    assert abs(d.contrast.decomposition()["residual"]) <= 1e-4


def test_one_template_is_the_plain_explanation(tiny_clip):
    img = random_image(3)
    last = dualex.zero_shot(tiny_clip, img, CLASSES, ["a {}"], n_steps=2).ranking[-1]
    d = dualex.zero_shot(tiny_clip, img, CLASSES, ["a {}"], n_steps=4, versus=CLASSES[last])
    assert d.versus == CLASSES[last] != d.runner_up
    with pytest.raises(InputError, match="is the predicted class"):
        dualex.zero_shot(tiny_clip, img, CLASSES, ["a {}"], n_steps=2, versus=d.predicted)
    ex = d.explanations[d.predicted]
    plain = dualex.explain(tiny_clip, img, f"a {d.predicted}", n_steps=4)
    assert ex.tokens == plain.tokens
    assert torch.allclose(ex.cross, plain.cross, atol=1e-5)
    assert ex.decomposition()["similarity"] == pytest.approx(plain.decomposition()["similarity"], abs=1e-5)


@settings(max_examples=25, deadline=None)
@given(e=arrays("float64", st.tuples(st.integers(1, 5), st.just(6)), elements=st.floats(-3, 3)),
       x=arrays("float64", (6,), elements=st.floats(-3, 3)))  # fmt: skip
def test_the_class_cosine_is_the_weighted_sum_of_template_cosines(e, x):
    e_t, x_t = torch.from_numpy(e), torch.from_numpy(x)
    if bool((e_t.norm(dim=1) < 1e-3).any()) or float(x_t.norm()) < 1e-3:
        return
    e_hat = torch.nn.functional.normalize(e_t, dim=1)
    if float(e_hat.sum(0).norm()) < 1e-3:  # templates that cancel: no class direction
        return
    w = ensemble_weight(e_t)
    cos_c = float(torch.nn.functional.normalize(x_t, dim=0) @ class_embedding(e_t).double())
    cos_j = torch.nn.functional.cosine_similarity(e_t, x_t[None], dim=1)
    assert cos_c == pytest.approx(w * float(cos_j.sum()), abs=1e-5)
    assert 1.0 / len(e) - 1e-9 <= w


def test_plain_errors(tiny_clip):
    img = random_image(4)
    with pytest.raises(InputError, match="at least two classes"):
        dualex.zero_shot(tiny_clip, img, ["dog"])
    with pytest.raises(InputError, match="'\\{\\}'"):
        dualex.zero_shot(tiny_clip, img, CLASSES, ["a photo"])
    with pytest.raises(InputError, match="not one of the classes"):
        dualex.zero_shot(tiny_clip, img, CLASSES, versus="fish")
    with pytest.raises(InputError, match=r"did you mean 'n_steps'"):
        dualex.zero_shot(tiny_clip, img, CLASSES, n_stepz=3)


def test_notebook_display(tiny_clip):
    d = dualex.zero_shot(tiny_clip, random_image(0), CLASSES, ["a {}"], n_steps=2)
    page = d._repr_html_()
    assert '<img src="data:image/png;base64,' in page
    assert f"<td>{d.predicted}</td>" in page and "score (probability)" in page
