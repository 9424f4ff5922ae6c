"""Exact weighted Banzhaf values and interactions, and exact FIxLIP-p, by enumerating all 2^n coalitions.

For small games only (n ≲ 20). Coalition ``r`` of the enumeration holds player i iff bit i of r is set,
so ``values[r] = v(S_r)``. Definitions (Marichal & Mathonet 2011; spec §1.5), with μ_p the law of
keeping each player independently with probability p:

* weighted Banzhaf value  φ_i^p = Σ_{T⊆N∖i} p^|T| (1−p)^(n−1−|T|) [v(T∪i) − v(T)];
* weighted Banzhaf interaction I_p({i,j}) = Σ_{T⊆N∖{i,j}} p^|T| (1−p)^(n−2−|T|) Δ_ij v(T);
* FIxLIP-p = the μ_p-weighted least-squares 2-additive fit of v − v(∅); its pair terms equal
  I_p({i,j}) and ``e_i + p Σ_j e_ij = φ_i^p`` (verified by the tests).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.games.regression import PairSpec, fit_surrogate
from dualex.games.sampler import check_p
from dualex.games.surrogate import Surrogate

MAX_EXACT_PLAYERS = 22


def enumerate_coalitions(n: int) -> np.ndarray:
    """All 2^n coalitions, ``(2^n, n)`` bool; row r holds player i iff bit i of r is set."""
    if not 0 <= n <= MAX_EXACT_PLAYERS:
        raise InputError(f"exact enumeration supports 0..{MAX_EXACT_PLAYERS} players, got {n}")
    r = np.arange(2**n, dtype=np.int64)[:, None]
    return ((r >> np.arange(n, dtype=np.int64)) & 1).astype(bool)


def game_values(game: Callable[[np.ndarray], np.ndarray | Tensor], n: int) -> np.ndarray:
    """``v(S)`` for all 2^n coalitions of a callable game (coalitions ``(K, n)`` bool -> ``(K,)``)."""
    Z = enumerate_coalitions(n)
    out = game(Z)
    out = out.detach().cpu().numpy() if isinstance(out, Tensor) else np.asarray(out)
    return out.astype(np.float64).reshape(-1)


def _check_values(values: np.ndarray | Tensor) -> tuple[np.ndarray, int]:
    v = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    v = v.astype(np.float64).reshape(-1)
    n = int(v.size).bit_length() - 1
    if v.size != 2**n:
        raise InputError(f"need one value per coalition (2^n of them), got {v.size}")
    return v, n


def _size_weights(n: int, p: float, sizes: np.ndarray) -> np.ndarray:
    return p ** sizes.astype(np.float64) * (1 - p) ** (n - sizes).astype(np.float64)


def weighted_banzhaf_values(values: np.ndarray | Tensor, p: float = 0.5) -> np.ndarray:
    """Exact weighted Banzhaf values φ^p, ``(n,)``, from the values of all 2^n coalitions."""
    p = check_p(p)
    v, n = _check_values(values)
    r = np.arange(v.size)
    size = np.array([bin(x).count("1") for x in range(v.size)])
    out = np.zeros(n)
    for i in range(n):
        t = r[(r >> i) & 1 == 0]
        out[i] = (_size_weights(n - 1, p, size[t]) * (v[t | (1 << i)] - v[t])).sum()
    return out


def weighted_banzhaf_interactions(values: np.ndarray | Tensor, p: float = 0.5) -> np.ndarray:
    """Exact pairwise weighted Banzhaf interactions I_p({i, j}), symmetric ``(n, n)``, zero diagonal."""
    p = check_p(p)
    v, n = _check_values(values)
    r = np.arange(v.size)
    size = np.array([bin(x).count("1") for x in range(v.size)])
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            t = r[((r >> i) & 1 == 0) & ((r >> j) & 1 == 0)]
            bi, bj = 1 << i, 1 << j
            delta = v[t | bi | bj] - v[t | bi] - v[t | bj] + v[t]
            out[i, j] = out[j, i] = (_size_weights(n - 2, p, size[t]) * delta).sum()
    return out


def exact_fixlip(values: np.ndarray | Tensor, p: float = 0.5, pairs: PairSpec = "all") -> Surrogate:
    """Exact FIxLIP-p: the μ_p-weighted least-squares fit of ``v − v(∅)`` over all 2^n coalitions.

    Args:
        values: ``(2^n,)`` game values in enumeration order.
        p: Keep probability in (0, 1).
        pairs: Pair basis (``"all"``, ``"none"`` or ``(P, 2)`` pairs).

    Returns:
        The `Surrogate`: e_∅, main effects and pair terms (the weighted Banzhaf interactions).
    """
    p = check_p(p)
    v, n = _check_values(values)
    Z = enumerate_coalitions(n)
    k = Z.sum(1)
    w = _size_weights(n, p, k)
    return fit_surrogate(torch.from_numpy(Z), torch.from_numpy(v - v[0]), torch.from_numpy(w), pairs)


__all__ = [
    "MAX_EXACT_PLAYERS",
    "enumerate_coalitions",
    "exact_fixlip",
    "game_values",
    "weighted_banzhaf_interactions",
    "weighted_banzhaf_values",
]
