"""The open_clip adapter against open_clip's own forward pass (tiny random models, real CLIP BPE)."""

from __future__ import annotations

import copy
import os
from dataclasses import replace

import pytest
import torch
from torch.func import jacrev, jvp

import dualex
from dualex.errors import InputError, ModelNotAvailableError, UnsupportedModelError
from dualex.models import openclip as oc
from dualex.models.parts import masked_pixels
from dualex.testing import random_image, tiny_openclip

open_clip = pytest.importorskip("open_clip")
from open_clip.model import CLIPTextCfg, CLIPVisionCfg  # noqa: E402

CAPTIONS = ["a red dog", "two cats on a mat!"]  # different lengths; "!" is id 0 like the padding
CTX = 24


def _vision(**kw) -> CLIPVisionCfg:
    base = {"layers": 2, "width": 32, "head_width": 8, "mlp_ratio": 2.0, "patch_size": 8, "image_size": 32}
    return CLIPVisionCfg(**{**base, **kw})


def _text(**kw) -> CLIPTextCfg:
    base = {"context_length": CTX, "width": 32, "heads": 4, "layers": 2, "mlp_ratio": 2.0}
    return CLIPTextCfg(**{**base, **kw})


def _variant(kind: str) -> dualex.DualEncoder:
    """Tiny models covering the supported towers, pooling types, projections and block types."""
    torch.manual_seed(1)
    if kind == "clip":
        return tiny_openclip()
    if kind == "eos":
        return tiny_openclip(pool_type="eos")
    if kind == "custom-text":  # bidirectional, pools last, Linear projection, avg image pool, logit bias
        module = open_clip.CustomTextCLIP(
            16,
            _vision(pool_type="avg", final_ln_after_pool=True, no_ln_pre=True),
            _text(no_causal_mask=True, pool_type="last", proj_bias=True),
            init_logit_bias=-3.0,
        )
    elif kind == "custom-blocks":  # CustomResidualAttentionBlock with every option + layer scale
        extra = {"qk_norm": True, "scale_heads": True, "scale_attn_inner": True, "scale_attn": True, "scale_fc": True}
        module = open_clip.CLIP(16, _vision(ls_init_value=0.5, **extra), _text(ls_init_value=0.5, **extra))
        with torch.no_grad():  # move the identity-initialised scales away from 1 so that they matter
            for name, p in module.named_parameters():
                if "head_scale" in name:
                    p.uniform_(0.5, 1.5)
    else:
        raise AssertionError(kind)
    return dualex.wrap(module.eval(), name=f"tiny-{kind}")


@pytest.fixture(scope="module")
def model():
    return tiny_openclip()


@pytest.fixture(scope="module")
def pair(model):
    return model.prepare([random_image(0), random_image(1, (50, 30))], CAPTIONS)


def full_ids(model, ids: torch.Tensor) -> torch.Tensor:
    """Pad (trimmed) ids back to the context length, as open_clip's own tokenizer gives them."""
    out = torch.zeros(ids.shape[0], model.context_length, dtype=torch.long)
    out[:, : ids.shape[1]] = ids
    return out


