"""open_clip models with timm, ModifiedResNet and CoCa towers (`dualex.models.openclip_towers`).

Each tiny family must reproduce open_clip's own embeddings, explain with ij, fixlip and gradxinput
(finite, non-zero), and FIxLIP on a CNN tower (input-space patches) must equal the exact weighted
Banzhaf computation, as it does for ViTs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dualex
from dualex.errors import InputError, ModelNotAvailableError
from dualex.games.exact import enumerate_coalitions, exact_fixlip
from dualex.games.game import DualEncoderGame
from dualex.games.surrogate import surrogate_of
from dualex.methods import explain_pair
from dualex.testing import OPENCLIP_FAMILY_ARCHS, random_image, tiny_openclip_family, tiny_pair_inputs

pytest.importorskip("open_clip")
pytest.importorskip("timm")


@pytest.fixture(scope="module", params=OPENCLIP_FAMILY_ARCHS)
def family(request):
    model = tiny_openclip_family(request.param, seed=1)
    return request.param, model, model.prepare(*tiny_pair_inputs(model))


def test_embeddings_are_open_clips_own(family):
    arch, model, pair = family
    module = model.module
    ids = pair.text.ids[:, :-1] if arch.startswith("coca") else pair.text.ids  # CoCa: the CLS slot is open_clip's
    with torch.no_grad():
        torch.testing.assert_close(
            model.tower("text").encode(pair.text), module.encode_text(ids, normalize=False), rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            model.tower("image").encode(pair.image),
            module.encode_image(pair.image.pixels, normalize=False),
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.parametrize(
    ("method", "options"), [("ij", {"n_steps": 4}), ("fixlip", {"budget": 64}), ("gradxinput", {})]
)
def test_methods_give_finite_non_zero_results(family, method, options):
    _, model, _ = family
    images, captions = tiny_pair_inputs(model)
    ex = dualex.explain(model, images[0], captions[0], method=method, **options)
    values = ex.cross if ex.cross is not None else torch.cat([ex.text_main, ex.image_main])
    assert torch.isfinite(values).all() and float(values.abs().sum()) > 0
    rows, cols = ex.grid
    assert (ex.cross.shape[1] if ex.cross is not None else ex.image_main.shape[0]) == rows * cols


def test_ij_maps_sit_on_the_split_stages_grid():
    model = tiny_openclip_family("RN50", seed=1)
    tower = model.tower("image")
    for layer, grid in ((0, (16, 16)), (-1, (4, 4)), (4, (2, 2))):
        ex = dualex.explain(model, random_image(1), "a red dog", method="ij", n_steps=2, image_layer=layer)
        assert ex.grid == grid and ex.cross.shape[1] == grid[0] * grid[1]
    assert tower.layer_unit == "stage" and tower.mask_grid == (2, 2)


CAPTION = "red dog sits"  # 3 players


@pytest.fixture(scope="module")
def resnet():
    """The tiny RN50: a 2 × 2 grid of 32-px input patches + 3 tokens = 7 players (128 coalitions)."""
    model = tiny_openclip_family("RN50", seed=1)
    return model, model.prepare(random_image(1), CAPTION)


def test_cnn_masking_is_input_space_patches(resnet):
    model, pair = resnet
    tower = model.tower("image")
    keep = torch.tensor([[True, False, False, True], [False, True, True, False]])
    for how, fill in (("default", torch.zeros(3)), ("black", tower.pipeline.black().flatten())):
        masked = tower.mask(pair.image, keep, how=how)
        px = pair.image.pixels[:1].repeat(2, 1, 1, 1)
        for k in range(2):
            for cell in range(4):
                if not keep[k, cell]:
                    r, c = divmod(cell, 2)
                    px[k, :, 32 * r : 32 * (r + 1), 32 * c : 32 * (c + 1)] = fill[:, None, None]
        with torch.no_grad():
            ref = model.module.encode_image(px, normalize=False)
            torch.testing.assert_close(tower.encode(masked), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_fixlip_on_a_cnn_tower_is_exact_at_full_budget(resnet, p):
    model, pair = resnet
    game = DualEncoderGame(model, pair)
    V = game.grid(enumerate_coalitions(4), enumerate_coalitions(3)).cpu().numpy()
    truth = exact_fixlip(V.T.reshape(-1), p)
    ex = explain_pair(model, pair, "fixlip", p=p, budget=2**7, holdout=0)[0]
    got = surrogate_of(ex)
    assert ex.diagnostics["n_values"] == 128
    assert got.intercept == pytest.approx(truth.intercept, abs=1e-5)
    torch.testing.assert_close(got.main, truth.main, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.pair_matrix(), truth.pair_matrix(), atol=1e-5, rtol=0)
    assert np.isfinite(ex.cross.numpy()).all() and float(ex.cross.abs().sum()) > 0


def test_coca_captions_carry_the_cls_slot_as_a_special_part():
    model = tiny_openclip_family("coca_ViT-B-32", seed=1)
    t = model.tower("text").prepare(["a red dog"])
    assert t.tokens[0][-1] == "<cls>" and bool(t.special[0, -1]) and int(t.pool_index[0]) == t.ids.shape[1] - 1
    ref = model.tower("text").reference(t, "same_length")
    assert ref.ids.shape == t.ids.shape and bool(ref.special.all())


def test_hub_tokenizers_are_refused_offline_with_a_way_out():
    with pytest.raises(ModelNotAvailableError, match="tokenizer="):
        dualex.load("openclip:ViT-B-16-SigLIP@random", device="cpu")
    with pytest.raises(InputError, match="take no tokenizer"):
        dualex.load("shapes", tokenizer=object())
