"""Conversion between `Surrogate` and ``shapiq.InteractionValues`` (optional dependency ``[shapiq]``).

shapiq stores interactions sparsely: ``values[interaction_lookup[(i, j)]]``, keyed by sorted player
tuples, with ``()`` for the constant. A FIxLIP surrogate maps onto that directly: ``()`` -> e_∅,
``(i,)`` -> e_i, ``(i, j)`` -> e_ij. The index is ``"FBII"`` (Faith-Banzhaf) at p = 0.5; other p have no
shapiq index, so they are labelled ``"FWBII"`` as in the FIxLIP reference (shapiq accepts it with a
warning, which is silenced here).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.games.surrogate import Surrogate, explanation_terms, surrogate_of


def _shapiq() -> Any:
    try:
        import shapiq
    except ImportError:
        raise InputError("this needs shapiq: pip install 'dualex[shapiq]'") from None
    return shapiq


def index_for(p: float) -> str:
    """shapiq index name for FIxLIP-p: ``"FBII"`` at p = 0.5, else ``"FWBII"``."""
    return "FBII" if abs(p - 0.5) < 1e-12 else "FWBII"


def surrogate_to_interaction_values(
    surrogate: Surrogate,
    *,
    p: float = 0.5,
    estimated: bool = True,
    budget: int | None = None,
    baseline_value: float | None = None,
) -> Any:
    """A ``shapiq.InteractionValues`` holding e_∅, the main effects and the pair terms.

    Args:
        surrogate: The fitted surrogate.
        p: Its keep probability (picks the index label).
        estimated: Whether the values are estimates (False for exact enumeration).
        budget: Number of game evaluations used, if known.
        baseline_value: shapiq's ``baseline_value`` (default: e_∅, as the FIxLIP reference does).
    """
    shapiq = _shapiq()
    n = surrogate.n_players
    lookup: dict[tuple[int, ...], int] = {(): 0}
    for i in range(n):
        lookup[(i,)] = len(lookup)
    for i, j in surrogate.pairs.tolist():
        lookup[(int(i), int(j))] = len(lookup)
    values = np.concatenate(
        [[surrogate.intercept], surrogate.main.double().numpy(), surrogate.pair_values.double().numpy()]
    )
    max_order = 2 if surrogate.pairs.numel() else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return shapiq.InteractionValues(
            values,
            index=index_for(p),
            max_order=max_order,
            n_players=n,
            min_order=0,
            interaction_lookup=lookup,
            estimated=estimated,
            estimation_budget=budget,
            baseline_value=float(surrogate.intercept if baseline_value is None else baseline_value),
        )


def interaction_values_to_surrogate(iv: Any, *, empty_value: float | None = None) -> Surrogate:
    """A `Surrogate` from ``InteractionValues`` of order ≤ 2 (missing terms are 0).

    Args:
        iv: ``shapiq.InteractionValues``.
        empty_value: Value for e_∅ when ``()`` is not in the lookup (default: ``iv.baseline_value``).
    """
    lookup = dict(iv.interaction_lookup)
    if any(len(k) > 2 for k in lookup):
        raise InputError("only interactions up to order 2 can become a 2-additive surrogate")
    n = int(iv.n_players)
    vals = np.asarray(iv.values, dtype=np.float64)
    main = torch.zeros(n, dtype=torch.float64)
    pairs, pvals = [], []
    intercept = float(iv.baseline_value if empty_value is None else empty_value)
    for key, pos in lookup.items():
        if len(key) == 0:
            intercept = float(vals[pos])
        elif len(key) == 1:
            main[key[0]] = float(vals[pos])
        else:
            pairs.append(sorted(key))
            pvals.append(float(vals[pos]))
    P = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    order = torch.argsort(P[:, 0] * n + P[:, 1]) if P.numel() else torch.zeros(0, dtype=torch.long)
    return Surrogate(intercept, main, P[order], torch.tensor(pvals, dtype=torch.float64)[order])


def to_interaction_values(ex: Explanation) -> Any:
    """``shapiq.InteractionValues`` of an explanation (players: patches, then caption tokens)."""
    budget = ex.diagnostics.get("n_values")
    return surrogate_to_interaction_values(
        surrogate_of(ex), p=float(ex.params.get("p", 0.5)), budget=int(budget) if budget else None
    )


def from_interaction_values(iv: Any, like: Explanation) -> Explanation:
    """An `Explanation` with the terms of ``iv`` and the metadata (tokens, grid, scores) of ``like``."""
    from dataclasses import replace

    sur = interaction_values_to_surrogate(iv)
    n_i = like.n_patches
    if sur.n_players != n_i + int(like.players.numel()):
        raise InputError(
            f"the interaction values have {sur.n_players} players, the explanation {n_i} patches + "
            f"{int(like.players.numel())} caption tokens"
        )
    terms = explanation_terms(sur, n_i, like.players, like.n_tokens)
    return replace(like, **terms, diagnostics=dict(like.diagnostics), stderr={})


__all__ = [
    "from_interaction_values",
    "index_for",
    "interaction_values_to_surrogate",
    "surrogate_to_interaction_values",
    "to_interaction_values",
]
