"""The pair basis of the 2-additive estimators and the split of a cross-modal budget into a grid.

* `resolve_pairs`: ``"all"``, ``"crossmodal"``, ``"none"``, a top-k clique (the reference's rule, spec
  §2.5: `clique_players`) or explicit pairs -> ``(P, 2)`` joint pairs (image players first).
* `choose_split`: ``(m_image, m_text)`` coalitions for a budget (the reference heuristic
  `dualex.games.sampler.split_budget`, moved where a side would otherwise be underdetermined).
* `side_terms`: how many surrogate terms live on each side alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.games.regression import clique_pairs, cross_pairs, normalise_pairs
from dualex.games.sampler import split_budget
from dualex.games.surrogate import all_pairs

ESTIMATORS = ("crossmodal", "agnostic")
PAIR_SETS = ("all", "crossmodal", "none")


def pair_label(pairs: Any) -> str:
    """``pairs`` as a short label for explanation params (a set's name, ``"clique:k"`` or ``"custom"``)."""
    if isinstance(pairs, str):
        return pairs
    if isinstance(pairs, (int, np.integer)) and not isinstance(pairs, bool):
        return f"clique:{int(pairs)}"
    return "custom"


def check_pairs(pairs: Any) -> None:
    """Refuse a ``pairs`` value that names no pair set, top-k clique or list of pairs (one `InputError`)."""
    if isinstance(pairs, str):
        if pairs not in PAIR_SETS:
            raise InputError(
                f"pairs must be one of {', '.join(PAIR_SETS)}, an integer k (top-k clique) or a list of (i, j) "
                f"player pairs; got {pairs!r}"
            )
    elif isinstance(pairs, bool):
        raise InputError("pairs must be a string, an integer or a list of pairs, not a bool")
    elif isinstance(pairs, (int, np.integer)):
        if int(pairs) < 2:
            raise InputError(f"a top-k clique needs k ≥ 2 players, got {pairs}")
    elif not isinstance(pairs, (Sequence, np.ndarray, Tensor)):
        raise InputError(f"pairs must be a string, an integer or a list of (i, j) pairs, got {type(pairs).__name__}")


def clique_players(phi: Tensor, n_image: int, k: int) -> Tensor:
    """The reference's top-k clique (spec §2.5): players with the largest |weighted Banzhaf value|.

    The text share is ``t = min(n_T, max(5, ceil(n_T · k / n)))`` tokens, the rest ``k − t`` patches.

    Args:
        phi: ``(n,)`` first-order values, image players first.
        n_image: Number of image players.
        k: Clique size.

    Returns:
        Sorted joint indices of the chosen players.
    """
    n = int(phi.numel())
    n_text = n - n_image
    if k >= n:
        return torch.arange(n)
    t = min(n_text, max(5, math.ceil(n_text * k / n)))
    i = min(n_image, k - t)
    t = min(n_text, k - i)
    img = torch.argsort(phi[:n_image].abs(), descending=True)[:i]
    txt = torch.argsort(phi[n_image:].abs(), descending=True)[:t] + n_image
    return torch.sort(torch.cat([img, txt])).values


def resolve_pairs(pairs: Any, n_image: int, n_text: int, phi: Tensor | None = None) -> Tensor:
    """The pair basis as ``(P, 2)`` joint indices (image players ``0..n_I−1``, then text players).

    Args:
        pairs: ``"all"``, ``"crossmodal"``, ``"none"``, an integer k (all pairs within the top-k clique,
            which needs ``phi``), or explicit ``(i, j)`` joint pairs.
        n_image: Number of image players.
        n_text: Number of text players.
        phi: First-order values for the clique selection.
    """
    n = n_image + n_text
    check_pairs(pairs)
    if isinstance(pairs, str):
        if pairs == "all":
            return all_pairs(n)
        if pairs == "crossmodal":
            return cross_pairs(n_image, n_text)
        return torch.zeros(0, 2, dtype=torch.long)
    if isinstance(pairs, (int, np.integer)):
        if phi is None:
            raise InputError("a top-k clique needs first-order values to choose its players")
        return clique_pairs(clique_players(phi, n_image, int(pairs)))
    return normalise_pairs(pairs, n)


def side_terms(pairs: Any, n_image: int, n_text: int) -> tuple[int, int]:
    """Number of surrogate terms that live on each side alone: ``1 + n + intra-modal pairs``."""
    if isinstance(pairs, str):
        intra = pairs == "all"
        p_i = n_image * (n_image - 1) // 2 if intra else 0
        p_t = n_text * (n_text - 1) // 2 if intra else 0
    elif isinstance(pairs, (int, np.integer)):
        n = n_image + n_text
        k = min(int(pairs), n)
        t = min(n_text, max(5, math.ceil(n_text * k / n)))
        i = min(n_image, k - t)
        t = min(n_text, k - i)
        p_i, p_t = i * (i - 1) // 2, t * (t - 1) // 2
    else:
        P = normalise_pairs(pairs, n_image + n_text)
        p_i = int((n_image > P).all(1).sum())
        p_t = int((n_image <= P).all(1).sum())
    return 1 + n_image + p_i, 1 + n_text + p_t


def choose_split(budget: int, n_image: int, n_text: int, pairs: Any = "all", split: str = "auto") -> tuple[int, int]:
    """``(m_image, m_text)`` for the cross-modal estimator.

    ``"reference"``: the FIxLIP heuristic (`split_budget`). ``"auto"``: the same unless one side would
    get fewer coalitions than its own surrogate terms (``d_side = 1 + n + intra-modal pairs``, capped
    at 2^n) while ``budget ≥ d_image · d_text``; then that side gets exactly ``d_side`` coalitions and
    the other the rest. Such a side would otherwise be underdetermined (a minimum-norm solution, so
    biased intra-modal terms), e.g. 3 tokens with all pairs need all 7 of their 8 coalitions.
    """
    m_i, m_t = split_budget(budget, n_image, n_text)
    if split == "reference":
        return m_i, m_t
    d_i, d_t = side_terms(pairs, n_image, n_text)
    d_i = min(d_i, 2**n_image) if n_image < 62 else d_i
    d_t = min(d_t, 2**n_text) if n_text < 62 else d_t
    if (m_i >= d_i and m_t >= d_t) or d_i * d_t > budget:
        return m_i, m_t
    if m_t < d_t:
        m_t = d_t
        m_i = budget // m_t if n_image >= 62 else min(2**n_image, budget // m_t)
    else:
        m_i = d_i
        m_t = budget // m_i if n_text >= 62 else min(2**n_text, budget // m_i)
    return m_i, m_t


__all__ = [
    "ESTIMATORS",
    "PAIR_SETS",
    "check_pairs",
    "choose_split",
    "clique_players",
    "pair_label",
    "resolve_pairs",
    "side_terms",
]
