"""Explanations of decisions made with a dual encoder's scores, built from pair explanations.

* `contrast` -> `Contrast`: why x is closer to A than to B (s(x, a) − s(x, b));
* `zero_shot` -> `Decision`: the zero-shot classifier (prompt ensembles) and why it picks its class;
* `explain_ranking` -> `Ranking`: a gallery ranked by similarity to a query, its top k explained.

Each computes the shared input's side once (`dualex.methods.shared`), and each decomposition adds up to
the score difference it explains.
"""

from __future__ import annotations

from dualex.decisions.contrast import Contrast, contrast
from dualex.decisions.ranking import Ranking, explain_ranking
from dualex.decisions.zero_shot import Decision, zero_shot

__all__ = ["Contrast", "Decision", "Ranking", "contrast", "explain_ranking", "zero_shot"]
