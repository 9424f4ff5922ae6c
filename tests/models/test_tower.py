"""`Tower`: one object per side; the split at every layer reproduces `encode`, on every family."""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.errors import InputError
from dualex.models.tower import Tower
from dualex.testing import TINY_FAMILIES, tiny_hf_clip, tiny_pair_inputs


@pytest.fixture(scope="module", params=sorted(TINY_FAMILIES))
def family(request):
    model = TINY_FAMILIES[request.param]()
    pair = model.prepare(*tiny_pair_inputs(model))
    return request.param, model, pair


def test_towers_are_towers_with_a_modality(family):
    _, model, _ = family
    text, image = model.towers
    assert isinstance(text, Tower) and isinstance(image, Tower)
    assert model.tower("text") is text and model.tower("image") is image
    assert text.modality == "text"
    assert image.modality in ("image", "text")
    assert text.n_layers >= 1 and image.n_layers >= 1


def test_hidden_plus_tail_is_encode_at_every_layer(family):
    _, model, pair = family
    for side in ("text", "image"):
        tower, inputs = model.tower(side), pair.side(side)
        with torch.no_grad():
            e = tower.encode(inputs)
            for layer in range(tower.n_layers + 1):
                tail = tower.tail(inputs, tower.hidden(inputs, layer), layer)
                torch.testing.assert_close(tail, e, rtol=1e-5, atol=1e-5)


def test_ij_completeness(family):
    model = family[1]
    ex = dualex.explain(model, *_raw_pair(model), method="ij", n_steps=16, quadrature="gauss")
    d = ex.diagnostics
    assert abs(d["convergence_delta"]) < 1e-2 * max(abs(d["path_target"]), 1e-6)
    assert torch.isfinite(ex.cross).all() and float(ex.cross.abs().sum()) > 0


def _raw_pair(model):
    second, captions = tiny_pair_inputs(model)
    return second[0], captions[0]


def test_check_layer_names_the_tower_and_its_units():
    model = tiny_hf_clip()
    tower = model.tower("image")
    assert tower.check_layer(-1) == tower.n_layers - 1
    with pytest.raises(InputError, match=r"the image tower of .* has 2 blocks, so layers 0..2"):
        tower.check_layer(3)


def test_with_module_rebinds_the_towers():
    import copy

    model = tiny_hf_clip()
    twin = model.with_module(copy.deepcopy(model.module))
    assert twin.tower("text").owner is twin and model.tower("text").owner is model
