"""Insertion/deletion curves and their area between (AID), for first- and second-order explanations.

Protocol of FIxLIP (arXiv:2508.05430). Players are the caption's player tokens and the image
patches together (n of them); ``v`` is the masking game of `dualex.games.game.DualEncoderGame`
(the model's own score of the masked pair). The sets below are built over the players in caption-then-patch
order (which decides ties, and the indices of ``starts``), then handed to the game in its own order.

* **First order** (an explanation with main effects only, or ``order=1``): players are ranked by their
  first-order value ``a`` (`Explanation.first_order`; ties keep caption-then-patch order).
  Insertion after j steps keeps the j highest-ranked players; deletion after k steps removes them.
* **Second order** (any interaction term): the explanation value of a set is
  ``ê(S) = Σ_{i∈S} e_i + Σ_{{i,j}⊆S} e_ij`` (no intercept; terms folded as in `dualex.games.surrogate`).
  From every start player s two cliques are grown greedily, one adding the player with the largest
  gain ``e_j + Σ_{u∈C} e_uj`` (max), one the smallest (min), up to size n. For each size k the best
  clique of that size over all starts is kept: ``S_k^max`` (largest ê) and ``S_k^min`` (smallest ê).
  Insertion after j steps keeps ``S_j^max``; deletion after k steps keeps ``S_{n−k}^min``. The sets are
  not nested. Starts: all players when n ≤ ``max_starts_all`` (100), otherwise the union of the 19
  highest, 19 lowest and 19 closest-to-zero players ranked by the first-order conversion
  ``φ_i = e_i + p·Σ_j e_ij`` and by the main effects ``e_i`` (at most 114 starts).

Normalisation: ``ỹ = (v(K) − v(∅)) / |v(N) − v(∅)|``, so the curves run from 0 (nothing kept) to 1 (all
kept) — FIxLIP's normalisation for the pairs it evaluates (high-scoring ones, ``v(N) > v(∅)``). Dividing by
the absolute value keeps the meaning of AID (higher = better ranking) for pairs whose full score lies
*below* the empty one (mismatched captions), where the curves end at −1 instead. NaN when
``|v(N) − v(∅)|`` is below ``1e-9`` (the pair's score does not depend on its parts).
Areas: trapezoid rule over the n+1 points with x = steps / n in [0, 1]. ``AID = insertion_auc −
deletion_auc`` (= area(LIF) − area(MIF) of the paper); higher is better, a random order gives ≈ 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.games.game import DualEncoderGame
from dualex.games.surrogate import Surrogate, surrogate_of
from dualex.metrics.base import pair_game, register_metric
from dualex.models.base import DualEncoder, Pair

EPS = 1e-9


@dataclass
class PerturbationCurves:
    """Insertion and deletion curves of one explanation.

    Attributes:
        insertion: ``(n+1,)`` normalised game values after inserting j = 0..n players.
        deletion: ``(n+1,)`` normalised game values after deleting k = 0..n players.
        raw_insertion, raw_deletion: The same in score units.
        v_full, v_empty: ``v(N)`` and ``v(∅)``.
        insertion_auc, deletion_auc, aid: Areas (trapezoid over x = steps / n) and their difference.
        order: 1 (ranking) or 2 (greedy subset selection).
        n_starts: Start players of the greedy search (0 for order 1).
    """

    insertion: Tensor
    deletion: Tensor
    raw_insertion: Tensor
    raw_deletion: Tensor
    v_full: float
    v_empty: float
    insertion_auc: float
    deletion_auc: float
    aid: float
    order: int
    n_starts: int = 0

    def as_dict(self) -> dict[str, float]:
        """The result row's columns: ``insertion_auc``, ``deletion_auc``, ``aid``."""
        return {"insertion_auc": self.insertion_auc, "deletion_auc": self.deletion_auc, "aid": self.aid}


def area(curve: Tensor) -> float:
    """Trapezoid area of a curve sampled at x = 0, 1/m, ..., 1 (``m + 1`` points)."""
    y = curve.double().flatten()
    if y.numel() < 2:
        raise InputError("a curve needs at least two points")
    if bool(torch.isnan(y).any()):
        return float("nan")
    return float((y[1:] + y[:-1]).sum() / (2 * (y.numel() - 1)))