def own_text(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.module.encode_text(full_ids(model, ids))


def own_image(model, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.module.encode_image(pixels)


# ------------------------------------------------------------------------------------------ equality
@pytest.mark.parametrize("layer", [0, 1, 2, -1])
def test_tail_of_hidden_equals_own_embeddings(model, pair, layer):
    with torch.no_grad():
        e_txt = model.tower("text").tail(pair.text, model.tower("text").hidden(pair.text, layer), layer)
        e_img = model.tower("image").tail(pair.image, model.tower("image").hidden(pair.image, layer), layer)
    torch.testing.assert_close(e_txt, own_text(model, pair.text.ids), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e_img, own_image(model, pair.image.pixels), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["eos", "custom-text", "custom-blocks"])
def test_variants_match_own_embeddings_and_logits(kind):
    model = _variant(kind)
    pair = model.prepare([random_image(2), random_image(3)], CAPTIONS)
    for layer in range(model.tower("text").n_layers + 1):
        with torch.no_grad():
            e_txt = model.tower("text").tail(pair.text, model.tower("text").hidden(pair.text, layer), layer)
            e_img = model.tower("image").tail(pair.image, model.tower("image").hidden(pair.image, layer), layer)
        torch.testing.assert_close(e_txt, own_text(model, pair.text.ids), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(e_img, own_image(model, pair.image.pixels), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        logits, _ = model.module.get_logits(pair.image.pixels, full_ids(model, pair.text.ids))
    torch.testing.assert_close(model.score(pair).score, logits.diagonal(), atol=1e-4, rtol=1e-5)


def test_score_is_own_logits(model, pair):
    scores = model.score(pair)
    with torch.no_grad():
        logits, _ = model.module.get_logits(pair.image.pixels, full_ids(model, pair.text.ids))
    torch.testing.assert_close(scores.score, logits.diagonal(), atol=1e-4, rtol=1e-5)
    assert model.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    assert model.logit_bias == 0.0
    assert _variant("custom-text").logit_bias == pytest.approx(-3.0)


# ------------------------------------------------------------------------------------------ inputs
def test_inputs_structure(model, pair):
    t, i = pair.text, pair.image
    assert t.ids.shape[1] == 8  # trimmed after the longest EOT: lossless for a causal tower pooled there
    assert t.ids[0, :5].tolist() == [49406, 320, 736, 1929, 49407]
    assert t.pool_index.tolist() == [4, 7]
    assert t.players(0).tolist() == [1, 2, 3]
    assert t.players(1).tolist() == [1, 2, 3, 4, 5, 6]  # the "!" (id 0) before EOT is a word
    assert t.tokens[1][6] == "!</w>" and t.offsets[1][6] == (17, 18)
    assert i.n_prefix == 1 and i.grid == (4, 4) and tuple(i.pixels.shape) == (2, 3, 32, 32)
    assert model.tower("image").hidden(i, 1).shape == (2, 17, 32)
    assert model.tower("text").n_layers == model.tower("image").n_layers == 2


def test_untrimmed_for_towers_that_see_padding():
    model = _variant("custom-text")
    t = model.tower("text").prepare(CAPTIONS)
    assert t.ids.shape[1] == CTX and t.pool_index.tolist() == [CTX - 1, CTX - 1]


def test_pipeline_follows_preprocess_cfg():
    model = tiny_openclip()
    open_clip.set_model_preprocess_cfg(
        model.module, {"size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "resize_mode": "squash"}
    )
    pipe = oc.pipeline_from_module(model.module)
    assert pipe.mode == "resize" and tuple(pipe.mean) == (0.5, 0.5, 0.5) and pipe.crop == (32, 32)
    default = oc.pipeline_from_module(tiny_openclip().module)
    assert default.mode == "resize_center_crop" and default.size == 32


# ------------------------------------------------------------------------------------------ masking
def test_image_masking_zeroes_exactly_the_removed_patches(model, pair):
    keep = torch.ones(2, 16, dtype=torch.bool)
    keep[1, 5] = False  # row 1, column 1 of the 4x4 grid
    out = model.tower("image").mask(pair.image, keep)
    out = replace(out, pixels=masked_pixels(out))  # removals are applied after the patch embedding
    torch.testing.assert_close(out.pixels[0], pair.image.pixels[0])
    assert torch.all(out.pixels[1, :, 8:16, 8:16] == 0)
    rest = torch.ones(32, 32, dtype=torch.bool)
    rest[8:16, 8:16] = False
    torch.testing.assert_close(out.pixels[1][:, rest], pair.image.pixels[0][:, rest])
    black = model.tower("image").mask(pair.image, keep, how="black")
    black = replace(black, pixels=masked_pixels(black))
    torch.testing.assert_close(black.pixels[1, :, 8, 8], model.pipeline.black().flatten())


def _own_text_blocking(model, ids: torch.Tensor, blocked: list[int]) -> torch.Tensor:
    """open_clip's own transformer with a causal mask that also hides the keys ``blocked``."""
    m = model.module
    S = ids.shape[1]
    x = m.token_embedding(ids) + m.positional_embedding[:S]
    mask = torch.full((S, S), float("-inf")).triu(1)
    mask[:, blocked] = float("-inf")  # BOS stays visible, so no query row is empty
    with torch.no_grad():
        h = m.ln_final(m.transformer(x, attn_mask=mask))
        eos = ids.argmax(-1)
        return h[torch.arange(ids.shape[0]), eos] @ m.text_projection


def test_text_attention_masking_hides_the_token(model, pair):
    one = pair.text.select([1])
    keep = torch.ones(3, 6, dtype=torch.bool)
    keep[1, 2] = False  # "on" at position 3
    keep[2, [0, 5]] = False  # "two" and "!"
    out = model.tower("text").mask(one, keep)
    assert out.mask[1].tolist() == [1, 1, 1, 0, 1, 1, 1, 1] and torch.equal(out.ids, one.ids.expand(3, -1))
    with torch.no_grad():
        e = model.tower("text").encode(out)
    torch.testing.assert_close(e[0], own_text(model, one.ids)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e[1], _own_text_blocking(model, one.ids, [3])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e[2], _own_text_blocking(model, one.ids, [1, 6])[0], atol=1e-5, rtol=1e-5)


def test_text_pad_masking_is_the_filler_sequence(model, pair):
    one = pair.text.select([0])
    out = model.tower("text").mask(one, torch.tensor([[True, False, True]]), how="pad")
    assert out.ids[0].tolist()[:5] == [49406, 320, 0, 1929, 49407] and torch.equal(out.mask, one.mask)
    with torch.no_grad():
        e = model.tower("text").encode(out)
    torch.testing.assert_close(e, own_text(model, out.ids), atol=1e-5, rtol=1e-5)


def test_bad_coalitions_and_masking_kinds(model, pair):
    with pytest.raises(InputError, match="3\\)"):
        model.tower("text").mask(pair.text, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(InputError, match="16"):
        model.tower("image").mask(pair.image, torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(InputError, match="masking"):
        model.tower("text").mask(pair.text, torch.ones(1, 3, dtype=torch.bool), how="blur")


# ------------------------------------------------------------------------------------------ references
def test_text_references(model, pair):
    ref = model.tower("text").reference(pair.text, "default")
    S = pair.text.ids.shape[1]
    assert ref.ids[0].tolist() == [49406, 0, 49407] + [0] * (S - 3)
    assert ref.mask[0].tolist() == [1, 1, 1] + [0] * (S - 3)
    assert ref.pool_index.tolist() == [2, 2] and bool(ref.special.all())
    same = model.tower("text").reference(pair.text, "same_length")
    assert same.ids[0].tolist() == [49406, 0, 0, 0, 49407, 0, 0, 0]
    assert same.ids[1].tolist() == [49406, 0, 0, 0, 0, 0, 0, 49407]
    assert same.pool_index.tolist() == pair.text.pool_index.tolist()
    with torch.no_grad():
        torch.testing.assert_close(model.tower("text").encode(same), own_text(model, same.ids), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="reference"):
        model.tower("text").reference(pair.text, "zeros")


def test_image_references(model, pair):
    assert torch.all(model.tower("image").reference(pair.image, "zeros").pixels == 0)
    black = model.tower("image").reference(pair.image, "black").pixels
    torch.testing.assert_close(black[1, :, 3, 3], model.pipeline.black().flatten())
    noise = model.tower("image").reference(pair.image, "noise").pixels
    assert noise.shape == pair.image.pixels.shape and noise.std() > 0.5
    with pytest.raises(InputError, match="reference"):
        model.tower("image").reference(pair.image, "blur")


# ------------------------------------------------------------------------------------------ autodiff
@pytest.mark.parametrize("side", ["text", "image"])
@pytest.mark.parametrize("kind", ["clip", "custom-blocks"])
def test_jvp_through_tail_matches_finite_differences(kind, side):
    model = copy.copy(_variant(kind))
    model._module = copy.deepcopy(model.module).double()  # float64, so central differences are exact enough
    pair = model.prepare([random_image(4)], ["a red dog on a mat"])
    inputs = pair.side(side)
    if side == "text":  # a removed word exercises the extra key mask too
        inputs = model.tower("text").mask(inputs, torch.tensor([[True, False, True, True, True, True]]))
    x = model.tower(side).hidden(inputs, 1)
    assert x.dtype == torch.float64
    tangent = torch.randn_like(x)

    def f(h):
        return model.tower(side).tail(inputs, h, 1)

    value, forward = jvp(f, (x,), (tangent,))  # no context manager: the tail writes attention out
    eps = 1e-6
    central = (f(x + eps * tangent) - f(x - eps * tangent)) / (2 * eps)
    torch.testing.assert_close(value, f(x))
    torch.testing.assert_close(forward, central, atol=1e-7, rtol=1e-6)
    reverse = (jacrev(f)(x) * tangent[None, None]).flatten(2).sum(-1)
    torch.testing.assert_close(forward, reverse.reshape_as(forward), atol=1e-10, rtol=1e-8)


def test_tail_broadcasts_one_input_row(model, pair):
    one = pair.text.select([0])
    x = model.tower("text").hidden(one, 1).expand(3, -1, -1)
    with torch.no_grad():
        e = model.tower("text").tail(one, x, 1)
    assert e.shape == (3, 16) and torch.allclose(e[0], e[2])


# ------------------------------------------------------------------------------------------ errors
def test_bad_layers_and_inputs(model, pair):
    for layer in (3, -3, 1.5, True):
        with pytest.raises(InputError, match="layer"):
            model.tower("text").hidden(pair.text, layer)
    with pytest.raises(InputError, match="32, 32"):
        model.tower("image").hidden(replace(pair.image, pixels=torch.zeros(2, 3, 40, 40)), 0)
    with pytest.raises(InputError, match="TextInputs"):
        model.tower("text").hidden(pair.image, 0)
    with pytest.raises(InputError, match="empty"):
        model.prepare(random_image(0), "   ")
    with pytest.raises(InputError):
        model.prepare("/no/such/image.png", "a dog")


def test_unsupported_towers():
    from dualex.models.openclip_towers import OpenClipTowers

    # an attentional pooler (CoCa's) goes to the towers adapter; an unknown pool type is refused
    pooled = dualex.wrap(open_clip.CLIP(16, _vision(attentional_pool=True, attn_pooler_heads=2), _text()))
    assert isinstance(pooled, OpenClipTowers)
    with pytest.raises(UnsupportedModelError, match="pool type"):
        dualex.wrap(open_clip.CLIP(16, _vision(), _text(pool_type="none")))


def test_wrap_defaults_to_the_clip_bpe_tokenizer():
    torch.manual_seed(0)
    module = open_clip.CLIP(16, _vision(), _text())
    model = dualex.wrap(module)
    assert isinstance(model, oc.OpenClipEncoder) and model.name == "openclip:CLIP"
    t = model.tower("text").prepare(["a photo of a cat"])
    assert t.ids[0].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert t.tokens[0][5] == "cat</w>"


# ------------------------------------------------------------------------------------------ loading
def test_load_errors_are_plain(monkeypatch):
    with pytest.raises(ModelNotAvailableError, match="ViT-B-32"):
        dualex.load("openclip:ViT-B-3")
    with pytest.raises(ModelNotAvailableError, match=r"known tags: .*openai"):
        dualex.load("openclip:ViT-B-32@no_such_tag")
    for name in ("openclip:ViT-B-32", "openclip:ViT-B-32@", "openclip:ViT-B-32@ "):  # random only on request
        with pytest.raises(InputError, match=r"names no weights|empty pretrained tag.*ViT-B-32@random"):
            dualex.load(name)
    with pytest.raises(ModelNotAvailableError, match="checkpoint file not found"):
        dualex.load("openclip:ViT-B-32@/no/such/open_clip_pytorch_model.bin")
    monkeypatch.setattr(oc, "cached_checkpoint", lambda cfg: None)
    with pytest.raises(ModelNotAvailableError, match=r"openclip:ViT-B-32@/path/to/open_clip_pytorch_model\.bin"):
        dualex.load("openclip:ViT-B-32@openai")


def test_cached_checkpoint_looks_only_at_local_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = {"url": "https://example.invalid/models/abc/ViT-X.pt"}
    assert oc.cached_checkpoint(cfg) is None
    (tmp_path / ".cache" / "clip").mkdir(parents=True)
    (tmp_path / ".cache" / "clip" / "ViT-X.pt").write_bytes(b"x")
    assert oc.cached_checkpoint(cfg) == str(tmp_path / ".cache" / "clip" / "ViT-X.pt")
    assert oc.cached_checkpoint({"file": str(tmp_path / "missing.bin")}) is None
    assert oc.cached_checkpoint({"hf_hub": "no-such-org/no-such-model/"}) is None


@pytest.mark.slow
def test_random_vit_b_32_loads_by_name():
    model = dualex.load("openclip:ViT-B-32@random", device="cpu")
    assert isinstance(model, oc.OpenClipEncoder) and model.name == "openclip:ViT-B-32@random"
    assert model.tower("image").n_layers == model.tower("text").n_layers == 12
    assert model.pipeline.crop == (224, 224) and model.image_size == (224, 224)
    pair = model.prepare(random_image(0), "a photo of a dog")
    assert pair.image.grid == (7, 7) and pair.text.ids.shape[1] == 7
    with torch.no_grad():
        e = model.tower("text").tail(pair.text, model.tower("text").hidden(pair.text, 11), 11)
    torch.testing.assert_close(e, own_text(model, pair.text.ids), atol=1e-5, rtol=1e-4)


TINY_ARCH_SCRIPT = """
import hashlib, sys
import open_clip, torch
from open_clip import factory
factory._MODEL_CONFIGS["dualex-tiny-vit"] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
import dualex
torch.manual_seed(int(sys.argv[2]))  # the caller's random state must not matter
model = dualex.load(sys.argv[1], device="cpu")
h = hashlib.sha256()
for name, t in sorted(model.module.state_dict().items()):
    h.update(name.encode()); h.update(t.detach().float().numpy().tobytes())
print(model.name, model.weights_seed, h.hexdigest())
"""


def _load_in_subprocess(spec: str, caller_seed: int) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", TINY_ARCH_SCRIPT, spec, str(caller_seed)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow  # two fresh interpreters
def test_random_weights_are_seeded_and_the_same_in_every_process():
    first = _load_in_subprocess("openclip:dualex-tiny-vit@random", 1)
    second = _load_in_subprocess("openclip:dualex-tiny-vit@random:0", 2)
    assert first.split()[1:] == second.split()[1:] and first.split()[1] == "0"


def test_random_weights_seed_is_recorded_and_checked(monkeypatch):
    from open_clip import factory

    from dualex.models.registry import random_weights_seed

    monkeypatch.setitem(factory._MODEL_CONFIGS, "dualex-tiny-vit", {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    })  # fmt: skip
    state = torch.random.get_rng_state()
    model = dualex.load("openclip:dualex-tiny-vit@random:3", device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone
    assert model.weights_seed == 3 and model.name == "openclip:dualex-tiny-vit@random:3"
    again = dualex.load("openclip:dualex-tiny-vit@random:3", device="cpu")
    other = dualex.load("openclip:dualex-tiny-vit@random", device="cpu")
    weights = [next(iter(m.module.state_dict().values())) for m in (model, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    ex = dualex.explain(model, random_image(0, size=(32, 32)), "a dog", method="random")
    assert ex.params["weights_seed"] == 3 and ex.model == "openclip:dualex-tiny-vit@random:3"
    assert random_weights_seed("openclip:X@random") == 0 and random_weights_seed("openclip:X@random:12") == 12
    assert random_weights_seed("openclip:X@/path/ckpt.bin") is None and random_weights_seed("shapes") is None
    with pytest.raises(InputError, match=r"seed after '@random:' must be a non-negative integer, got 'x'"):
        dualex.load("openclip:dualex-tiny-vit@random:x", device="cpu")


def test_run_manifest_records_the_weights_seed(monkeypatch, tmp_path):
    import json

    from open_clip import factory

    from dualex.evaluation.run import MetricOptions, evaluate

    monkeypatch.setitem(factory._MODEL_CONFIGS, "dualex-tiny-vit", {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    })  # fmt: skip
    evaluate("openclip:dualex-tiny-vit@random", "shapes:", ["random"], tmp_path / "run", dataset_options={"n": 1},
             metrics=MetricOptions(metrics=("completeness",)), device="cpu")  # fmt: skip
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"] == "openclip:dualex-tiny-vit@random" and manifest["model_weights_seed"] == 0

