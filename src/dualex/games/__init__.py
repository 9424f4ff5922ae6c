"""Cooperative-game machinery behind FIxLIP: samplers, 2-additive WLS solvers, exact enumeration.

* `sampler`: coalition samplers with regression weights (weighted Banzhaf μ_p, Shapley kernel).
* `regression`: `fit_surrogate` (any coalitions and weights) and `fit_product_surrogate` (image ×
  text grids, solved through the Kronecker structure without a dense design matrix).
* `exact`: weighted Banzhaf values/interactions and exact FIxLIP-p for small games.
* `game`: value functions of dual encoders over coalitions of patches and tokens.
* `shapiq_io`: conversion to and from ``shapiq.InteractionValues`` (optional dependency).
"""

from __future__ import annotations

from dualex.games.exact import (
    enumerate_coalitions,
    exact_fixlip,
    game_values,
    weighted_banzhaf_interactions,
    weighted_banzhaf_values,
)
from dualex.games.regression import (
    Surrogate,
    all_pairs,
    clique_pairs,
    cross_pairs,
    fit_product_surrogate,
    fit_surrogate,
)
from dualex.games.sampler import (
    CoalitionSample,
    banzhaf_kernel,
    sample_banzhaf,
    sample_coalitions,
    sample_shapley,
    shapley_kernel,
    split_budget,
)

__all__ = [
    "CoalitionSample",
    "Surrogate",
    "all_pairs",
    "banzhaf_kernel",
    "clique_pairs",
    "cross_pairs",
    "enumerate_coalitions",
    "exact_fixlip",
    "fit_product_surrogate",
    "fit_surrogate",
    "game_values",
    "sample_banzhaf",
    "sample_coalitions",
    "sample_shapley",
    "shapley_kernel",
    "split_budget",
    "weighted_banzhaf_interactions",
    "weighted_banzhaf_values",
]
