"""Same-modality pairs with one model: image × image and text × text, with the same exact decomposition."""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.errors import InputError
from dualex.testing import random_image, tiny_hf_clip, tiny_hf_siglip, tiny_openclip

OPTIONS = {"ij": {"n_steps": 4}, "fixlip": {"budget": 64, "n_boot": 0}, "gradxinput": {}}


@pytest.fixture(scope="module", params=["clip", "siglip", "openclip"])
def model(request):
    return {"clip": tiny_hf_clip, "siglip": tiny_hf_siglip, "openclip": tiny_openclip}[request.param]()


def own_score(model, tower: str, a, b) -> float:
    t = model.tower(tower)
    with torch.no_grad():
        ea, eb = (t.encode(t.prepare([v]).to(model.device)).float() for v in (a, b))
    return float(model.similarity(ea, eb).score[0])


@pytest.mark.parametrize("method", list(OPTIONS))
def test_image_image(model, method):
    a, b = random_image(1), random_image(2)
    ex = dualex.explain(model, a, b, method=method, modalities=("image", "image"), **OPTIONS[method])
    grid = ex.grid
    assert ex.text_grid == grid and ex.text_image is not None
    assert ex.players.numel() == grid[0] * grid[1] and bool(ex.special[: len(ex.tokens) - ex.players.numel()].all())
    assert ex.score == pytest.approx(own_score(model, "image", a, b), abs=1e-4)
    if method != "gradxinput":  # exact decompositions add up
        assert abs(ex.decomposition()["residual"]) <= 1e-4
        assert ex.cross.shape == (len(ex.tokens), grid[0] * grid[1])
        assert ex.text_image_map().shape == grid
    else:
        assert ex.text_main.shape == (len(ex.tokens),) and ex.image_main.shape == (grid[0] * grid[1],)


@pytest.mark.parametrize("method", ["ij", "fixlip"])
def test_text_text(model, method):
    ex = dualex.explain(model, "a red dog", "a small cat runs", method=method, modalities=("text", "text"),
                        **OPTIONS[method])  # fmt: skip
    assert ex.image_text == "a red dog" and ex.text == "a small cat runs"
    assert ex.score == pytest.approx(own_score(model, "text", "a small cat runs", "a red dog"), abs=1e-4)
    assert abs(ex.decomposition()["residual"]) <= 1e-4


def test_ij_image_image_is_symmetric_in_its_two_images(tiny_clip):
    a, b = random_image(3), random_image(4)
    ab = dualex.explain(tiny_clip, a, b, modalities=("image", "image"), n_steps=4)
    ba = dualex.explain(tiny_clip, b, a, modalities=("image", "image"), n_steps=4)
    assert torch.allclose(ab.cross[ab.players], ba.cross[ba.players].T, atol=1e-6)
    assert ab.decomposition()["similarity"] == pytest.approx(ba.decomposition()["similarity"], abs=1e-6)


def test_shared_pass_and_files(tiny_clip, tmp_path):
    a, others = random_image(5), [random_image(6), random_image(7)]
    batched = dualex.explain(tiny_clip, a, others, modalities=("image", "image"), n_steps=3)
    for ex, b in zip(batched, others, strict=True):
        single = dualex.explain(tiny_clip, a, b, modalities=("image", "image"), n_steps=3)
        assert torch.allclose(ex.cross, single.cross, atol=1e-5)
    back = dualex.Explanation.load(batched[0].save(tmp_path / "ii.safetensors"))
    assert back.text_grid == batched[0].text_grid and torch.equal(back.text_image, batched[0].text_image)
    assert torch.equal(back.text_image_map(), batched[0].text_image_map())


def test_plain_errors(tiny_clip):
    with pytest.raises(InputError, match="no 'audio' tower"):
        dualex.explain(tiny_clip, random_image(1), random_image(2), modalities=("audio", "image"))
    with pytest.raises(InputError, match="modalities must be two"):
        dualex.explain(tiny_clip, random_image(1), random_image(2), modalities=("image",))
    with pytest.raises(InputError, match="use text_scores"):
        dualex.explain(tiny_clip, random_image(1), "a dog", n_steps=2).text_image_map()