def normalise(values: Tensor, v_empty: float, v_full: float) -> Tensor:
    """``(v − v(∅)) / |v(N) − v(∅)|``; NaN everywhere when the denominator is ~0."""
    d = abs(v_full - v_empty)
    if abs(d) < EPS:
        return torch.full_like(values, float("nan"), dtype=torch.float64)
    return (values.double() - v_empty) / d


def ranking_sets(scores: Tensor) -> tuple[Tensor, Tensor]:
    """First-order insertion and deletion coalitions.

    Args:
        scores: ``(n,)`` first-order values.

    Returns:
        ``(insert, delete)``, both ``(n+1, n)`` bool: row j of ``insert`` keeps the j highest players; row
        k of ``delete`` keeps all but the k highest.
    """
    n = int(scores.numel())
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    steps = torch.arange(n + 1)[:, None]
    insert = rank[None, :] < steps
    return insert, ~insert


def default_starts(sur: Surrogate, *, p: float = 0.5, max_starts_all: int = 100, per_group: int = 19) -> Tensor:
    """Start players of the greedy search (see module docstring), sorted ``(m,)`` long."""
    n = sur.n
    if n <= max_starts_all:
        return torch.arange(n)
    chosen: set[int] = set()
    phi = sur.first_order(p)
    for vals in (phi, sur.main):
        k = min(per_group, n)
        chosen.update(torch.topk(vals, k).indices.tolist())
        chosen.update(torch.topk(-vals, k).indices.tolist())
        chosen.update(torch.topk(-vals.abs(), k).indices.tolist())
    return torch.tensor(sorted(chosen), dtype=torch.long)


