"""Explanation payloads of the viewer: caveats about the numbers."""

from __future__ import annotations

import warnings

import dualex
from dualex.testing import random_image
from dualex.viewer.catalog import caveats, explanation_payload


def test_an_underdetermined_fit_carries_a_caveat(tiny_clip) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ex = dualex.explain(tiny_clip, random_image(1), "a red dog on mat", method="fixlip", budget=64, n_boot=4)
    assert ex.diagnostics["underdetermined"] == 1.0
    (text,) = caveats(ex)
    assert "budget 64" in text and f"budget {int(ex.diagnostics['budget_needed']):,} would suffice" in text
    assert explanation_payload(ex, "x.safetensors")["caveats"] == [text]
    ok = dualex.explain(tiny_clip, random_image(1), "a red dog on mat", method="ij")
    assert caveats(ok) == []
