"""Maps the decisions layer draws from an `Explanation` (no figures, no model)."""

from __future__ import annotations

from torch import Tensor

from dualex.explanation import Explanation


def all_rows_map(ex: Explanation) -> Tensor:
    """Σ over every caption row of ``cross`` (special tokens included) as a ``(rows, cols)`` patch map;
    ``image_main`` for first-order methods. It adds up to the explanation's cross total."""
    if ex.cross is None:
        return ex.image_map()
    return ex.cross.sum(0).reshape(ex.grid)


__all__ = ["all_rows_map"]
