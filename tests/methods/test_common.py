from __future__ import annotations

import pytest
import torch

from dualex.errors import InputError
from dualex.methods.common import (
    check_units,
    positive_int,
    row_explanation,
    scores_of,
    side_terms,
    sides_of,
    split_prefix,
)
from dualex.testing import random_image, tiny_hf_clip


@pytest.fixture(scope="module")
def model_and_pair():
    model = tiny_hf_clip()
    pair = model.prepare([random_image(0), random_image(1)], ["red dog", "a blue cat"])
    return model, pair


def test_split_prefix_separates_patches_from_cls(model_and_pair):
    _, pair = model_and_pair
    n_prefix, n_patches = pair.image.n_prefix, pair.image.n_patches
    values = torch.arange(float(n_prefix + n_patches))
    patches, prefix = split_prefix(values, pair.image, 0)
    assert torch.equal(patches, values[n_prefix:]) and torch.equal(prefix, values[:n_prefix])
    rows = torch.stack([values, -values])  # (S, T): split along the last dimension
    patches2, prefix2 = split_prefix(rows, pair.image, 0)
    assert patches2.shape == (2, n_patches) and prefix2.shape == (2, n_prefix)
    no_prefix, none = split_prefix(values[n_prefix:], pair.image.__class__(**{**pair.image.__dict__, "n_prefix": 0}), 0)
    assert torch.equal(no_prefix, values[n_prefix:]) and none is None


def test_side_terms(model_and_pair):
    _, pair = model_and_pair
    n_prefix = pair.image.n_prefix
    values = torch.linspace(-1, 1, n_prefix + pair.image.n_patches)
    terms, diag = side_terms("image", values, pair.image, 1)
    assert torch.equal(terms["image_main"], values[n_prefix:])
    assert diag == {"image_prefix": pytest.approx(float(values[:n_prefix].sum()))}
    text = torch.arange(5.0)
    assert side_terms("text", text, pair.image, 1) == ({"text_main": text}, {})


def test_row_explanation_carries_the_row_scores(model_and_pair):
    model, pair = model_and_pair
    scores = scores_of(model, pair)
    assert scores[0].shape == scores[1].shape == (2,)
    ex = row_explanation(model, pair, 1, scores, method="probe", params={"k": 1}, cross=None)
    assert ex.score == pytest.approx(float(scores[0][1])) and ex.cosine == pytest.approx(float(scores[1][1]))
    assert ex.text == "a blue cat" and ex.method == "probe" and ex.params == {"k": 1}
    assert ex.grid == pair.image.grid


def test_option_checks():
    assert sides_of("both") == ("text", "image") and sides_of("image") == ("image",)
    assert check_units("score") == "score" and positive_int("n", 3) == 3
    for bad in (lambda: sides_of("left"), lambda: check_units("prob"), lambda: positive_int("n", 0),
                lambda: positive_int("n", True)):  # fmt: skip
        with pytest.raises(InputError):
            bad()
