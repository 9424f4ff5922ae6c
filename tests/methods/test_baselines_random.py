"""Random baseline: shapes, seeds, specials and the distribution of the values."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dualex
from dualex.errors import InputError
from dualex.methods.baselines.random import draw
from dualex.testing import random_image

CAPTION = "a red dog on mat"


def test_shapes_seeds_and_specials(tiny_clip):
    a = dualex.explain(tiny_clip, random_image(1), CAPTION, method="random", seed=3)
    b = dualex.explain(tiny_clip, random_image(2), CAPTION, method="random", seed=3)  # the image is not used
    c = dualex.explain(tiny_clip, random_image(1), CAPTION, method="random", seed=4)
    S, P = len(a.tokens), a.n_patches
    assert a.cross.shape == (S, P) and a.text_main.shape == (S,) and a.image_main.shape == (P,)
    assert torch.equal(a.cross, b.cross) and not torch.equal(a.cross, c.cross)
    assert float(a.cross[a.special].abs().sum()) == 0.0 and float(a.text_main[a.special].abs().sum()) == 0.0
    assert float(a.cross[~a.special].abs().min()) > 0
    assert a.target is None and a.score == pytest.approx(c.score)
    first = dualex.explain(tiny_clip, random_image(1), CAPTION, method="random", order=1)
    assert first.cross is None and first.image_map().shape == first.grid


def test_batch_rows_get_what_their_single_call_gets(tiny_clip):
    rows = dualex.explain(tiny_clip, [random_image(1)] * 2, [CAPTION, "a dog"], method="random", seed=5)
    for row, caption in zip(rows, [CAPTION, "a dog"], strict=True):
        single = dualex.explain(tiny_clip, random_image(1), caption, method="random", seed=5)
        assert torch.equal(row.cross, single.cross) and torch.equal(row.text_main, single.text_main)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.floats(0.1, 10.0), distribution=st.sampled_from(["normal", "uniform"]))
def test_distribution(seed, scale, distribution):
    x = draw((20_000,), torch.Generator().manual_seed(seed), distribution, scale)
    assert abs(float(x.mean())) < 0.05 * scale
    sd = scale if distribution == "normal" else scale / 3**0.5
    assert float(x.std()) == pytest.approx(sd, rel=0.05)
    if distribution == "uniform":
        assert float(x.abs().max()) <= scale
    y = draw((20_000,), torch.Generator().manual_seed(seed), distribution, scale)
    assert torch.equal(x, y)


def test_bad_options(tiny_clip):
    img = random_image(1)
    with pytest.raises(InputError, match="order"):
        dualex.explain(tiny_clip, img, CAPTION, method="random", order=3)
    with pytest.raises(InputError, match="distribution"):
        dualex.explain(tiny_clip, img, CAPTION, method="random", distribution="cauchy")
    with pytest.raises(InputError, match="scale"):
        dualex.explain(tiny_clip, img, CAPTION, method="random", scale=0)
