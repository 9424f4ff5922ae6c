"""Every baseline is registered with its order and cost, and its explanations survive save/load."""

from __future__ import annotations

import math

import pytest
import torch

import dualex
from dualex.explanation import Explanation
from dualex.methods import list_methods
from dualex.testing import random_image

FAST = {
    "gradxinput": {},
    "ig": {"n_steps": 2},
    "grad_eclip": {},
    "game": {},
    "interaction_cam": {},
    "interaction_lime": {"budget": 64},
    "fixlip_si": {"budget": 32},
    "random": {},
    "maskclip": {},
    "clip_surgery": {},
    "legrad": {},
    "rollout": {},
    "rise": {"budget": 16},
}
ORDERS = {
    "gradxinput": 1,
    "ig": 1,
    "grad_eclip": 1,
    "game": 1,
    "maskclip": 1,
    "clip_surgery": 1,
    "legrad": 1,
    "rollout": 1,
    "rise": 1,
}


def test_registered():
    methods = list_methods()
    for name in FAST:
        info = methods[name]
        assert info.order == ORDERS.get(name, 2) and info.summary and info.cost


@pytest.mark.parametrize("name", sorted(FAST))
def test_save_load_round_trip(tiny_clip, tmp_path, name):
    ex = dualex.explain(tiny_clip, random_image(1), "a red dog on mat", method=name, **FAST[name])
    back = Explanation.load(ex.save(tmp_path / name))
    assert back.method == name and back.params == ex.params and back.diagnostics == pytest.approx(
        {k: v if math.isfinite(v) else math.nan for k, v in ex.diagnostics.items()}, nan_ok=True
    )
    for field in ("cross", "cross_prefix", "text_main", "image_main", "text_pairs", "image_pairs"):
        a, b = getattr(ex, field), getattr(back, field)
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b)
    assert set(back.stderr) == set(ex.stderr)
    for field, se in ex.stderr.items():
        assert torch.equal(se, back.stderr[field])
