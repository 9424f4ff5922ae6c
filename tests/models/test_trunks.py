"""Image trunks split unit by unit (`dualex.models.trunks`): every split reproduces open_clip's own image
embedding, tails are pure under forward- and reverse-mode AD, and layouts follow the units."""

from __future__ import annotations

import pytest
import torch

from dualex.errors import InputError, UnsupportedModelError
from dualex.models.trunks import ModifiedResNetTrunk, Trunk, timm_trunk
from dualex.tiny import tiny_openclip_arch

pytest.importorskip("open_clip")
pytest.importorskip("timm")

# one architecture per timm class and head shape open_clip uses, and the OpenAI ResNet
ARCHS = {
    "convnext_base": "stage",  # ConvNeXt, timm head (norm + pool) + linear projection
    "convnext_large_d": "stage",  # ConvNeXt, MLP projection
    "EVA02-B-16": "block",  # Eva with RoPE, token pooling, timm fc head
    "EVA01-g-14": "block",  # Eva without RoPE
    "PE-Core-B-16": "block",  # Eva, attention-pool (map) head
    "MobileCLIP2-S0": "stage",  # FastViT MCi
    "swin_base_patch4_window7_224": "stage",  # Swin, channels-last stages
    "ViT-B-16-SigLIP": "block",  # timm ViT, map head, no projection
    "vit_medium_patch16_gap_256": "block",  # timm ViT, average pooling
    "vit_relpos_medium_patch16_cls_224": "block",  # relative-position ViT
    "ViTamin-B": "block",  # ViT over a MBConv stem
    "MobileCLIP-B": "block",  # hybrid ViT (conv stem)
    "RN50": "stage",  # open_clip ModifiedResNet, attention pool
}


def trunk_of(module: torch.nn.Module) -> Trunk:
    v = module.visual
    if type(v).__name__ == "ModifiedResNet":
        return ModifiedResNetTrunk(v)
    return timm_trunk(v.trunk, v.image_size, v.head)


@pytest.fixture(scope="module", params=sorted(ARCHS))
def built(request):
    module = tiny_openclip_arch(request.param)
    return request.param, module, trunk_of(module)


def test_every_split_reproduces_open_clips_image_embedding(built):
    _, module, trunk = built
    x = torch.randn(2, 3, *trunk.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = module.encode_image(x)
        for layer in range(trunk.n_layers + 1):
            h = trunk.hidden(x, layer)
            n_prefix, (rows, cols) = trunk.layout(layer)
            assert h.shape[:2] == (2, n_prefix + rows * cols)
            torch.testing.assert_close(trunk.tail(h, layer), ref, rtol=1e-5, atol=1e-5)


def test_tails_are_pure_under_jvp_and_vjp(built):
    trunk = built[2]
    x = torch.randn(1, 3, *trunk.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h = trunk.hidden(x, 0)
    t = torch.randn(h.shape, generator=torch.Generator().manual_seed(2))
    f = lambda z: trunk.tail(z, 0)  # noqa: E731
    _, jv = torch.func.jvp(f, (h,), (t,))
    out, vjp = torch.func.vjp(f, h)
    (g,) = vjp(torch.ones_like(out))
    # <J t, 1> = <t, Jᵀ 1>: forward and reverse mode agree
    torch.testing.assert_close(jv.sum(), (g * t).sum(), rtol=1e-4, atol=1e-4)
    assert bool(jv.abs().sum() > 0)


def test_layouts_follow_the_units(built):
    arch, _, trunk = built
    grids = [trunk.layout(layer)[1] for layer in range(trunk.n_layers + 1)]
    if ARCHS[arch] == "block":
        assert len(set(grids)) == 1  # one token grid at every block
    else:
        assert grids[0][0] > grids[-1][0]  # stages shrink the map
    with pytest.raises(InputError, match="out of range"):
        trunk.layout(trunk.n_layers + 1)


def test_unknown_timm_classes_are_named():
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_efficientnet", num_classes=0)
    with pytest.raises(UnsupportedModelError, match="EfficientNet"):
        timm_trunk(model, (32, 32))
