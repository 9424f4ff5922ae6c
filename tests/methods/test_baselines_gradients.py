"""Gradient × input and integrated gradients: shapes, determinism, completeness, the one-step identity."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dualex
from dualex.errors import InputError
from dualex.testing import random_image, tiny_hf_siglip

CAPTION = "a red dog runs home"


@pytest.fixture(scope="module")
def siglip():
    return tiny_hf_siglip()


@pytest.mark.parametrize("side", ["both", "text", "image"])
def test_shapes_and_fields(tiny_clip, side):
    ex = dualex.explain(tiny_clip, random_image(1), CAPTION, method="ig", side=side, n_steps=4)
    S, P = len(ex.tokens), ex.n_patches
    assert ex.cross is None
    assert (ex.text_main is not None) == (side in ("both", "text"))
    assert (ex.image_main is not None) == (side in ("both", "image"))
    if ex.text_main is not None:
        assert ex.text_main.shape == (S,)
    if ex.image_main is not None:
        assert ex.image_main.shape == (P,) == (16,)
    assert ex.params["side"] == side and ex.method == "ig"
    with pytest.raises(InputError, match="no token × patch"):
        ex.image_map("dog")


def test_deterministic(tiny_clip):
    kw = {"method": "ig", "n_steps": 5, "layer": 1}
    a = dualex.explain(tiny_clip, random_image(2), CAPTION, **kw)
    b = dualex.explain(tiny_clip, random_image(2), CAPTION, **kw)
    assert torch.equal(a.text_main, b.text_main) and torch.equal(a.image_main, b.image_main)


@pytest.mark.parametrize("side", ["both", "image"])
def test_completeness_error_shrinks(tiny_clip, side):
    errors = []
    for n in (2, 6, 18):
        ex = dualex.explain(
            tiny_clip, random_image(3), CAPTION, method="ig", side=side, n_steps=n, quadrature="riemann_right"
        )
        errors.append(abs(ex.diagnostics["convergence_delta"]))
        # the same-length text reference and zero image reference are real inputs: path = reference
        assert ex.diagnostics["path_target"] == pytest.approx(ex.target, abs=1e-6)
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 0.2 * errors[0]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layer=st.sampled_from([0, 1, -1]), side=st.sampled_from(["both", "text", "image"]), seed=st.integers(0, 9))
def test_ig_completeness_law(tiny_clip, layer, side, seed):
    """Σ attributions = f(x) − f(reference) up to the quadrature error (Gauss–Legendre, 24 nodes)."""
    ex = dualex.explain(tiny_clip, random_image(seed), CAPTION, method="ig", side=side, layer=layer, n_steps=24)
    total = ex.diagnostics["attributed_total"]
    assert total == pytest.approx(ex.diagnostics["path_target"], abs=2e-4 + 1e-3 * abs(ex.diagnostics["path_target"]))
    # Explanation.completeness sees everything but the image prefix (CLS) positions
    assert ex.completeness()["attributed"] + ex.diagnostics.get("image_prefix", 0.0) == pytest.approx(total, abs=1e-6)


def test_score_units_scale(tiny_clip):
    cos = dualex.explain(tiny_clip, random_image(4), CAPTION, method="ig", n_steps=4)
    score = dualex.explain(tiny_clip, random_image(4), CAPTION, method="ig", n_steps=4, units="score")
    torch.testing.assert_close(score.image_main, cos.image_main * tiny_clip.logit_scale, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("baselines", ["default", {"text": "same_length", "image": "black"}])
def test_gradxinput_is_one_step_ig(tiny_clip, baselines):
    """With a reference, gradient × (x − r) is integrated gradients with one right-Riemann node (α = 1)."""
    g = dualex.explain(tiny_clip, random_image(5), CAPTION, method="gradxinput", baselines=baselines, layer=1)
    i = dualex.explain(
        tiny_clip,
        random_image(5),
        CAPTION,
        method="ig",
        baselines=baselines,
        layer=1,
        n_steps=1,
        quadrature="riemann_right",
    )
    assert torch.equal(g.text_main, i.text_main) and torch.equal(g.image_main, i.image_main)
    assert g.target is None


@pytest.mark.filterwarnings("ignore:gradxinput with multiply_by_inputs=False")  # the vanishing sums: tested below
def test_gradxinput_matches_autograd(tiny_clip):
    """Plain gradient × input at layer 0 of the image tower, checked against a direct autograd call."""
    pair = tiny_clip.prepare(random_image(6), CAPTION)
    ex = dualex.explain(tiny_clip, random_image(6), CAPTION, method="gradxinput", side="image")
    grad_only = dualex.explain(
        tiny_clip, random_image(6), CAPTION, method="gradxinput", side="image", multiply_by_inputs=False
    )
    with torch.no_grad():
        e_t = tiny_clip.tower("text").encode(pair.text)
        x = tiny_clip.tower("image").hidden(pair.image, 0)
    x = x.clone().requires_grad_(True)
    f = torch.nn.functional.cosine_similarity(tiny_clip.tower("image").tail(pair.image, x, 0), e_t).sum()
    (g,) = torch.autograd.grad(f, x)
    torch.testing.assert_close(ex.image_main, (g * x).sum(-1)[0, 1:].detach(), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(grad_only.image_main, g.sum(-1)[0, 1:], rtol=1e-4, atol=1e-7)


def test_batch_rows_match_single(tiny_clip):
    imgs, caps = [random_image(7), random_image(8)], [CAPTION, "a cat"]
    both = dualex.explain(tiny_clip, imgs, caps, method="ig", n_steps=3)
    one = dualex.explain(tiny_clip, imgs[1], caps[1], method="ig", n_steps=3)
    torch.testing.assert_close(both[1].image_main, one.image_main, rtol=1e-4, atol=1e-7)


def test_siglip_completeness(siglip):
    ex = dualex.explain(siglip, random_image(9), "a red dog on mat", method="ig", n_steps=16, baselines="default")
    assert ex.text_main.shape == (16,) and ex.image_main.shape == (16,)
    assert ex.diagnostics["convergence_delta"] == pytest.approx(0.0, abs=1e-3)


def test_bad_options(tiny_clip):
    img = random_image(1)
    with pytest.raises(InputError, match="side"):
        dualex.explain(tiny_clip, img, CAPTION, method="ig", side="left")
    with pytest.raises(InputError, match="units"):
        dualex.explain(tiny_clip, img, CAPTION, method="ig", units="logits")
    with pytest.raises(InputError, match="baselines keys"):
        dualex.explain(tiny_clip, img, CAPTION, method="ig", baselines={"caption": "default"})
    with pytest.raises(InputError, match="n_steps"):
        dualex.explain(tiny_clip, img, CAPTION, method="ig", n_steps=0)
    with pytest.raises(InputError, match="image reference"):
        dualex.explain(tiny_clip, img, CAPTION, method="ig", baselines={"image": "purple"})


@pytest.mark.parametrize(("side", "multiply", "which"),
                         [("both", True, "clip"), ("text", False, "clip"), ("image", True, "clip"),
                          ("both", True, "siglip")])  # fmt: skip
@pytest.mark.filterwarnings("ignore:gradxinput with multiply_by_inputs=False")  # the vanishing sums: tested below
def test_gradxinput_batch_equals_pair_by_pair(request, side, multiply, which):
    from dualex.methods import explain_pair

    enc = request.getfixturevalue("tiny_clip" if which == "clip" else "siglip")
    captions = [CAPTION, "a cat", "two small blue birds sit on a long fence"]  # padded to the longest
    pair = enc.prepare([random_image(k) for k in range(3)], captions)
    kw = {"method": "gradxinput", "side": side, "multiply_by_inputs": multiply, "layer": 1}
    batch = explain_pair(enc, pair, internal_batch_size=2, **kw)  # two passes: 2 pairs, then 1
    for b, ex in enumerate(batch):
        one = explain_pair(enc, pair.select([b]), **kw)[0]
        for name in ("text_main", "image_main"):
            x, y = getattr(ex, name), getattr(one, name)
            assert (x is None) == (y is None)
            if x is not None:
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
        assert ex.diagnostics == pytest.approx(one.diagnostics, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    ("method", "opts"),
    [
        ("ig", {"n_steps": 4, "internal_batch_size": 8}),  # 2 pairs per pass, then 1
        ("ig", {"n_steps": 3, "side": "image", "baselines": "zeros", "internal_batch_size": 3, "units": "score"}),
        ("gradxinput", {"baselines": "default", "internal_batch_size": 2}),
    ],
)
def test_path_methods_batch_equals_pair_by_pair(tiny_clip, method, opts):
    from dualex.methods import explain_pair

    captions = [CAPTION, "a cat", "two small blue birds sit on a long fence"]
    pair = tiny_clip.prepare([random_image(k) for k in range(3)], captions)
    batch = explain_pair(tiny_clip, pair, method, layer=1, **opts)
    for b, ex in enumerate(batch):
        one = explain_pair(tiny_clip, pair.select([b]), method, layer=1, **opts)[0]
        for name in ("text_main", "image_main"):
            x, y = getattr(ex, name), getattr(one, name)
            assert (x is None) == (y is None)
            if x is not None:
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
        if one.target is None:
            assert ex.target is None
        else:
            assert ex.target == pytest.approx(one.target, rel=1e-6, abs=1e-7)
        assert ex.diagnostics == pytest.approx(one.diagnostics, rel=1e-5, abs=1e-6)


def test_plain_gradient_summed_over_the_width_vanishes_behind_layernorm_and_warns(tiny_clip):
    with pytest.warns(UserWarning, match="identically 0 where the hidden states enter a LayerNorm"):
        ex = dualex.explain(tiny_clip, random_image(3), CAPTION, method="gradxinput", multiply_by_inputs=False)
    assert float(ex.image_main.abs().max()) < 1e-5 and float(ex.text_main.abs().max()) < 1e-5
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dualex.explain(tiny_clip, random_image(3), CAPTION, method="gradxinput")  # the default: no warning


def test_cls_share_is_zero_at_layer_0_only_with_a_reference(tiny_clip):
    img = random_image(4)
    with_ref = dualex.explain(tiny_clip, img, CAPTION, method="gradxinput", side="image", baselines="zeros")
    plain = dualex.explain(tiny_clip, img, CAPTION, method="gradxinput", side="image")
    assert with_ref.diagnostics["image_prefix"] == 0.0
    assert abs(plain.diagnostics["image_prefix"]) > 1e-6


def test_trapezoid_is_the_exact_rule_and_captums_times_n_minus_1_over_n():
    from dualex.methods.quadrature import alphas_and_weights

    n = 16
    a, w = alphas_and_weights(n, "riemann_trapezoid")
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-15)
    assert float((w * a**2).sum()) == pytest.approx(1 / 3 + 1 / (6 * (n - 1) ** 2), abs=1e-12)  # trapezoid error
    captum = torch.full((n,), 1.0 / n, dtype=torch.float64)  # captum 0.9: steps of 1/n, ends halved
    captum[0] = captum[-1] = 0.5 / n
    assert torch.allclose(w, captum * n / (n - 1))
    assert "(N − 1)/N" in (alphas_and_weights.__doc__ or "")
