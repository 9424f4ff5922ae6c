"""Completeness: do an explanation's terms add up to what its method says they explain?

``error = attributed − target`` where ``attributed`` is the sum of all terms (each pair once, plus the
intercept; `Explanation.total`) and ``target`` the method's own claim (`Explanation.target`): for
integrated Jacobians the four-term score difference of exCLIP, for FIxLIP ``v(N) − v(∅)``. The relative
error is ``|error| / |target|``. Methods that claim no target (most first-order baselines) give NaN: their
sums are not meant to match anything. The numbers are computed in one place, `Explanation.completeness_terms`;
this module gives them the metric's record type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dualex.explanation import Explanation
from dualex.metrics.base import register_metric


@dataclass
class CompletenessResult:
    """Attributed total, the method's target, and the (relative) difference (score units)."""

    attributed: float
    target: float
    error: float
    relative_error: float

    def as_dict(self) -> dict[str, float]:
        """The result row's columns: ``completeness_error``, ``completeness_rel_error``."""
        return {"completeness_error": self.error, "completeness_rel_error": self.relative_error}


def completeness_error(ex: Explanation) -> CompletenessResult:
    """Completeness error of one explanation (NaN error when the method states no target)."""
    return CompletenessResult(*ex.completeness_terms())


@register_metric(
    "completeness",
    default=True,
    columns={
        "completeness_error": "attributed total − the method's target (score units)",
        "completeness_rel_error": "|completeness_error| / |target|",
    },
)
def completeness(explanation: Explanation, item: Any, model: Any, game: Any) -> dict[str, float]:
    """Completeness error: attributed total minus the method's target (NaN without a target).

    Returns:
        ``completeness_error`` and ``completeness_rel_error`` (`completeness_error`).
    """
    return completeness_error(explanation).as_dict()
