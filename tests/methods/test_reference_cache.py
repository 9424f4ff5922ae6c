"""`reference_hidden` returns exactly what the tower computes, reuses rows it has seen, and forgets them
when the weights change (in place, by moving, or by `clear`)."""

from __future__ import annotations

import torch

from dualex.methods import reference_cache
from dualex.methods.reference_cache import reference_hidden, row_key
from dualex.testing import random_image, tiny_hf_clip


def _refs(model):
    pair = model.prepare([random_image(0), random_image(1)], ["a red dog", "two blue cats sit on a mat"])
    return {
        side: model.tower(side).reference(pair.side(side), kind)
        for side, kind in (("text", "default"), ("image", "zeros"))
    }


def test_equals_the_tower_and_hits_on_repeat(monkeypatch):
    model = tiny_hf_clip(layers=3)
    refs = _refs(model)
    calls = []
    for side, ref in refs.items():
        tower = model.tower(side)
        with torch.no_grad():
            want = tower.hidden(ref, 2)
        got = reference_hidden(tower, ref, 2)
        assert torch.equal(got, want)
        original = type(tower).hidden
        monkeypatch.setattr(
            type(tower), "hidden", lambda self, i, layer, o=original: calls.append(1) or o(self, i, layer)
        )
        again = reference_hidden(tower, ref, 2)
        assert torch.allclose(again, want, rtol=1e-6, atol=1e-6) and not calls  # served from the cache, no pass
        again.add_(1.0)  # the caller's tensor is its own
        assert torch.allclose(reference_hidden(tower, ref, 2), want, rtol=1e-6, atol=1e-6)
        reference_hidden(tower, ref, 1)  # another layer is another entry
        assert calls
        calls.clear()
        monkeypatch.undo()


def test_rows_differ_by_content_not_by_position():
    model = tiny_hf_clip(layers=2)
    image = model.tower("image").reference(model.prepare([random_image(0)] * 2, ["a", "b"]).image, "zeros")
    assert row_key(image, 0) == row_key(image, 1)
    pair = model.prepare([random_image(0), random_image(0)], ["a red dog", "a red cat"])
    assert row_key(pair.text, 0) != row_key(pair.text, 1)
    assert row_key(pair.image, 0) == row_key(pair.image, 1)


def test_weight_changes_invalidate():
    model = tiny_hf_clip(layers=2)
    tower = model.tower("image")
    ref = _refs(model)["image"]
    before = reference_hidden(tower, ref, 2)
    with torch.no_grad():
        next(model.module.vision_model.parameters()).mul_(1.5)  # in place: the version counter moves
    after = reference_hidden(tower, ref, 2)
    with torch.no_grad():
        assert torch.equal(after, tower.hidden(ref, 2))
    assert not torch.equal(before, after)
    with torch.no_grad():
        next(model.module.vision_model.parameters()).data.mul_(2.0)  # bypasses version counters
    reference_cache.clear()
    with torch.no_grad():
        assert torch.equal(reference_hidden(tower, ref, 2), tower.hidden(ref, 2))
