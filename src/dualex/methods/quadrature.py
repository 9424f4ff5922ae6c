"""Quadrature rules for path integrals over α ∈ [0, 1]."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError

RULES = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def alphas_and_weights(n_steps: int, rule: str = "riemann_right") -> tuple[Tensor, Tensor]:
    """Nodes α_n and weights w_n (Σ w_n = 1) approximating ``∫_0^1 f(α) dα ≈ Σ_n w_n f(α_n)``.

    ``riemann_right`` is α = k/N, k = 1..N (exCLIP's right Riemann sum, built from explicit integers
    so that float rounding never adds a point), ``gausslegendre`` the N-point Gauss–Legendre rule
    (exact for polynomials of degree 2N − 1). Both float64, shape ``(N,)``.

    The rule names are captum's ``method`` names, and ``riemann_right``, ``riemann_left``,
    ``riemann_middle`` and ``gausslegendre`` give captum's nodes and weights (``ig`` equals captum's
    ``LayerIntegratedGradients`` to 1e-7 with them). ``riemann_trapezoid`` does not: dualex's is the
    exact composite trapezoid rule, nodes α = k/(N − 1), k = 0..N−1, weights 1/(N − 1) with the two
    ends halved, summing to 1; captum 0.9 puts its nodes at the same places but uses steps of 1/N
    (ends halved), whose weights sum to (N − 1)/N. So dualex's trapezoid attributions are N/(N − 1)
    times captum's (16/15 at N = 16) and add up to f(x) − f(r) as N grows, captum's to (N − 1)/N of it.
    """
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
        raise InputError(f"n_steps must be a positive integer, got {n_steps!r}")
    N = n_steps
    k = torch.arange(N, dtype=torch.float64)
    if rule in ("riemann_right", "riemann", "right"):
        return (k + 1) / N, torch.full((N,), 1.0 / N, dtype=torch.float64)
    if rule in ("riemann_left", "left"):
        return k / N, torch.full((N,), 1.0 / N, dtype=torch.float64)
    if rule in ("riemann_middle", "middle"):
        return (k + 0.5) / N, torch.full((N,), 1.0 / N, dtype=torch.float64)
    if rule in ("riemann_trapezoid", "trapezoid"):
        if N < 2:
            raise InputError("the trapezoid rule needs n_steps >= 2")
        a = k / (N - 1)
        w = torch.full((N,), 1.0 / (N - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (N - 1)
        return a, w
    if rule in ("gausslegendre", "gauss_legendre", "gauss"):
        nodes, gl_weights = np.polynomial.legendre.leggauss(N)
        return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(gl_weights / 2)
    raise InputError(f"unknown quadrature {rule!r}; use one of {', '.join(RULES)}")
