"""p-faithfulness: how well an explanation predicts the masking game on held-out coalitions.

Protocol of FIxLIP (arXiv:2508.05430):

1. Draw ``n_coalitions`` *distinct* coalitions of the n players (caption player tokens and image
   patches) from ``μ_p``: every player kept independently with probability ``p`` (the keep probability;
   ``p = 0.5`` is uniform). Draws repeat until enough distinct coalitions exist (at most 50 ×
   ``n_coalitions`` draws; with very few players fewer coalitions may result). Seeded by ``seed``.
   These coalitions are independent of whatever a method sampled to build its explanation.
2. Ground truth ``y(S) = v(S) − v(∅)`` from the joint masking game (`dualex.metrics.game.JointGame`).
3. Prediction ``ŷ(S) = e_∅ + Σ_{i∈S} e_i + Σ_{{i,j}⊆S} e_ij`` (`dualex.metrics.game.surrogate`; first-order
   explanations have no ``e_ij``; methods without an intercept have ``e_∅ = 0``).
4. Unweighted over the drawn coalitions (they already follow ``μ_p``):
   Spearman ρ(y, ŷ) — the paper's "p-faithfulness correlation", invariant to the explanation's scale and
   offset, so comparable across all methods — and ``R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)²`` (sklearn's
   ``r2_score``), meaningful for methods whose terms are in score units with an intercept (game-theoretic
   ones). Pearson r is reported too. Constant ``y`` or ``ŷ`` gives NaN correlations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.metrics.game import JointGame, surrogate
from dualex.models.base import DualEncoder, Pair


@dataclass
class FaithfulnessResult:
    """p-faithfulness of one explanation.

    Attributes:
        spearman: Spearman ρ between ``y`` and ``ŷ``.
        r2: Coefficient of determination of ``ŷ`` for ``y``.
        pearson: Pearson r.
        p: Keep probability of the evaluation coalitions.
        n_coalitions: Distinct coalitions used.
        y: ``(K,)`` game values ``v(S) − v(∅)``.
        y_hat: ``(K,)`` explanation predictions.
    """

    spearman: float
    r2: float
    pearson: float
    p: float
    n_coalitions: int
    y: Tensor
    y_hat: Tensor

    def as_dict(self) -> dict[str, float]:
        return {"faith_spearman": self.spearman, "faith_r2": self.r2}


def sample_coalitions(n: int, n_coalitions: int, *, p: float = 0.5, seed: int = 0) -> Tensor:
    """Distinct coalitions drawn from ``μ_p`` (each player kept with probability ``p``), ``(K, n)`` bool.

    ``K = n_coalitions`` unless fewer distinct coalitions turn up within ``50 · n_coalitions`` draws.
    """
    if n < 1:
        raise InputError("there are no players to form coalitions of")
    if not 0.0 < p < 1.0:
        raise InputError(f"the keep probability p must lie strictly between 0 and 1, got {p}")
    if n_coalitions < 2:
        raise InputError(f"n_coalitions must be at least 2, got {n_coalitions}")
    rng = np.random.default_rng(seed)
    seen: dict[bytes, np.ndarray] = {}
    drawn, limit = 0, 50 * n_coalitions
    while len(seen) < n_coalitions and drawn < limit:
        batch = rng.random((max(64, 2 * (n_coalitions - len(seen))), n)) < p
        drawn += batch.shape[0]
        for r in batch:
            if len(seen) >= n_coalitions:
                break
            seen.setdefault(np.packbits(r).tobytes(), r)
    return torch.from_numpy(np.stack(list(seen.values())))


def correlation_scores(y: Tensor, y_hat: Tensor) -> tuple[float, float, float]:
    """``(spearman, r2, pearson)`` of predictions ``y_hat`` for targets ``y`` (1-d, same length)."""
    from scipy.stats import pearsonr, spearmanr

    a = y.double().flatten().numpy()
    b = y_hat.double().flatten().numpy()
    if a.shape != b.shape or a.size < 2:
        raise InputError("faithfulness needs at least two (target, prediction) pairs of equal length")
    ss_tot = float(((a - a.mean()) ** 2).sum())
    r2 = 1.0 - float(((a - b) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), r2, float("nan")
    return float(spearmanr(a, b).statistic), r2, float(pearsonr(a, b).statistic)


def p_faithfulness(
    model: DualEncoder,
    pair: Pair,
    explanation: Explanation,
    *,
    p: float = 0.5,
    n_coalitions: int = 1000,
    seed: int = 0,
    order: int | str = "auto",
    row: int = 0,
    internal_batch_size: int = 64,
    text_masking: str = "default",
    image_masking: str = "default",
    game: JointGame | None = None,
) -> FaithfulnessResult:
    """Spearman ρ and R² of an explanation's predictions on held-out coalitions drawn from ``μ_p``.

    Args:
        model: The dual encoder that was explained.
        pair: The prepared pair; row ``row`` is used.
        explanation: Its explanation.
        p: Keep probability of the evaluation coalitions (FIxLIP evaluates 0.3, 0.5, 0.7).
        n_coalitions: Distinct evaluation coalitions (paper: 1000).
        seed: Seed of the coalition sampler (use a per-item seed for dataset runs).
        order: ``"auto"`` (all terms), or ``1`` to score the first-order conversion only.
        row: Row of ``pair``.
        internal_batch_size: Masked pairs per forward pass.
        text_masking, image_masking: How players are removed (`DualEncoder.mask`'s ``how``).
        game: A `JointGame` of this pair to reuse (its cache spares repeated queries across explanations);
            when given, ``row``, ``internal_batch_size`` and the masking arguments are taken from it.

    Returns:
        `FaithfulnessResult`. Costs ``n_coalitions + 1`` masked forward passes.
    """
    game = game if game is not None else JointGame(
        model,
        pair,
        row=row,
        internal_batch_size=internal_batch_size,
        text_masking=text_masking,
        image_masking=image_masking,
    )
    sur = surrogate(explanation, order=order)
    game.check(sur)
    keep = sample_coalitions(game.n, n_coalitions, p=p, seed=seed)
    values = game(torch.cat([torch.zeros(1, game.n, dtype=torch.bool), keep]))
    y = values[1:] - values[0]
    y_hat = sur.value(keep)
    rho, r2, r = correlation_scores(y, y_hat)
    return FaithfulnessResult(rho, r2, r, p, int(keep.shape[0]), y, y_hat)
