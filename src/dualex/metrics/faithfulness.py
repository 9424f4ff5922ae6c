"""p-faithfulness: how well an explanation predicts the masking game on held-out coalitions.

Protocol of FIxLIP (arXiv:2508.05430), in one of two designs of the held-out coalitions, both
made of draws from ``μ_p`` (every player — caption player tokens and image patches — kept independently
with probability ``p``; ``p = 0.5`` is uniform), seeded by ``seed`` and independent of whatever a method
sampled to build its explanation:

* ``design="independent"`` (the paper's): ``n_coalitions`` *distinct* joint coalitions
  (`dualex.games.sampler.draw_distinct`; at most 50 × ``n_coalitions`` draws, so with very few players
  fewer may result). Each needs its own image and text tower pass.
* ``design="product"`` (the estimator FIxLIP's own cross-modal fit uses): ``m_I`` image and ``m_T``
  text coalitions drawn i.i.d. from ``μ_p`` (``m_T = floor(sqrt(n_coalitions))``, ``m_I =
  n_coalitions // m_T``; `dualex.games.sampler.split_grid`), and all ``m_I · m_T`` combinations. Every
  combination is again a draw from ``μ_p`` (membership is independent per player), and all values come
  from one matrix product of ``m_I + m_T`` embeddings. Cells sharing a coalition are correlated, so
  the grid needs enough coalitions per side: ``dualex evaluate`` uses 100 × 100 (10,000 cells from at most
  200 tower passes), whose means agree with 1000 independent coalitions (docs/evaluation.md); a 32 × 31
  grid gave R² biased low for poorly fitting explanations.

Then:

1. Ground truth ``y(S) = v(S) − v(∅)`` from the masking game (`dualex.games.game.DualEncoderGame`).
2. Prediction ``ŷ(S) = e_∅ + Σ_{i∈S} e_i + Σ_{{i,j}⊆S} e_ij`` (`dualex.games.surrogate.surrogate_of`;
   first-order explanations have no ``e_ij``; methods without an intercept have ``e_∅ = 0``), in the
   game's units: the game values are the model's score, so an explanation in cosine units
   (``params["units"] == "cosine"``, ij's and the gradient methods' default) has its prediction
   multiplied by the logit scale λ first (``y`` differences remove the bias). Spearman ρ does not change;
   R² then no longer depends on the unit a method happened to report in.
3. Unweighted over the coalitions (they already follow ``μ_p``; `dualex.games.surrogate.fit_quality`):
   Spearman ρ(y, ŷ) — the paper's "p-faithfulness correlation", invariant to the explanation's scale and
   offset, so comparable across all methods — and ``R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)²`` (sklearn's
   ``r2_score``), meaningful for methods whose terms are in score units with an intercept (game-theoretic
   ones). Pearson r is reported too. Constant ``y`` or ``ŷ`` gives NaN correlations.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.games.game import DualEncoderGame
from dualex.games.sampler import check_p, draw_distinct, draw_iid, split_grid
from dualex.games.surrogate import fit_quality, surrogate_of
from dualex.metrics.base import pair_game, register_metric
from dualex.models.base import DualEncoder, Pair

DESIGNS = ("independent", "product")


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
        y_hat: ``(K,)`` explanation predictions, in the game's units.
        units: The units of ``y`` and ``y_hat``: ``"score"`` (the game's).
        scale: The factor the explanation's prediction was multiplied by (λ for cosine units, else 1).
    """

    spearman: float
    r2: float
    pearson: float
    p: float
    n_coalitions: int
    y: Tensor
    y_hat: Tensor
    units: str = "score"
    scale: float = 1.0

    def as_dict(self) -> dict[str, float]:
        """The result row's columns: ``faith_spearman``, ``faith_r2``."""
        return {"faith_spearman": self.spearman, "faith_r2": self.r2}


def held_out_coalitions(
    n_image: int, n_text: int, n_coalitions: int, *, p: float = 0.5, seed: int = 0, design: str = "independent"
) -> tuple[Tensor, tuple[int, int] | None]:
    """The held-out coalitions of `p_faithfulness`, ``(K, n_image + n_text)`` bool (image players first).

    Returns:
        ``(Z, shape)``: for the product design ``shape = (m_I, m_T)`` and row ``a · m_T + b`` of ``Z``
        combines image coalition ``a`` with text coalition ``b``; for the independent design ``shape`` is None.
    """
    check_p(p)
    if design not in DESIGNS:
        raise InputError(f"design must be one of {', '.join(DESIGNS)}, got {design!r}")
    if isinstance(n_coalitions, bool) or not isinstance(n_coalitions, (int, np.integer)) or n_coalitions < 2:
        raise InputError(f"n_coalitions must be an integer ≥ 2, got {n_coalitions!r}")
    if design == "independent":
        return torch.from_numpy(draw_distinct(n_image + n_text, int(n_coalitions), p=p, seed=seed)), None
    if n_image < 1 or n_text < 1:
        raise InputError("the product design needs at least one image and one caption player")
    m_i, m_t = split_grid(int(n_coalitions), n_image, n_text, shape="square")
    rng_i, rng_t = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    zi = torch.from_numpy(draw_iid(n_image, m_i, p, rng_i))
    zt = torch.from_numpy(draw_iid(n_text, m_t, p, rng_t))
    Z = torch.cat([zi.repeat_interleave(m_t, 0), zt.repeat(m_i, 1)], 1)
    return Z, (m_i, m_t)


