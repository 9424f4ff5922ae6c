"""Pointing games on hand-made explanations whose scores are known."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dualex
from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.images import ImageTransform
from dualex.metrics import pointing_game, pointing_game_recognition, positive_energy
from dualex.testing import random_image

CAPTION = "red circle blue square"
TOKENS = ["<bos>", "red", "circle", "blue", "square", "<eos>"]
OFFSETS = [None, (0, 3), (4, 10), (11, 15), (16, 22), None]
SPECIAL = torch.tensor([True, False, False, False, False, True])


def make(cross: torch.Tensor | None, *, grid=(2, 2), size=32, **kw) -> Explanation:
    """An explanation of CAPTION over a size×size image mapped 1:1 onto the model input."""
    tf = ImageTransform((size, size), (size, size), 1.0, 1.0)
    return Explanation(
        cross=cross, tokens=TOKENS, special=SPECIAL, text=CAPTION, grid=grid, score=1.0, cosine=0.1,
        method="hand", token_offsets=OFFSETS, image_size=(size, size), image_transform=tf, **kw,
    )  # fmt: skip


def test_span_to_box_energy_and_hit():
    cross = torch.zeros(6, 4)
    # "red circle" map over patches (TL, TR, BL, BR) = [3, 1, 0, -2]: positive mass 4, 3 of it top-left.
    cross[1] = torch.tensor([2.0, 1.0, 0.0, -1.0])
    cross[2] = torch.tensor([1.0, 0.0, 0.0, -1.0])
    ex = make(cross)
    r = pointing_game(ex, "red circle", (0, 0, 16, 16))
    assert r.energy_t2i == pytest.approx(0.75)
    assert r.hit_t2i == 1.0
    assert r.span_box == pytest.approx(3.0)
    r = pointing_game(ex, "red circle", (16, 0, 32, 16))  # top-right: 1 of 4, argmax elsewhere
    assert r.energy_t2i == pytest.approx(0.25)
    assert r.hit_t2i == 0.0
    r = pointing_game(ex, "red circle", [(16, 0, 32, 16), (0, 0, 16, 16)])  # union of two boxes
    assert r.energy_t2i == pytest.approx(1.0)


def test_box_to_span_excludes_special_tokens():
    cross = torch.zeros(6, 4)
    cross[:, 3] = torch.tensor([100.0, -1.0, 0.5, 2.0, 1.5, 100.0])  # huge BOS/EOS values must not count
    ex = make(cross)
    r = pointing_game(ex, "blue square", (16, 16, 32, 32))
    assert r.energy_i2t == pytest.approx(3.5 / 4.0)
    assert r.hit_i2t == 1.0
    r = pointing_game(ex, "circle", (16, 16, 32, 32))
    assert r.energy_i2t == pytest.approx(0.5 / 4.0)
    assert r.hit_i2t == 0.0


def test_character_spans_and_errors():
    cross = torch.zeros(6, 4)
    cross[3, 2] = 1.0
    ex = make(cross)
    r = pointing_game(ex, {"start": 11, "end": 15}, (0, 16, 16, 32))
    assert (r.energy_t2i, r.hit_t2i) == (1.0, 1.0)
    with pytest.raises(InputError):
        pointing_game(ex, {"start": 30, "end": 40}, (0, 16, 16, 32))
    with pytest.raises(InputError):
        pointing_game(ex, "dog", (0, 16, 16, 32))


def test_no_positive_mass_gives_zero_energy():
    ex = make(-torch.ones(6, 4))
    r = pointing_game(ex, "red", (0, 0, 16, 16))
    assert r.energy_t2i == 0.0 and r.energy_i2t == 0.0


def test_box_patch_rule_half_overlap():
    # a box covering half of the right column's patches on a 2x2 grid of 16 px patches
    cross = torch.zeros(6, 4)
    cross[1] = torch.tensor([0.0, 1.0, 0.0, 1.0])
    ex = make(cross)
    assert pointing_game(ex, "red", (24, 0, 32, 32)).energy_t2i == pytest.approx(1.0)  # 50 % overlap counts
    assert pointing_game(ex, "red", (25, 0, 32, 32)).energy_t2i == pytest.approx(1.0)  # < 50 %: best patch(es)
    assert pointing_game(ex, "red", (0, 0, 20, 32)).energy_t2i == 0.0  # right column covered 25 %: out


def test_first_order_explanations_use_unconditional_maps():
    ex = make(None, text_main=torch.tensor([0.0, 1.0, 0.0, 3.0, 0.0, 0.0]), image_main=torch.tensor([0.0, 2.0, 0, 0]))
    r = pointing_game(ex, "red", (16, 0, 32, 16))
    assert (r.energy_t2i, r.hit_t2i) == (1.0, 1.0)
    assert r.energy_i2t == pytest.approx(0.25) and r.hit_i2t == 0.0
    assert math.isnan(r.span_box)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-5, 5, allow_nan=False), min_size=24, max_size=24),
    st.floats(0.01, 100),
    st.integers(1, 4),
)
def test_pointing_laws(values, scale, word):
    cross = torch.tensor(values).reshape(6, 4)
    ex = make(cross)
    box = (0, 0, 16, 32)
    r = pointing_game(ex, (word, word + 1), box)
    for v in (r.energy_t2i, r.energy_i2t):
        assert 0.0 <= v <= 1.0
    r2 = pointing_game(make(cross * scale), (word, word + 1), box)  # invariant to positive scaling
    # float32 sums: scaling changes the rounding by a few ulps of the total, so compare at 1e-5
    assert r2.energy_t2i == pytest.approx(r.energy_t2i, rel=1e-5) and r2.hit_t2i == r.hit_t2i
    assert r2.energy_i2t == pytest.approx(r.energy_i2t, rel=1e-5) and r2.hit_i2t == r.hit_i2t
    # energy inside a box + energy in its complement = 1 whenever there is positive mass
    if float(cross[word].clamp(min=0).sum()) > 0:
        rc = pointing_game(ex, (word, word + 1), (16, 0, 32, 32))
        assert r.energy_t2i + rc.energy_t2i == pytest.approx(1.0)


def test_positive_energy_with_valid_mask():
    v = torch.tensor([5.0, 1.0, 1.0, -3.0])
    assert positive_energy(v, torch.tensor([False, True, False, False]), valid=torch.tensor([False, True, True, True]))\
        == pytest.approx(0.5)


QUADS = [(0, 0, 16, 16), (16, 0, 32, 16), (0, 16, 16, 32), (16, 16, 32, 32)]


def test_pgr_second_order_known_value():
    cross = torch.zeros(6, 4)
    cross[1] = torch.tensor([2.0, -1.0, 0.0, 1.0])  # "red" lives in cell 0: in=[2], out=[-1, 0, 1]
    cross[3] = torch.tensor([0.0, 0.0, -1.0, 3.0])  # "blue" lives in cell 3: in=[3], out=[0, 0, -1]
    ex = make(cross)
    r = pointing_game_recognition(ex, ["red", "blue"], [0, 3], QUADS)
    assert r.per_object == pytest.approx([3 / 4, 4 / 4])
    assert r.pgr == pytest.approx((3 + 4) / (4 + 4))


def test_pgr_first_order_counts_token_on_both_sides():
    ex = make(None, text_main=torch.tensor([0, 1.0, 0, 0, 0, 0]), image_main=torch.tensor([1.0, 1.0, 1.0, 1.0]))
    r = pointing_game_recognition(ex, ["red"], [0], QUADS)
    # in = [1, e_t=1], out = [1, 1, 1, e_t=1]: correct 2, wrong 4 -> 1/3 (a uniform map scores ~1/4 + token)
    assert r.pgr == pytest.approx(2 / 6)


def test_pgr_on_odd_grid_ignores_middle_row_and_column():
    # a 2x2 composition of 448 px seen on a 7x7 grid: middle row/column (index 3) belong to no cell
    size, g = 448, 7
    cross = torch.zeros(6, g * g)
    m = torch.zeros(g, g)
    m[:3, :3] = 1.0  # all in the top-left cell
    m[3, :] = -50.0  # huge mass on the middle row: ignored
    m[:, 3] = 50.0
    cross[1] = m.flatten()
    ex = make(cross, grid=(g, g), size=size)
    half = size / 2
    cells = [(0, 0, half, half), (half, 0, size, half), (0, half, half, size), (half, half, size, size)]
    assert pointing_game_recognition(ex, ["red"], [0], cells).pgr == pytest.approx(1.0)


def test_pgr_random_sign_noise_is_about_half():
    g = torch.Generator().manual_seed(0)
    vals = []
    for _ in range(200):
        ex = make(torch.randn(6, 4, generator=g))
        vals.append(pointing_game_recognition(ex, ["red", "circle"], [0, 1], QUADS).pgr)
    assert sum(vals) / len(vals) == pytest.approx(0.5, abs=0.05)


def test_image_only_first_order_explanations_have_no_box_to_span_score(tiny_clip):
    ex = dualex.explain(tiny_clip, random_image(0), "a red dog on mat", method="grad_eclip", side="image")
    r = pointing_game(ex, "dog", (0, 0, 16, 16))
    assert math.isnan(r.energy_i2t) and math.isnan(r.hit_i2t) and 0.0 <= r.energy_t2i <= 1.0
    both = pointing_game(dualex.explain(tiny_clip, random_image(0), "a red dog on mat", method="grad_eclip"),
                         "dog", (0, 0, 16, 16))  # fmt: skip
    assert not math.isnan(both.energy_i2t)


@pytest.mark.parametrize(("boxes", "area"), [((0, 0, 16, 16), 0.25), ([(16, 0, 32, 16), (0, 0, 16, 16)], 0.5),
                                             ((0, 0, 32, 32), 1.0)])  # fmt: skip
def test_box_area_is_the_energy_of_a_uniform_map(boxes, area):
    uniform = make(torch.ones(6, 4))
    r = pointing_game(uniform, "red circle", boxes)
    assert r.box_area == pytest.approx(area) == pytest.approx(r.energy_t2i)
    assert r.as_dict()["box_area"] == pytest.approx(area)
    cross = torch.zeros(6, 4)
    cross[1, 0] = 1.0  # all mass on the top-left patch
    assert pointing_game(make(cross), "red", boxes).box_area == pytest.approx(area)  # a property of the box alone
