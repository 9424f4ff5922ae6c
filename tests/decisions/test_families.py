"""The decisions on every model family's tiny config and the bundled model, with ij, fixlip and a
first-order method: contrasts add up, zero-shot scores are the classifier's, rankings follow the scores."""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.testing import random_image, tiny_hf_clip, tiny_hf_siglip, tiny_openclip

METHODS = {"ij": {"n_steps": 3}, "fixlip": {"budget": 32, "n_boot": 0}, "gradxinput": {}}
FACTORIES = {"clip": tiny_hf_clip, "siglip": tiny_hf_siglip, "openclip": tiny_openclip,
             "shapes": lambda: dualex.load("shapes")}  # fmt: skip


@pytest.fixture(scope="module", params=list(FACTORIES))
def model(request):
    return FACTORIES[request.param]()


@pytest.mark.parametrize("method", list(METHODS))
def test_contrast_zero_shot_and_ranking(model, method):
    opts = METHODS[method]
    img = random_image(7, (64, 64))
    con = dualex.contrast(model, img, "a red star", "two blue circles", method=method, **opts)
    assert con.image_map().shape == con.a.grid
    if method != "gradxinput":
        assert abs(con.decomposition()["residual"]) <= 1e-4
    d = dualex.zero_shot(model, img, ["star", "circle", "square"], ["a {}", "a large {}"], method=method, **opts)
    t = model.tower("text")
    with torch.no_grad():
        v = model.tower("image")
        e_i = torch.nn.functional.normalize(v.encode(v.prepare([img]).to(model.device)).float(), dim=-1)
        cls = []
        for c in d.classes:
            prompts = t.prepare([f"a {c}", f"a large {c}"]).to(model.device)
            e = torch.nn.functional.normalize(t.encode(prompts).float(), dim=-1).mean(0)
            cls.append(e / e.norm())
    expected = (e_i @ torch.stack(cls).T)[0] * model.logit_scale + model.logit_bias
    assert torch.allclose(d.scores, expected, atol=1e-4)
    if method != "gradxinput":
        assert abs(d.contrast.decomposition()["residual"]) <= 1e-4
    r = dualex.explain_ranking(model, img, ["a red star", "two blue circles", "a square"], k=2, method=method, **opts)
    assert bool((r.scores[r.order][:-1] >= r.scores[r.order][1:]).all())
    assert [e.text for e in r.explanations] == [r.labels[int(i)] for i in r.order[:2]]