def p_faithfulness(
    model: DualEncoder,
    pair: Pair,
    explanation: Explanation,
    *,
    p: float = 0.5,
    n_coalitions: int = 1000,
    seed: int = 0,
    design: str = "independent",
    order: int | str = "auto",
    row: int = 0,
    internal_batch_size: int = 64,
    text_masking: str = "default",
    image_masking: str = "default",
    game: DualEncoderGame | None = None,
) -> FaithfulnessResult:
    """Spearman ρ and R² of an explanation's predictions on held-out coalitions drawn from ``μ_p``.

    Args:
        model: The dual encoder that was explained.
        pair: The prepared pair; row ``row`` is used.
        explanation: Its explanation.
        p: Keep probability of the evaluation coalitions (FIxLIP evaluates 0.3, 0.5, 0.7).
        n_coalitions: Held-out coalitions (paper: 1000); the product design uses ``m_I · m_T ≤ n_coalitions``.
        seed: Seed of the coalition sampler (use a per-item seed for dataset runs).
        design: ``"independent"`` (distinct joint coalitions, the paper's) or ``"product"`` (a grid of
            i.i.d. image × text coalitions; see the module docstring).
        order: ``"auto"`` (all terms), or ``1`` to score the first-order conversion only.
        row: Row of ``pair``.
        internal_batch_size: Masked inputs per forward pass.
        text_masking, image_masking: How players are removed (`DualEncoder.mask`'s ``how``).
        game: A `DualEncoderGame` of this pair to reuse (its cache spares repeated queries across
            explanations and metrics); when given, ``row``, ``internal_batch_size`` and the masking
            arguments are taken from it.

    Returns:
        `FaithfulnessResult`. Costs up to ``n_coalitions + 1`` masked pairs (independent design) or
        ``m_I + m_T + 2`` tower passes (product design).
    """
    game = pair_game(model, pair, game, row=row, internal_batch_size=internal_batch_size,
                     text_masking=text_masking, image_masking=image_masking)  # fmt: skip
    sur = surrogate_of(explanation, order=order)
    game.check(sur)
    Z, shape = held_out_coalitions(game.n_image, game.n_text, n_coalitions, p=p, seed=seed, design=design)
    if shape is None:
        values = game(torch.cat([torch.zeros(1, game.n_players, dtype=torch.bool), Z]))
        y = values[1:] - values[0]
    else:
        m_t = shape[1]
        grid = game.grid(Z[::m_t, : game.n_image], Z[:m_t, game.n_image :]).cpu()
        y = (grid - game.empty()).flatten()
    scale = game_scale(game.model, explanation)
    y_hat = sur.predict(Z) * scale
    q = fit_quality(y, y_hat)
    return FaithfulnessResult(q["spearman"], q["r2"], q["pearson"], p, int(Z.shape[0]), y, y_hat, "score", scale)


def game_scale(model: DualEncoder, explanation: Explanation) -> float:
    """The factor that puts ``explanation``'s terms into the masking game's (score) units.

    The game's values are ``λ cos + β``; terms in cosine units are multiplied by λ (the bias cancels in
    ``v(S) − v(∅)``), terms in score units by 1.

    Raises:
        InputError: the explanation names units other than ``"cosine"`` and ``"score"``.
    """
    units = explanation.units
    if units == "score":
        return 1.0
    if units == "cosine":
        return float(model.logit_scale)
    raise InputError(f"explanation units {units!r} are neither 'cosine' nor 'score'; cannot score it against the game")



def item_seed(item_id: str) -> int:
    """A stable per-item seed (for the held-out coalitions of a dataset run)."""
    return zlib.crc32(item_id.encode("utf-8"))


#: The columns the `faithfulness` metric writes.
FAITH_COLUMNS = {
    "faith_spearman": "Spearman ρ of v(S) − v(∅) and the explanation's prediction, held-out S",
    "faith_r2": "R² of the same, in the game's (score) units",
}


@register_metric("faithfulness", needs=("game",), default=True, columns=FAITH_COLUMNS)
def faithfulness_metric(
    explanation: Explanation, item: Any, model: DualEncoder, game: DualEncoderGame, *,
    faith_p: float = 0.5, faith_coalitions: int = 1000, faith_design: str = "product", faith_grid: int = 100,
) -> dict[str, Any]:  # fmt: skip
    """p-faithfulness (Spearman ρ and R²) on held-out coalitions, seeded per item.

    Returns:
        ``faith_spearman``, ``faith_r2`` (`p_faithfulness`: ``faith_grid``² coalitions in the product
        design, else ``faith_coalitions``, drawn with keep probability ``faith_p``).
    """
    n = faith_grid**2 if faith_design == "product" else faith_coalitions
    f = p_faithfulness(model, game.pair, explanation, p=faith_p, n_coalitions=n, seed=item_seed(item.id),
                       design=faith_design, game=game)  # fmt: skip
    return f.as_dict()
