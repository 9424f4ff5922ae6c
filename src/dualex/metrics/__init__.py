"""Metrics for explanations of dual encoders (exCLIP and FIxLIP evaluation protocols).

* `pointing_game` — conditional pointing game, energy and accuracy, caption span → image box and
  image box → caption span; `pointing_game_recognition` — PGR on image grids.
* `insertion_deletion` — insertion/deletion curves and AID (ranking for first-order explanations,
  greedy subset selection for second-order ones).
* `p_faithfulness` — Spearman ρ and R² of the explanation's predictions on held-out coalitions.
* `completeness_error` — attributed total versus the method's target.

Each is also a registered entry (`register_metric`, `dualex.metrics.base`) that ``dualex evaluate
--metrics NAME`` runs: ``pointing``, ``insertion_deletion``, ``faithfulness``, ``completeness``, in that
order (the order of the imports below), and any metric a plugin module registers.

Exact definitions: the docstrings of the submodules. The game they measure, and the reading of an
explanation as a surrogate of it, are those of `dualex.games` (the same FIxLIP fits).
"""

from __future__ import annotations

# The built-in metrics register in the order of these imports (pointing first, as runs record them).
# isort: off
from dualex.metrics.base import (
    METRICS,
    MetricInfo,
    MetricValues,
    get_metric,
    measure,
    register_metric,
    resolve_metrics,
)
from dualex.metrics.pointing import (
    PointingResult,
    RecognitionResult,
    pointing_game,
    pointing_game_recognition,
    positive_energy,
)
from dualex.metrics.perturbation import PerturbationCurves, area, greedy_sets, insertion_deletion, ranking_sets
from dualex.metrics.faithfulness import FaithfulnessResult, held_out_coalitions, item_seed, p_faithfulness
from dualex.metrics.completeness import CompletenessResult, completeness_error

# isort: on
for _alias, _name in {"pg": "pointing", "pointing_game": "pointing", "pgr": "pointing", "aid": "insertion_deletion",
                      "insertion": "insertion_deletion", "deletion": "insertion_deletion", "faith": "faithfulness",
                      "p_faithfulness": "faithfulness"}.items():  # fmt: skip
    METRICS.alias(_alias, _name)

__all__ = [
    "METRICS",
    "CompletenessResult",
    "FaithfulnessResult",
    "MetricInfo",
    "MetricValues",
    "PerturbationCurves",
    "PointingResult",
    "RecognitionResult",
    "area",
    "completeness_error",
    "get_metric",
    "greedy_sets",
    "held_out_coalitions",
    "insertion_deletion",
    "item_seed",
    "measure",
    "p_faithfulness",
    "pointing_game",
    "pointing_game_recognition",
    "positive_energy",
    "ranking_sets",
    "register_metric",
    "resolve_metrics",
]
