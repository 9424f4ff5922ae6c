"""ij's steps hint: Riemann rules converge as 1/N, other rules get no hint."""

from __future__ import annotations

import math

from dualex.methods.ij_uncertainty import steps_hint


def test_riemann_steps_scale_with_the_relative_delta() -> None:
    assert steps_hint(0.1, 1.0, 10, "riemann_trapezoid") == 100  # 10 · 0.1 / 0.01
    assert steps_hint(-0.02, 2.0, 50, "riemann_right", target=0.01) == 50
    assert steps_hint(0.0, 1.0, 10, "riemann_trapezoid") == 1
    assert math.isnan(steps_hint(0.1, 1.0, 10, "gauss_legendre"))