def greedy_sets(
    sur: Surrogate, starts: Tensor | None = None, *, p: float = 0.5
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Greedy subset selection on the surrogate ``ê`` (no intercept), all starts at once.

    Args:
        sur: The surrogate.
        starts: Start players ``(m,)``; default `default_starts`.
        p: Weight of the first-order conversion used to pick starts for large n.

    Returns:
        ``(max_sets, min_sets, max_values, min_values)``: ``(n+1, n)`` bool best cliques per size (row k has
        k players; row 0 empty, row n full) and their ``(n+1,)`` values ``ê``.
    """
    n = sur.n
    if starts is None:
        starts = default_starts(sur, p=p)
    starts = starts.long().flatten()
    matrix = sur.pair_matrix()
    if starts.numel() == 0:
        raise InputError("the greedy search needs at least one start player")
    out = []
    for sign in (1.0, -1.0):
        main, pairs = sign * sur.main, sign * matrix
        m = starts.numel()
        rows = torch.arange(m)
        members = torch.zeros(m, n, dtype=torch.bool)
        members[rows, starts] = True
        value = main[starts].clone()
        gain = main[None, :] + pairs[starts]
        best_sets = torch.zeros(n + 1, n, dtype=torch.bool)
        best_vals = torch.zeros(n + 1, dtype=torch.float64)
        best_sets[n] = True
        best_vals[n] = float(main.sum() + 0.5 * pairs.sum())
        for k in range(1, n):
            b = int(torch.argmax(value))
            best_sets[k], best_vals[k] = members[b], value[b]
            j = torch.argmax(gain.masked_fill(members, float("-inf")), dim=1)
            value = value + gain[rows, j]
            members[rows, j] = True
            gain = gain + pairs[j]
        out.append((best_sets, sign * best_vals))
    (max_sets, max_vals), (min_sets, min_vals) = out
    return max_sets, min_sets, max_vals, min_vals


def insertion_deletion(
    model: DualEncoder,
    pair: Pair,
    explanation: Explanation,
    *,
    order: int | str = "auto",
    starts: Tensor | None = None,
    row: int = 0,
    internal_batch_size: int = 64,
    text_masking: str = "default",
    image_masking: str = "default",
    game: DualEncoderGame | None = None,
) -> PerturbationCurves:
    """Insertion/deletion curves and AID of an explanation of row ``row`` of ``pair``.

    Args:
        model: The dual encoder that was explained.
        pair: The prepared pair (as passed to the method).
        explanation: Its explanation.
        order: ``"auto"`` (greedy subsets if the explanation has interactions, else ranking), ``1``
            (rank by the first-order conversion) or ``2``.
        starts: Start players of the greedy search (indices over text players then patches).
        row: Row of ``pair``.
        internal_batch_size: Masked pairs per forward pass.
        text_masking, image_masking: How players are removed (`DualEncoder.mask`'s ``how``).
        game: A `DualEncoderGame` of this pair to reuse (its cache spares repeated queries across
            explanations and metrics); when given, ``row``, ``internal_batch_size`` and the masking
            arguments are taken from it.

    Returns:
        `PerturbationCurves`. Costs at most ``2(n+1)`` image and ``2(n+1)`` text tower passes; each
        distinct side coalition is embedded once per game (ranking sets need about ``2(n_I + n_T + 2)``).
    """
    game = pair_game(model, pair, game, row=row, internal_batch_size=internal_batch_size,
                     text_masking=text_masking, image_masking=image_masking)  # fmt: skip
    joint = surrogate_of(explanation, order=1 if order == 1 else "auto")
    game.check(joint)
    n_i = game.n_image
    n = joint.n_players
    to_joint = torch.cat([torch.arange(n - n_i, n), torch.arange(n - n_i)])  # caption-first column -> game order
    perm = torch.cat([torch.arange(n_i, n), torch.arange(n_i)])  # caption-first player -> game index
    if joint.order == 1:
        sur = Surrogate(0.0, joint.main[perm], joint.pairs, joint.pair_values)
    else:
        sur = Surrogate.from_matrix(joint.main[perm], joint.pair_matrix()[perm][:, perm])
    use_order = 1 if (order == 1 or sur.order == 1) else 2
    n_starts = 0
    if use_order == 1:
        insert, delete = ranking_sets(sur.main)
    else:
        p = float(explanation.params.get("p", 0.5))
        if starts is None:
            starts = default_starts(sur, p=p)
        n_starts = int(starts.numel())
        max_sets, min_sets, _, _ = greedy_sets(sur, starts, p=p)
        insert = max_sets
        delete = min_sets.flip(0)  # deletion after k steps keeps the min clique of size n - k
    values = game(torch.cat([insert, delete])[:, to_joint])
    raw_ins, raw_del = values[: n + 1], values[n + 1 :]
    v_empty, v_full = float(raw_ins[0]), float(raw_ins[-1])
    ins, dele = normalise(raw_ins, v_empty, v_full), normalise(raw_del, v_empty, v_full)
    ia, da = area(ins), area(dele)
    return PerturbationCurves(
        insertion=ins,
        deletion=dele,
        raw_insertion=raw_ins,
        raw_deletion=raw_del,
        v_full=v_full,
        v_empty=v_empty,
        insertion_auc=ia,
        deletion_auc=da,
        aid=ia - da,
        order=use_order,
        n_starts=n_starts,
    )


#: The columns the `insertion_deletion` metric writes.
CURVE_COLUMNS = {
    "insertion_auc": "area under the normalised insertion curve (most important first)",
    "deletion_auc": "area under the normalised deletion curve (most important first)",
    "aid": "insertion_auc − deletion_auc",
    "insertion_curve": "normalised game values after inserting 0..n players",
    "deletion_curve": "normalised game values after deleting 0..n players",
}


@register_metric("insertion_deletion", needs=("game",), default=True, columns=CURVE_COLUMNS)
def insertion_deletion_metric(
    explanation: Explanation, item: Any, model: DualEncoder, game: DualEncoderGame, *,
    perturbation_order: int | str = "auto",
) -> dict[str, Any]:  # fmt: skip
    """Insertion/deletion curves and their areas (AID) on the item's masking game.

    Returns:
        ``insertion_auc``, ``deletion_auc``, ``aid`` and the curves ``insertion_curve``, ``deletion_curve``
        (`insertion_deletion` with ``order=perturbation_order``).
    """
    c = insertion_deletion(model, game.pair, explanation, order=perturbation_order, game=game)
    return {**c.as_dict(), "insertion_curve": [float(v) for v in c.insertion.tolist()],
            "deletion_curve": [float(v) for v in c.deletion.tolist()]}  # fmt: skip
