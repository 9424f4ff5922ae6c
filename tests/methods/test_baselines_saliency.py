"""MaskCLIP, CLIP Surgery, LeGrad, rollout and RISE on tiny models: shapes, signs, seeds, hand-checked values."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dualex
from dualex.errors import InputError, UnsupportedModelError
from dualex.evaluation.run import evaluate
from dualex.evaluation.work import MetricOptions
from dualex.methods.baselines.attention import recorded_pass
from dualex.methods.baselines.rise import grid_masks, rise_saliency
from dualex.methods.baselines.rollout import rollout_matrix
from dualex.testing import random_image, tiny_hf_clip, tiny_hf_siglip, tiny_hf_siglip2, tiny_openclip, tiny_sentence

CAPTION = "a red dog on mat"
NEW = {"maskclip": {}, "clip_surgery": {}, "legrad": {}, "rollout": {}, "rise": {"budget": 48}}
IMAGE_ONLY = ("maskclip", "clip_surgery", "legrad")


@pytest.fixture(scope="module")
def one_layer():
    return tiny_hf_clip(seed=4, layers=1)


@pytest.fixture(scope="module", params=["hf-clip", "hf-siglip", "hf-siglip2", "openclip"])
def model(request):
    if request.param == "openclip":
        pytest.importorskip("open_clip")
        return tiny_openclip()
    return {"hf-clip": tiny_hf_clip, "hf-siglip": tiny_hf_siglip, "hf-siglip2": tiny_hf_siglip2}[request.param]()


@pytest.mark.parametrize("method", sorted(NEW))
def test_shapes_signs_and_determinism(model, method):
    a = dualex.explain(model, random_image(1), CAPTION, method=method, **NEW[method])
    b = dualex.explain(model, random_image(1), CAPTION, method=method, **NEW[method])
    assert a.cross is None and a.image_main.shape == (a.n_patches,) and torch.isfinite(a.image_main).all()
    assert torch.equal(a.image_main, b.image_main)
    if method in IMAGE_ONLY:
        assert a.text_main is None
    else:
        assert a.text_main.shape == (len(a.tokens),) and torch.equal(a.text_main, b.text_main)
    if method in ("maskclip", "clip_surgery"):
        assert float(a.image_main.abs().max()) <= (1.0 if method == "maskclip" else 2.0) + 1e-6
    if method in ("legrad", "rollout"):
        assert bool((a.image_main >= 0).all()) and float(a.image_main.sum()) > 0
    if method == "rollout":  # a row of a product of row-stochastic matrices
        assert float(a.image_main.sum()) + a.diagnostics["image_prefix"] == pytest.approx(1.0, abs=1e-5)
        assert float(a.text_main.sum()) == pytest.approx(1.0, abs=1e-5)


def test_rollout_matrix_by_hand():
    A = torch.tensor([[[0.8, 0.2], [0.4, 0.6]]])  # one head
    one = torch.tensor([[0.9, 0.1], [0.2, 0.8]])  # ½ A + ½ I
    torch.testing.assert_close(rollout_matrix([A]), one)
    torch.testing.assert_close(rollout_matrix([A, A]), torch.tensor([[0.83, 0.17], [0.34, 0.66]]))
    two_heads = torch.stack([A[0], torch.eye(2)])  # max fusion, then rows re-normalised
    expected = torch.tensor([[1.0, 0.1], [0.2, 1.0]]) / torch.tensor([[1.1], [1.2]])
    torch.testing.assert_close(rollout_matrix([two_heads], "max"), expected)
    with pytest.raises(InputError, match="head_fusion"):
        rollout_matrix([A], "median")


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    layers=st.integers(1, 4),
    heads=st.integers(1, 3),
    T=st.integers(1, 6),
    fusion=st.sampled_from(["mean", "max", "min"]),
)
def test_rollout_is_row_stochastic(seed, layers, heads, T, fusion):
    """Law: for any attention probabilities, R is non-negative and each row sums to 1."""
    g = torch.Generator().manual_seed(seed)
    probs = [torch.rand(heads, T, T, generator=g).softmax(-1) for _ in range(layers)]
    R = rollout_matrix(probs, fusion)
    assert bool((R >= 0).all())
    torch.testing.assert_close(R.sum(-1), torch.ones(T))


def test_one_layer_rollout_against_eager_attention(one_layer):
    """One block: the CLS row is ½ mean_h A[CLS] + ½ e_CLS, with A from transformers' eager attention."""
    model = one_layer
    pair = model.prepare(random_image(2), CAPTION)
    model.module.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            A = model.module.vision_model(pixel_values=pair.image.pixels, output_attentions=True).attentions[0]
    finally:
        model.module.set_attn_implementation("sdpa")
    row = 0.5 * A[0, :, 0, :].mean(0)
    row[0] += 0.5
    ex = dualex.explain(model, random_image(2), CAPTION, method="rollout", side="image")
    torch.testing.assert_close(ex.image_main, row[1:], atol=1e-6, rtol=1e-5)
    assert ex.diagnostics["image_prefix"] == pytest.approx(float(row[0]), abs=1e-6)


