"""Contrast: the difference of two explanations sharing x, adding up to s(x, a) − s(x, b)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dualex
from dualex.errors import InputError
from dualex.testing import random_image, tiny_hf_siglip

WORDS = ["red", "dog", "cat", "blue", "runs", "home", "big", "small"]
EXACT = {"ij": {"n_steps": 4}, "fixlip": {"budget": 64, "n_boot": 0, "holdout": 0}, "ig": {"n_steps": 4}}


@pytest.fixture(scope="module")
def siglip():
    return tiny_hf_siglip()


def model_difference(model, x_image, a, b) -> float:
    pair = model.prepare([x_image, x_image], [a, b])
    s = model.score(pair)
    return float(s.cosine[0] - s.cosine[1])


@pytest.mark.parametrize("method", list(EXACT))
def test_decomposition_adds_up_to_the_score_difference(tiny_clip, method):
    img = random_image(0)
    con = dualex.contrast(tiny_clip, img, "a red dog", "a small blue cat", method=method, **EXACT[method])
    d = con.decomposition()
    assert abs(d["residual"]) <= 1e-4
    parts = sum(v for k, v in d.items() if k not in ("similarity", "attributed", "method_error", "residual"))
    assert d["similarity"] == pytest.approx(d["attributed"] - d["method_error"] + parts, abs=1e-4)
    s = model_difference(tiny_clip, img, "a red dog", "a small blue cat")
    scale = tiny_clip.logit_scale if con.units == "score" else 1.0
    assert con.difference == pytest.approx(s * scale, abs=1e-4)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    a=st.lists(st.sampled_from(WORDS), min_size=1, max_size=5),
    b=st.lists(st.sampled_from(WORDS), min_size=1, max_size=5),
    units=st.sampled_from(["cosine", "score"]),
)
def test_ij_contrast_adds_up_with_reference_and_bias_terms(siglip, a, b, units):
    con = dualex.contrast(siglip, random_image(1), " ".join(a), " ".join(b), n_steps=3, units=units)
    d = con.decomposition()
    assert abs(d["residual"]) <= 1e-4
    if units == "score":  # the bias is in both scores and cancels in the difference
        assert d.get("bias", 0.0) == pytest.approx(0.0, abs=1e-9)


def test_maps_are_differences_of_the_two_explanations(tiny_clip):
    con = dualex.contrast(tiny_clip, random_image(2), "a red dog", "two cats", n_steps=4)
    assert con.image_map().shape == con.a.grid
    grid = con.a.grid
    assert torch.allclose(con.image_map(), con.a.cross.sum(0).reshape(grid) - con.b.cross.sum(0).reshape(grid))
    total = float(con.a.cross.sum() - con.b.cross.sum())  # the map adds up to the difference of cross totals
    assert float(con.image_map().sum()) == pytest.approx(total, abs=1e-6)
    with pytest.raises(InputError, match="no common token axis"):
        con.text_scores()
    assert con.labels == ("a red dog", "two cats") and con.x_side == "image"


def test_first_order_methods_give_the_difference_of_their_maps(tiny_clip):
    con = dualex.contrast(tiny_clip, random_image(2), "a red dog", "two cats", method="gradxinput")
    assert torch.allclose(con.image_map(), (con.a.image_main - con.b.image_main).reshape(con.a.grid))


@pytest.mark.parametrize("method", ["ij", "fixlip"])
def test_caption_x_against_two_images(tiny_clip, method):
    images = [random_image(3), random_image(4)]
    con = dualex.contrast(tiny_clip, "a red dog", images[0], images[1], method=method, **EXACT[method])
    assert con.x_side == "text" and con.labels == ("image A", "image B")
    assert con.text_scores().shape == (len(con.a.tokens),)
    assert torch.allclose(con.text_scores(), con.a.text_scores() - con.b.text_scores())
    assert abs(con.decomposition()["residual"]) <= 1e-4
    with pytest.raises(InputError, match="no common patch map"):
        con.image_map()
    single = dualex.explain(tiny_clip, images[1], "a red dog", method=method, **EXACT[method])
    assert torch.allclose(con.b.cross, single.cross, atol=1e-5)


def test_save_load_plot(tiny_clip, tmp_path):
    con = dualex.contrast(tiny_clip, random_image(5), "a red dog", "a blue cat", n_steps=3)
    back = dualex.Contrast.load(con.save(tmp_path / "c"))
    assert back.labels == con.labels and back.x_side == con.x_side
    assert torch.equal(back.image_map(), con.image_map())
    assert back.decomposition() == pytest.approx(con.decomposition())
    fig = con.plot()
    assert len(fig.axes) >= 6
    d = con.to_json_dict()
    assert len(d["image_map"]) == con.a.grid[0] and d["a"]["text"] == "a red dog"
    with pytest.raises(InputError, match=r"no contrast\.json"):
        dualex.Contrast.load(tmp_path)


def test_plain_errors(tiny_clip):
    img = random_image(6)
    with pytest.raises(InputError, match="must be captions"):
        dualex.contrast(tiny_clip, img, "a dog", img)
    with pytest.raises(InputError, match="x_side"):
        dualex.contrast(tiny_clip, img, "a dog", "a cat", x_side="audio")
    a = dualex.explain(tiny_clip, img, "a dog", n_steps=2)
    b = dualex.explain(tiny_clip, img, "a cat", method="gradxinput")
    with pytest.raises(InputError, match="one method"):
        dualex.Contrast(a, b)


def test_notebook_display(tiny_clip):
    con = dualex.contrast(tiny_clip, random_image(0), "a red dog", "a small blue cat", n_steps=2,
                          labels=("dog", "cat"))  # fmt: skip
    page = con._repr_html_()
    assert '<img src="data:image/png;base64,' in page
    assert "s(x, dog)" in page and "difference: similarity" in page and f"{con.difference:.4g}" in page
