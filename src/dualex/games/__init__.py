"""The masking game of a dual encoder and its 2-additive surrogates: used by FIxLIP and the metrics alike.

* `game`: `DualEncoderGame`, the one (cached) value function over coalitions of patches and tokens
  (image players first, then caption players — the one player order).
* `surrogate`: `Surrogate`, the one surrogate type; `surrogate_of` / `explanation_terms` read an
  `Explanation` into one and back; `fit_quality` scores predictions of a game.
* `sampler`: ``sample_*`` (distinct coalitions with regression weights) and ``draw_*`` (plain draws
  from μ_p for evaluation).
* `regression`: `fit_surrogate` (any coalitions and weights) and `fit_product_surrogate` (image ×
  text grids, solved through the Kronecker structure without a dense design matrix).
* `exact`: weighted Banzhaf values/interactions and exact FIxLIP-p for small games.
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
from dualex.games.game import DualEncoderGame, FunctionGame, Game
from dualex.games.regression import (
    clique_pairs,
    cross_pairs,
    fit_product_surrogate,
    fit_surrogate,
)
from dualex.games.sampler import (
    CoalitionSample,
    banzhaf_kernel,
    draw_distinct,
    draw_iid,
    sample_banzhaf,
    sample_kernel,
    sample_shapley,
    shapley_kernel,
    split_budget,
    split_grid,
)
from dualex.games.shapiq_io import from_interaction_values, to_interaction_values
from dualex.games.surrogate import (
    Surrogate,
    all_pairs,
    explanation_terms,
    fit_quality,
    surrogate_of,
)

__all__ = [
    "CoalitionSample",
    "DualEncoderGame",
    "FunctionGame",
    "Game",
    "Surrogate",
    "all_pairs",
    "banzhaf_kernel",
    "clique_pairs",
    "cross_pairs",
    "draw_distinct",
    "draw_iid",
    "enumerate_coalitions",
    "exact_fixlip",
    "explanation_terms",
    "fit_product_surrogate",
    "fit_quality",
    "fit_surrogate",
    "from_interaction_values",
    "game_values",
    "sample_banzhaf",
    "sample_kernel",
    "sample_shapley",
    "shapley_kernel",
    "split_budget",
    "split_grid",
    "surrogate_of",
    "to_interaction_values",
    "weighted_banzhaf_interactions",
    "weighted_banzhaf_values",
]