def test_maskclip_by_hand(one_layer):
    """The last block with identity attention, CLIP's head on every patch, cosine with the caption."""
    model, vm = one_layer, one_layer.module.vision_model
    pair = model.prepare(random_image(3), CAPTION)
    layer = vm.encoder.layers[0]
    with torch.no_grad():
        x = vm.pre_layrnorm(vm.embeddings(pair.image.pixels))
        x1 = x + layer.self_attn.out_proj(layer.self_attn.v_proj(layer.layer_norm1(x)))
        x2 = x1 + layer.mlp(layer.layer_norm2(x1))
        z = model.module.visual_projection(vm.post_layernorm(x2))[0, 1:]
        t = model.tower("text").encode(pair.text)
    expected = torch.nn.functional.cosine_similarity(z, t, dim=-1)
    ex = dualex.explain(model, random_image(3), CAPTION, method="maskclip")
    torch.testing.assert_close(ex.image_main, expected, atol=1e-5, rtol=1e-4)


def test_clip_surgery_by_hand(one_layer):
    """One block of value-value attention (no MLP), CLIP's head per patch, minus the empty reference."""
    model, vm = one_layer, one_layer.module.vision_model
    pair = model.prepare(random_image(4), CAPTION)
    attn = vm.encoder.layers[0].self_attn
    with torch.no_grad():
        x = vm.pre_layrnorm(vm.embeddings(pair.image.pixels))
        v = attn.v_proj(vm.encoder.layers[0].layer_norm1(x)).reshape(1, x.shape[1], 4, 8).transpose(1, 2)
        o = ((v @ v.transpose(-1, -2)) * attn.scale).softmax(-1) @ v
        x_new = x + attn.out_proj(o.transpose(1, 2).reshape(1, x.shape[1], 32))
        z = torch.nn.functional.normalize(model.module.visual_projection(vm.post_layernorm(x_new))[0, 1:], dim=-1)
        t = torch.nn.functional.normalize(model.tower("text").encode(pair.text), dim=-1)[0]
        text = model.tower("text")
        r = torch.nn.functional.normalize(text.encode(text.reference(pair.text, "default")), dim=-1)
    ex = dualex.explain(model, random_image(4), CAPTION, method="clip_surgery")
    torch.testing.assert_close(ex.image_main, z @ (t - r[0]), atol=1e-5, rtol=1e-4)
    plain = dualex.explain(model, random_image(4), CAPTION, method="clip_surgery", redundant="none")
    torch.testing.assert_close(plain.image_main, z @ t, atol=1e-5, rtol=1e-4)
    with pytest.raises(InputError, match="depth"):
        dualex.explain(model, random_image(4), CAPTION, method="clip_surgery", depth=2)


@pytest.mark.parametrize("name", ["hf-clip", "siglip", "openclip"])
def test_legrad_last_layer_matches_the_recorded_gradient(name):
    """Block views (A in the graph) and the recording's (∂f/∂O) Vᵀ give the same last-layer ∂cos/∂A."""
    if name == "openclip":
        pytest.importorskip("open_clip")
    model = {"hf-clip": tiny_hf_clip, "siglip": tiny_hf_siglip, "openclip": tiny_openclip}[name]()
    pair = model.prepare(random_image(5), CAPTION)
    run = recorded_pass(model, {"text": pair.text, "image": pair.image}, ("image",), "cosine")
    site, grad = run.recordings["image"].blocks[-1], run.grads["image"][-1]
    expected = site.probs_grad(grad)[0].clamp_min(0.0).mean(dim=(0, 1))
    ex = dualex.explain(model, random_image(5), CAPTION, method="legrad", start_layer=-1)
    torch.testing.assert_close(ex.image_main, expected[pair.image.players(0)], atol=1e-6, rtol=1e-4)
    more = dualex.explain(model, random_image(5), CAPTION, method="legrad", start_layer=0)
    assert float((more.image_main - ex.image_main).min()) >= -1e-7  # more layers only add (ReLU terms)
    with pytest.raises(InputError, match="start_layer"):
        dualex.explain(model, random_image(5), CAPTION, method="legrad", start_layer=2)


