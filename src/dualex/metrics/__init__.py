"""Metrics for explanations of dual encoders (exCLIP and FIxLIP evaluation protocols).

* `pointing_game` — conditional pointing game, energy and accuracy, caption span → image box and
  image box → caption span; `pointing_game_recognition` — PGR on image grids.
* `insertion_deletion` — insertion/deletion curves and AID (ranking for first-order explanations,
  greedy subset selection for second-order ones).
* `p_faithfulness` — Spearman ρ and R² of the explanation's predictions on held-out coalitions.
* `completeness_error` — attributed total versus the method's target.

Exact definitions: the docstrings of the submodules. The game they measure, and the reading of an
explanation as a surrogate of it, are those of `dualex.games` (the same FIxLIP fits).
"""

from __future__ import annotations

from dualex.metrics.completeness import CompletenessResult, completeness_error
from dualex.metrics.faithfulness import FaithfulnessResult, held_out_coalitions, p_faithfulness
from dualex.metrics.perturbation import PerturbationCurves, area, greedy_sets, insertion_deletion, ranking_sets
from dualex.metrics.pointing import (
    PointingResult,
    RecognitionResult,
    pointing_game,
    pointing_game_recognition,
    positive_energy,
)

__all__ = [
    "CompletenessResult",
    "FaithfulnessResult",
    "PerturbationCurves",
    "PointingResult",
    "RecognitionResult",
    "area",
    "completeness_error",
    "greedy_sets",
    "held_out_coalitions",
    "insertion_deletion",
    "p_faithfulness",
    "pointing_game",
    "pointing_game_recognition",
    "positive_energy",
    "ranking_sets",
]
