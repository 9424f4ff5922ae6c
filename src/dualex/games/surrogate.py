"""The one 2-additive surrogate type, and the one reader of explanations into it.

A surrogate of a game over n players is

    v̂(S) = e_∅ + Σ_{i∈S} e_i + Σ_{(i,j)∈P, i,j∈S} e_ij

with a set P of pairs (its *basis*). Everything in dualex that predicts a masking game uses this type:
FIxLIP's fits (`dualex.games.regression`), the metrics (`dualex.metrics`), exact enumeration
(`dualex.games.exact`) and shapiq conversion (`dualex.games.shapiq_io`).

**Player order** (one, everywhere): the image players first (patches in row-major order, or the
second sentence's tokens for text-text bi-encoders), then the caption's player tokens (specials
excluded) in caption order.

**Explanation → surrogate** (`surrogate_of`; FIxLIP, arXiv:2508.05430). An `Explanation` stores its terms
over all caption positions. Terms that involve a non-player position (BOS/EOS rows of ``cross``, image
prefix tokens in ``cross_prefix``) are always present, so they are folded into the lower order: a term
between a special position and player ``i`` is added to ``e_i``; a term among specials only goes into
``e_∅``. The basis holds every pair of each kind the explanation has (token × patch for ``cross``,
token × token for ``text_pairs``, patch × patch for ``image_pairs``), zero-valued or not.
**Surrogate → explanation** (`explanation_terms`): the inverse, rows for all caption positions.
Explanation ⇄ ``shapiq.InteractionValues`` goes through these two (`dualex.games.shapiq_io`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation

DEFAULT_CHUNK_BYTES = 1 << 26  # 64 MiB per temporary block


def _chunk_slices(total: int, step: int) -> list[slice]:
    step = max(1, int(step))
    return [slice(s, min(s + step, total)) for s in range(0, total, step)]


def all_pairs(n: int) -> Tensor:
    """All ``n(n−1)/2`` pairs, ``(P, 2)`` long, lexicographic."""
    return torch.triu_indices(n, n, 1).T.contiguous().long() if n > 1 else torch.zeros(0, 2, dtype=torch.long)


def side_prediction(Z: Tensor, main: Tensor, pairs: Tensor, vals: Tensor, chunk_bytes: int) -> Tensor:
    """``z·main + Σ_pairs e_ij z_i z_j`` per row of ``Z`` ``(K, n)``, ``(K,)`` float64, through the pair matrix."""
    n = Z.shape[1]
    E = torch.zeros(n, n, dtype=torch.float64, device=Z.device)
    if pairs.numel():
        E[pairs[:, 0], pairs[:, 1]] = vals.to(E)
    out = torch.empty(Z.shape[0], dtype=torch.float64, device=Z.device)
    for sl in _chunk_slices(Z.shape[0], chunk_bytes // (8 * max(1, 2 * n))):
        z = Z[sl].to(torch.float64)
        out[sl] = z @ main.to(z) + ((z @ E) * z).sum(1)
    return out


@dataclass
class Surrogate:
    """A 2-additive surrogate over n players (tensors float64 / long, on CPU unless moved with `to`).

    Attributes:
        intercept: e_∅ (score units).
        main: ``(n,)`` main effects e_i.
        pairs: ``(P, 2)`` long player pairs (i < j) of the basis.
        pair_values: ``(P,)`` pair terms e_ij.
        info: Fit diagnostics (``r2_train``, ``rank_deficient``, ``n_coalitions``, ...).
        n_image: Number of image players (players ``0..n_image−1``), when known (None for a generic game).
    """

    intercept: float
    main: Tensor
    pairs: Tensor
    pair_values: Tensor
    info: dict[str, float] = field(default_factory=dict)
    n_image: int | None = None

    @classmethod
    def from_matrix(
        cls, main: Tensor, matrix: Tensor, *, intercept: float = 0.0, n_image: int | None = None
    ) -> Surrogate:
        """A surrogate whose basis is all pairs, with ``e_ij = matrix[i, j]`` (upper triangle; ``(n, n)``)."""
        n = int(main.numel())
        if tuple(matrix.shape) != (n, n):
            raise InputError(f"the pair matrix must have shape ({n}, {n}), got {tuple(matrix.shape)}")
        P = all_pairs(n)
        vals = matrix.double()[P[:, 0], P[:, 1]] if P.numel() else torch.zeros(0, dtype=torch.float64)
        return cls(float(intercept), main.double(), P, vals, {}, n_image)

    @property
    def n_players(self) -> int:
        """Number of players."""
        return int(self.main.numel())

    @property
    def n(self) -> int:
        """Number of players (alias of `n_players`)."""
        return self.n_players

    @property
    def n_text(self) -> int:
        """Number of caption players (needs ``n_image``)."""
        if self.n_image is None:
            raise InputError("this surrogate does not know which players are image players")
        return self.n_players - self.n_image

    @property
    def order(self) -> int:
        """2 if the basis has any pair, else 1."""
        return 2 if self.pairs.numel() else 1

    def pair_matrix(self) -> Tensor:
        """Symmetric ``(n, n)`` matrix of pair terms (zero diagonal, zero for pairs not in the basis)."""
        n = self.n_players
        out = torch.zeros(n, n, dtype=torch.float64, device=self.main.device)
        if self.pairs.numel():
            out[self.pairs[:, 0], self.pairs[:, 1]] = self.pair_values.to(out)
            out[self.pairs[:, 1], self.pairs[:, 0]] = self.pair_values.to(out)
        return out

    def first_order(self, p: float) -> Tensor:
        """Weighted Banzhaf values of the surrogate, ``e_i + p · Σ_j e_ij``, ``(n,)`` (spec §1.5)."""
        return self.main + p * self.pair_matrix().sum(1)

    def predict(
        self, coalitions: Tensor | np.ndarray, *, intercept: bool = True, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> Tensor:
        """Surrogate values of coalitions ``(K, n)`` bool, ``(K,)`` float64 on CPU (without e_∅ if asked)."""
        Z = torch.as_tensor(coalitions)
        if Z.dim() != 2 or Z.shape[1] != self.n_players:
            raise InputError(f"coalitions must have shape (K, {self.n_players}), got {tuple(Z.shape)}")
        out = side_prediction(Z.bool().cpu(), self.main.cpu(), self.pairs.cpu(), self.pair_values.cpu(), chunk_bytes)
        return out + self.intercept if intercept else out

    def to(self, device: torch.device | str) -> Surrogate:
        """The surrogate with its tensors on ``device``."""
        return Surrogate(
            self.intercept,
            self.main.to(device),
            self.pairs.to(device),
            self.pair_values.to(device),
            self.info,
            self.n_image,
        )


# ---------------------------------------------------------------------------------------------- explanation ⇄ surrogate
def _upper(m: Tensor) -> Tensor:
    """A pairs matrix as `Explanation` stores it -> symmetric, zero diagonal, upper triangle authoritative.

    `Explanation.total` counts each pair once from the upper triangle; the same convention is used here.
    """
    up = torch.triu(m, diagonal=1)
    return up + up.T


def _kind_pairs(n_image: int, n_text: int, image: bool, text: bool, cross: bool) -> Tensor:
    """The basis of the pair kinds an explanation has, sorted ``(P, 2)`` (image players first)."""
    n = n_image + n_text
    P = all_pairs(n)
    if not P.numel():
        return P
    a_img, b_img = P[:, 0] < n_image, P[:, 1] < n_image
    keep = (a_img & b_img & image) | (~a_img & ~b_img & text) | ((a_img ^ b_img) & cross)
    return P[keep]


def surrogate_of(ex: Explanation, *, order: int | str = "auto") -> Surrogate:
    """Read an explanation as a surrogate over its players (image players first; see module docstring).

    Args:
        ex: The explanation.
        order: ``"auto"`` (all terms the explanation has), ``2`` (same), or ``1``: the first-order values
            of `Explanation.first_order` as main effects and no pairs (for a game-theoretic explanation,
            its weighted Banzhaf conversion).

    Returns:
        The `Surrogate` (``n_image`` set).
    """
    players = ex.players
    n_t, n_i = int(players.numel()), ex.n_patches
    if order == 1:
        text, image = ex.first_order()
        main = torch.cat([image, text[players]]).double()
        return Surrogate(0.0, main, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, dtype=torch.float64), {}, n_i)
    if order not in ("auto", 2):
        raise InputError(f"order must be 'auto', 1 or 2, got {order!r}")
    has_kind = (ex.image_pairs is not None, ex.text_pairs is not None, ex.cross is not None)
    if not any(has_kind) and ex.text_main is None and ex.image_main is None:
        raise InputError(f"explanation of method {ex.method!r} has neither main effects nor interactions")
    S = ex.n_tokens
    # all positions: P patches, then S caption positions; 'always' marks non-players (specials)
    N = n_i + S
    main_full = torch.zeros(N, dtype=torch.float64)
    pairs_full = torch.zeros(N, N, dtype=torch.float64)
    intercept = float(ex.intercept)
    if ex.image_main is not None:
        main_full[:n_i] += ex.image_main.double()
    if ex.text_main is not None:
        main_full[n_i:] += ex.text_main.double()
    if ex.cross_prefix is not None:  # image prefix tokens (CLS, registers) are never masked
        main_full[n_i:] += ex.cross_prefix.double().sum(1)
    if ex.cross is not None:
        c = ex.cross.double()
        pairs_full[n_i:, :n_i] += c
        pairs_full[:n_i, n_i:] += c.T
    if ex.image_pairs is not None:
        pairs_full[:n_i, :n_i] += _upper(ex.image_pairs.double())
    if ex.text_pairs is not None:
        pairs_full[n_i:, n_i:] += _upper(ex.text_pairs.double())
    always = torch.cat([torch.zeros(n_i, dtype=torch.bool), ex.special.bool()])
    play = ~always
    intercept += float(main_full[always].sum()) + 0.5 * float(pairs_full[always][:, always].sum())
    main = main_full[play] + pairs_full[play][:, always].sum(1)
    M = pairs_full[play][:, play]
    P = _kind_pairs(n_i, n_t, *has_kind)
    vals = M[P[:, 0], P[:, 1]] if P.numel() else torch.zeros(0, dtype=torch.float64)
    return Surrogate(intercept, main, P, vals, {}, n_i)


def explanation_terms(sur: Surrogate, n_image: int, text_positions: Tensor, n_tokens: int) -> dict[str, Any]:
    """Explanation fields from a surrogate (image players first): the inverse of `surrogate_of`.

    Rows are all ``n_tokens`` caption positions (zero for non-players); a pair matrix is None when
    the basis has no pair of that kind.
    """
    tp = text_positions.long().cpu()
    main = sur.main.double().cpu()
    text_main = torch.zeros(n_tokens, dtype=torch.float64)
    text_main[tp] = main[n_image:]
    M = sur.pair_matrix().cpu()
    kinds = sur.pairs.cpu() < n_image
    has_img = bool(kinds.all(1).any())
    has_txt = bool((~kinds).all(1).any())
    has_cross = bool((kinds[:, 0] ^ kinds[:, 1]).any())
    cross = text_pairs = image_pairs = None
    if has_cross:
        cross = torch.zeros(n_tokens, n_image, dtype=torch.float64)
        cross[tp] = M[n_image:, :n_image]
    if has_txt:
        text_pairs = torch.zeros(n_tokens, n_tokens, dtype=torch.float64)
        text_pairs[tp[:, None], tp[None, :]] = M[n_image:, n_image:]
    if has_img:
        image_pairs = M[:n_image, :n_image].clone()
    return {
        "text_main": text_main,
        "image_main": main[:n_image].clone(),
        "cross": cross,
        "text_pairs": text_pairs,
        "image_pairs": image_pairs,
        "intercept": float(sur.intercept),
    }


# ---------------------------------------------------------------------------------------------- fit quality
def fit_quality(y: Tensor, pred: Tensor) -> dict[str, float]:
    """How well predictions ``pred`` match targets ``y`` (both ``(K,)``, K ≥ 2), unweighted.

    Returns:
        ``r2`` (``1 − Σ(y − ŷ)² / Σ(y − ȳ)²``, NaN for constant ``y``), ``spearman`` and ``pearson``
        (NaN when ``y`` or ``ŷ`` is constant) and ``mse``.
    """
    from scipy.stats import pearsonr, spearmanr

    a = y.detach().double().cpu().flatten().numpy()
    b = pred.detach().double().cpu().flatten().numpy()
    if a.shape != b.shape or a.size < 2:
        raise InputError("fit quality needs at least two (target, prediction) pairs of equal length")
    ss_tot = float(((a - a.mean()) ** 2).sum())
    res = float(((a - b) ** 2).sum())
    out = {"r2": 1.0 - res / ss_tot if ss_tot > 0 else math.nan, "mse": res / a.size}
    if np.ptp(a) > 0 and np.ptp(b) > 0:
        out["spearman"] = float(spearmanr(a, b).statistic)
        out["pearson"] = float(pearsonr(a, b).statistic)
    else:
        out["spearman"] = out["pearson"] = math.nan
    return out


__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "Surrogate",
    "all_pairs",
    "explanation_terms",
    "fit_quality",
    "side_prediction",
    "surrogate_of",
]