def test_rise_estimator_and_masks_by_hand():
    scores = torch.tensor([1.0, 2.0, 3.0])
    masks = torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.bool)
    torch.testing.assert_close(rise_saliency(scores, masks, 0.5), torch.tensor([2.0, 10.0 / 3.0]))
    g = torch.Generator().manual_seed(0)
    m = grid_masks(2000, (6, 6), 2, 0.3, g)
    assert m.shape == (2000, 36) and abs(float(m.float().mean()) - 0.3) < 0.02
    iid = grid_masks(1, (3, 5), 1, 0.5, torch.Generator().manual_seed(1)).reshape(3, 5)
    assert iid.shape == (3, 5)
    # cells of 2 patches: without shift a mask is constant on aligned 2 x 2 blocks; shifts break alignment
    blocks = m.reshape(-1, 6, 6)
    aligned = blocks[:, 0::2, 0::2] == blocks[:, 1::2, 1::2]
    assert bool(aligned.float().mean() > 0.6) and not bool(aligned.all())


def test_rise_seed_side_units_and_every_adapter(tiny_clip):
    a = dualex.explain(tiny_clip, random_image(6), CAPTION, method="rise", budget=32, seed=3)
    b = dualex.explain(tiny_clip, random_image(6), CAPTION, method="rise", budget=32, seed=3)
    c = dualex.explain(tiny_clip, random_image(6), CAPTION, method="rise", budget=32, seed=4)
    assert torch.equal(a.image_main, b.image_main) and not torch.equal(a.image_main, c.image_main)
    assert bool((a.text_main[a.special] == 0).all()) and float(a.text_main[~a.special].abs().sum()) > 0
    img = dualex.explain(tiny_clip, random_image(6), CAPTION, method="rise", budget=32, seed=3, side="image")
    assert img.text_main is None and torch.equal(img.image_main, a.image_main)  # image masks are drawn first
    score = dualex.explain(tiny_clip, random_image(6), CAPTION, method="rise", budget=32, seed=3, units="score",
                           side="image")  # fmt: skip
    torch.testing.assert_close(score.image_main, a.image_main * tiny_clip.logit_scale, rtol=1e-4, atol=1e-5)
    for bad in ({"budget": 0}, {"p": 1.0}, {"p": 0}, {"cell": 0}, {"seed": 1.5}):
        with pytest.raises(InputError):
            dualex.explain(tiny_clip, random_image(6), CAPTION, method="rise", **bad)
    sentence = tiny_sentence()
    ex = dualex.explain(sentence, "a man is eating", "a dog plays", method="rise", budget=16)
    assert ex.image_main.shape == (ex.n_patches,) and ex.text_main.shape == (len(ex.tokens),)


def test_attention_methods_refuse_models_without_attention_internals():
    model = tiny_sentence()  # post-norm BERT layers: recorded (rollout works), not runnable as pre-norm blocks
    for method in ("maskclip", "clip_surgery", "legrad"):
        with pytest.raises(UnsupportedModelError, match=r"has no (pre-norm attention blocks|a head)"):
            dualex.explain(model, "a man is eating", "a dog plays", method=method)


def test_new_methods_run_in_evaluate(tmp_path, tiny_clip):
    from dualex.evaluation import read_run

    evaluate(tiny_clip, "shapes:", sorted(NEW), tmp_path / "run", dataset_options={"n": 1},
             method_options={"rise": {"budget": 16}}, metrics=MetricOptions(faith_coalitions=8))  # fmt: skip
    df = read_run(tmp_path / "run")
    pair = df[df.level == "pair"]
    assert sorted(pair.method) == sorted(NEW) and pair.error.isna().all()
    assert df[df.level == "object"].pg_energy_t2i.notna().all()


@pytest.mark.parametrize(("method", "opts"), [("maskclip", {}), ("clip_surgery", {}),
                                              ("clip_surgery", {"redundant": "none", "depth": 1}), ("rollout", {}),
                                              ("rollout", {"side": "text", "head_fusion": "max"})])  # fmt: skip
def test_batch_equals_pair_by_pair(model, method, opts):
    from dualex.methods import explain_pair

    captions = ["a red dog runs home", "a cat", "two small blue birds sit on a long fence"]
    pair = model.prepare([random_image(k) for k in range(3)], captions)
    batch = explain_pair(model, pair, method, internal_batch_size=2, **opts)  # passes of 2 pairs, then 1
    for b, ex in enumerate(batch):
        one = explain_pair(model, pair.select([b]), method, **opts)[0]
        for name in ("text_main", "image_main"):
            x, y = getattr(ex, name), getattr(one, name)
            assert (x is None) == (y is None)
            if x is not None:
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
        assert ex.diagnostics == pytest.approx(one.diagnostics, rel=1e-5, abs=1e-6)
