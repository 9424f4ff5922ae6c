"""The joint masking game of a (caption, image) pair, and an explanation read as a surrogate of it.

Players are the caption's player tokens (special tokens excluded) followed by the image patches
(row-major): ``n = n_text + n_image`` columns of every coalition matrix. A coalition ``keep`` is a
``(K, n)`` bool matrix; ``v(keep)`` is the model's own score (cosine × logit scale + bias) of the pair
with the removed players masked by `DualEncoder.mask` (default: image patches set to the dataset-mean
colour, text tokens removed from attention) — the game of FIxLIP (arXiv:2508.05430).

An explanation predicts the game with its terms (arXiv:2508.05430):

    v̂(S) = e_∅ + Σ_{i∈S} e_i + Σ_{{i,j}⊆S} e_ij,

where ``e_ij`` are the token × patch (``cross``), token × token and patch × patch interactions and ``e_i``
the main effects. Terms that involve a non-player position (BOS/EOS rows of ``cross``, image prefix
tokens in ``cross_prefix``) are always present, so they are folded into the lower order: a term between
a special position and player ``i`` is added to ``e_i``; a term among specials only goes into ``e_∅``.
First-order explanations (main effects only) give ``e_ij = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.models.base import DualEncoder, Pair


@dataclass
class Surrogate:
    """Second-order surrogate ``v̂(S) = intercept + Σ main_i + Σ_{i<j} pairs_ij`` over the n players.

    Attributes:
        intercept: ``e_∅`` (score units).
        main: ``(n,)`` main effects, text players first, then patches.
        pairs: ``(n, n)`` symmetric interactions with zero diagonal; ``pairs[i, j]`` is ``e_ij`` itself
            (each unordered pair counted once in the value).
        n_text: Number of text players.
        order: 2 if any interaction term exists, else 1.
    """

    intercept: float
    main: Tensor
    pairs: Tensor
    n_text: int
    order: int

    @property
    def n(self) -> int:
        return int(self.main.numel())

    def value(self, keep: Tensor, *, intercept: bool = True) -> Tensor:
        """Surrogate values of coalitions ``keep`` ``(K, n)`` bool -> ``(K,)`` float64."""
        k = keep.to(torch.float64)
        out = k @ self.main + 0.5 * ((k @ self.pairs) * k).sum(1)
        return out + self.intercept if intercept else out


def surrogate(ex: Explanation, *, order: int | str = "auto") -> Surrogate:
    """Read an explanation as a surrogate game over its players (see module docstring).

    Args:
        ex: The explanation.
        order: ``"auto"`` (all terms the explanation has), ``2`` (same), or ``1``: the first-order
            values of `Explanation.first_order` as main effects and no interactions (for a
            game-theoretic explanation this is its weighted Banzhaf conversion).

    Returns:
        The `Surrogate`.
    """
    players = ex.players
    n_t, n_i = int(players.numel()), ex.n_patches
    S = ex.n_tokens
    if order == 1:
        text, image = ex.first_order()
        main = torch.cat([text[players], image]).double()
        return Surrogate(0.0, main, torch.zeros(n_t + n_i, n_t + n_i, dtype=torch.float64), n_t, 1)
    if order not in ("auto", 2):
        raise InputError(f"order must be 'auto', 1 or 2, got {order!r}")
    has_pairs = any(t is not None for t in (ex.cross, ex.text_pairs, ex.image_pairs))
    has_main = ex.text_main is not None or ex.image_main is not None
    if not has_pairs and not has_main:
        raise InputError(f"explanation of method {ex.method!r} has neither main effects nor interactions")

    # All positions: S text positions, then P patches; 'always' marks non-players (specials).
    N = S + n_i
    main_full = torch.zeros(N, dtype=torch.float64)
    pairs_full = torch.zeros(N, N, dtype=torch.float64)
    intercept = float(ex.intercept)
    if ex.text_main is not None:
        main_full[:S] += ex.text_main.double()
    if ex.image_main is not None:
        main_full[S:] += ex.image_main.double()
    if ex.cross_prefix is not None:  # image prefix tokens (CLS, registers) are never masked
        main_full[:S] += ex.cross_prefix.double().sum(1)
    if ex.cross is not None:
        c = ex.cross.double()
        pairs_full[:S, S:] += c
        pairs_full[S:, :S] += c.T
    if ex.text_pairs is not None:
        pairs_full[:S, :S] += _sym(ex.text_pairs.double())
    if ex.image_pairs is not None:
        pairs_full[S:, S:] += _sym(ex.image_pairs.double())
    always = torch.cat([ex.special.bool(), torch.zeros(n_i, dtype=torch.bool)])
    play = ~always
    intercept += float(main_full[always].sum()) + 0.5 * float(pairs_full[always][:, always].sum())
    main = main_full[play] + pairs_full[play][:, always].sum(1)
    pairs = pairs_full[play][:, play].clone()
    pairs.fill_diagonal_(0.0)
    return Surrogate(intercept, main, pairs, n_t, 2 if has_pairs else 1)


def _sym(m: Tensor) -> Tensor:
    """A pairs matrix as `Explanation` stores it -> symmetric, zero diagonal, upper triangle authoritative.

    `Explanation.total` counts each pair once from the upper triangle; the same convention is used here.
    """
    up = torch.triu(m, diagonal=1)
    return up + up.T


class JointGame:
    """``v(S)``: the model's score of one (caption, image) pair with players outside S masked.

    Args:
        model: The dual encoder.
        pair: A prepared pair; row ``row`` is used.
        row: Which row of ``pair``.
        internal_batch_size: Coalitions per forward pass.
        text_masking: ``how`` for `DualEncoder.mask` on the text side (``"default"`` = attention).
        image_masking: ``how`` on the image side (``"default"`` = mean colour).
        cache: Remember every value computed, so that metrics of several explanations of the same pair
            (same coalitions, e.g. the seeded faithfulness sample) query the model once.
    """

    def __init__(
        self,
        model: DualEncoder,
        pair: Pair,
        *,
        row: int = 0,
        internal_batch_size: int = 64,
        text_masking: str = "default",
        image_masking: str = "default",
        cache: bool = True,
    ) -> None:
        if internal_batch_size < 1:
            raise InputError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
        self.model = model
        self.pair = pair.select([row]).to(model.device)
        self.n_text = model.n_players("text", self.pair.text)
        self.n_image = model.n_players("image", self.pair.image)
        self.batch = int(internal_batch_size)
        self.text_masking = text_masking
        self.image_masking = image_masking
        self.calls = 0
        self._cache: dict[bytes, float] | None = {} if cache else None

    @property
    def n(self) -> int:
        return self.n_text + self.n_image

    def check(self, sur: Surrogate) -> None:
        """Raise if an explanation's players do not match this pair's."""
        if sur.n_text != self.n_text or sur.n - sur.n_text != self.n_image:
            raise InputError(
                f"the explanation has {sur.n_text} caption players and {sur.n - sur.n_text} patches, but the "
                f"prepared pair has {self.n_text} and {self.n_image}; explain and evaluate the same pair"
            )

    @torch.no_grad()
    def __call__(self, keep: Tensor) -> Tensor:
        """Scores of coalitions ``keep`` ``(K, n)`` bool -> ``(K,)`` float64 on CPU.

        Identical coalitions are evaluated once.
        """
        keep = keep.to(torch.bool).cpu()
        if keep.dim() != 2 or keep.shape[1] != self.n:
            raise InputError(f"coalitions must have shape (K, {self.n}), got {tuple(keep.shape)}")
        uniq, inverse = torch.unique(keep, dim=0, return_inverse=True)
        out = torch.empty(uniq.shape[0], dtype=torch.float64)
        keys = [r.tobytes() for r in np.packbits(uniq.numpy(), axis=1)] if self._cache is not None else []
        todo = torch.arange(uniq.shape[0])
        if self._cache is not None:
            known = [i for i, k in enumerate(keys) if k in self._cache]
            for i in known:
                out[i] = self._cache[keys[i]]
            todo = torch.tensor(sorted(set(range(uniq.shape[0])) - set(known)), dtype=torch.long)
        for a in range(0, todo.numel(), self.batch):
            idx = todo[a : a + self.batch]
            chunk = uniq[idx]
            t = self.model.mask("text", self.pair.text, chunk[:, : self.n_text], how=self.text_masking)
            im = self.model.mask("image", self.pair.image, chunk[:, self.n_text :], how=self.image_masking)
            s = self.model.similarity(self.model.encode("image", im), self.model.encode("text", t)).score
            out[idx] = s.detach().double().cpu()
            self.calls += 1
            if self._cache is not None:
                for j, v in zip(idx.tolist(), out[idx].tolist(), strict=True):
                    self._cache[keys[j]] = v
        return out[inverse]

    def full(self) -> float:
        return float(self(torch.ones(1, self.n, dtype=torch.bool))[0])

    def empty(self) -> float:
        return float(self(torch.zeros(1, self.n, dtype=torch.bool))[0])
