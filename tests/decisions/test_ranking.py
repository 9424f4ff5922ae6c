"""Rankings: order = similarity order; the top k explained with the query computed once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import dualex
from dualex.errors import InputError
from dualex.testing import random_image

GALLERY = ["a red dog", "two cats", "a small blue bird runs", "home", "a big red dog runs home"]


def test_order_is_the_similarity_order(tiny_clip):
    img = random_image(0)
    r = dualex.explain_ranking(tiny_clip, img, GALLERY, k=3, n_steps=3)
    own = tiny_clip.score(tiny_clip.prepare([img] * len(GALLERY), GALLERY)).score
    assert torch.allclose(r.scores, own, atol=1e-5)
    assert torch.equal(r.order, torch.sort(own, descending=True, stable=True).indices)
    assert bool((r.scores[r.order][:-1] >= r.scores[r.order][1:]).all())
    assert [ex.text for ex in r.explanations] == [GALLERY[int(i)] for i in r.order[:3]]
    for rank, ex in enumerate(r.explanations):
        assert ex.score == pytest.approx(float(r.scores[r.order[rank]]), abs=1e-5)
    con = r.contrast(0, 2)
    assert con.difference > 0 or con.similarities[0] >= con.similarities[1]
    assert abs(con.decomposition()["residual"]) <= 1e-4
    with pytest.raises(InputError, match="raise k"):
        r.contrast(0, 4)


def test_caption_query_over_a_folder_of_images(tiny_clip, tmp_path):
    for i in range(4):
        Image.fromarray(random_image(10 + i)).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    r = dualex.explain_ranking(tiny_clip, "a red dog", tmp_path, k=2, method="gradxinput")
    assert r.query_side == "text" and sorted(r.labels) == [f"img{i}.png" for i in range(4)]
    imgs = [np.asarray(Image.open(tmp_path / n)) for n in r.labels]
    own = tiny_clip.score(tiny_clip.prepare(imgs, ["a red dog"] * 4)).score
    assert torch.equal(r.order, torch.sort(own, descending=True, stable=True).indices)
    assert len(r.explanations) == 2 and r.top(1)[0][0] == int(r.order[0])


def test_captions_file_and_errors(tiny_clip, tmp_path):
    f = tmp_path / "captions.txt"
    f.write_text("\n".join(GALLERY) + "\n\n")
    r = dualex.explain_ranking(tiny_clip, random_image(1), f, k=0)
    assert r.labels == GALLERY and r.explanations == []
    with pytest.raises(InputError, match="k must be"):
        dualex.explain_ranking(tiny_clip, random_image(1), GALLERY, k=-1)
    with pytest.raises(InputError, match="gallery must be"):
        dualex.explain_ranking(tiny_clip, random_image(1), [])
    with pytest.raises(InputError, match="must hold strings"):
        dualex.explain_ranking(tiny_clip, random_image(1), [random_image(2)])


def test_notebook_display(tiny_clip):
    r = dualex.explain_ranking(tiny_clip, random_image(0), GALLERY, k=2, n_steps=2)
    page = r._repr_html_()
    assert '<img src="data:image/png;base64,' in page and f"1. {r.top(1)[0][1]}" in page
    assert "<img" not in dualex.explain_ranking(tiny_clip, random_image(0), GALLERY, k=0)._repr_html_()


def test_a_dataset_gallery(tiny_clip):
    from dualex.datasets.base import Dataset, Item

    class Three(Dataset):
        kind = "three"

        def _read(self):
            for i in range(3):
                yield Item(id=f"item{i}", image=random_image(20 + i), caption=GALLERY[i])

    ds = Three(None)
    by_caption = dualex.explain_ranking(tiny_clip, random_image(1), ds, k=1, n_steps=2)
    assert by_caption.labels == GALLERY[:3] and by_caption.query_side == "image"
    by_image = dualex.explain_ranking(tiny_clip, "a red dog", ds, k=2, method="gradxinput")
    assert by_image.labels == ["item0", "item1", "item2"] and len(by_image.explanations) == 2
    own = tiny_clip.score(tiny_clip.prepare([random_image(20 + i) for i in range(3)], ["a red dog"] * 3)).score
    assert torch.equal(by_image.order, torch.sort(own, descending=True, stable=True).indices)


def test_sentence_bi_encoder_contrast_and_ranking():
    from dualex.testing import tiny_sentence

    model = tiny_sentence()
    con = dualex.contrast(model, "a red dog runs", "a dog runs home", "two blue cats", n_steps=3)
    assert con.x_side == "text" and abs(con.decomposition()["residual"]) <= 1e-4
    assert con.text_scores().shape == (len(con.a.tokens),)
    r = dualex.explain_ranking(model, "a red dog", ["a dog", "blue cats", "a red dog runs"], k=2, n_steps=2)
    assert r.query_side == "text" and bool((r.scores[r.order][:-1] >= r.scores[r.order][1:]).all())
