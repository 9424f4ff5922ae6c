"""RISE (``method="rise"``): randomised input sampling, model-agnostic, seeded.

Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018
(arXiv:1806.07421). Written from the paper's description.

``budget`` random masks ``M_i`` keep each player with probability ``p``; the similarity of the pair
with the masked input is recorded, and each player's saliency is the mask-weighted mean score,
normalised by the expected mask:

    S[j] = 1 / (budget · p) · Σ_i f(x ⊙ M_i) · M_i[j]          (Monte-Carlo estimate of E[f | M_j = 1]).

Masks, as dualex applies them: players are removed with the adapter's own masking
(`DualEncoder.mask`, default ``how``), so RISE works with every adapter. Image players are patches,
and RISE's smooth masks are built on the patch grid: a coarse grid of cells of ``cell × cell``
patches is drawn i.i.d. Bernoulli(p), upsampled (nearest) and shifted by a random offset in
``[0, cell)`` patches in each direction, as the paper shifts its upsampled masks. The paper's
bilinear upsampling gives soft pixel masks; dualex's players are whole patches, so masks here are
binary per patch (dualex's reading). Caption tokens (and the second sentence of text-text
bi-encoders) are masked i.i.d. Bernoulli(p), with no spatial structure.

``side="both"`` runs two independent samplings: the image masked with the caption whole, and the
caption masked with the image whole (the paper defines the image side; the text side is dualex's
reading). Values are in similarity units (``units``), never normalised; with ``p`` fixed they are
comparable across pairs. Every row uses the generator seeded with ``seed``, as its single call does:
results depend only on the seed and the model, never on the batch.

First-order: no ``cross``; for a span-conditional map explain (image, span text).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.methods import register_method
from dualex.methods.common import (
    SideOption,
    Units,
    check_units,
    opposite,
    player_terms,
    positive_int,
    row_explanation,
    rows_per_pass,
    scores_of,
    sides_of,
    similarity,
)
from dualex.models.base import SIDES, DualEncoder, ImageInputs, Pair, Side, SideInputs
from dualex.progress import bar


def grid_masks(n: int, grid: tuple[int, int], cell: int, p: float, generator: torch.Generator) -> Tensor:
    """RISE masks on a patch grid: ``(n, rows·cols)`` bool, row-major.

    Args:
        n: Number of masks.
        grid: ``(rows, cols)`` of the patch grid.
        cell: Side of a coarse cell, in patches.
        p: Probability that a coarse cell is kept.
        generator: Source of randomness (CPU).
    """
    rows, cols = grid
    cr, cc = math.ceil(rows / cell) + 1, math.ceil(cols / cell) + 1
    coarse = torch.rand((n, cr, cc), generator=generator) < p
    up = coarse.repeat_interleave(cell, dim=1).repeat_interleave(cell, dim=2)  # (n, cr·cell, cc·cell)
    dy = torch.randint(0, cell, (n,), generator=generator)
    dx = torch.randint(0, cell, (n,), generator=generator)
    r = torch.arange(rows)[None, :] + dy[:, None]  # (n, rows)
    c = torch.arange(cols)[None, :] + dx[:, None]  # (n, cols)
    out = up[torch.arange(n)[:, None, None], r[:, :, None], c[:, None, :]]
    return out.reshape(n, rows * cols)


def bernoulli_masks(n: int, n_players: int, p: float, generator: torch.Generator) -> Tensor:
    """i.i.d. masks ``(n, n_players)`` bool, each player kept with probability ``p``."""
    return torch.rand((n, n_players), generator=generator) < p


def default_cell(grid: tuple[int, int]) -> int:
    """RISE's 7 × 7 coarse grid: cells of ``ceil(max(rows, cols) / 7)`` patches (2 on a 14 × 14 grid)."""
    return max(1, math.ceil(max(grid) / 7))


def masked_scores(
    model: DualEncoder,
    side: Side,
    inputs: SideInputs,
    masks: Tensor,
    other: Tensor,
    units: str,
    internal_batch_size: int,
    progress: Any = None,
) -> Tensor:
    """Similarity ``(n,)`` of the pair with ``side`` masked by each row of ``masks``, the other side fixed.

    Args:
        model: The dual encoder.
        side: The masked side.
        inputs: One-row inputs of that side.
        masks: ``(n, n_players)`` bool.
        other: The other side's embedding ``(1, D)``.
        units: ``"cosine"`` or ``"score"``.
        internal_batch_size: Masked inputs per forward pass.
        progress: A tqdm bar advanced by masks.
    """
    out = []
    for start in range(0, masks.shape[0], internal_batch_size):
        chunk = masks[start : start + internal_batch_size]
        masked = model.tower(side).mask(inputs, chunk.to(model.device))
        e = model.tower(side).encode(masked)
        emb = {side: e, opposite(side): other.expand(e.shape[0], -1)}
        f = similarity(model, emb["text"], emb["image"], units)
        out.append(f.detach().float().cpu())
        if progress is not None:
            progress.update(int(chunk.shape[0]))
    return torch.cat(out)


def rise_saliency(scores: Tensor, masks: Tensor, p: float) -> Tensor:
    """``S[j] = Σ_i f_i M_i[j] / (n p)`` from scores ``(n,)`` and masks ``(n, n_players)``."""
    return (scores.double() @ masks.double()).float() / (masks.shape[0] * p)


@register_method(
    "rise",
    order=1,
    summary="RISE: saliency from randomly masked inputs, per patch and per token, any model "
    "(Petsiuk et al., BMVC 2018)",
    cost="budget forward passes of the masked tower per side and pair",
)
def explain_rise(
    model: DualEncoder,
    pair: Pair,
    *,
    side: SideOption = "both",
    budget: int = 1000,
    p: float = 0.5,
    cell: int | None = None,
    seed: int = 0,
    units: Units = "cosine",
    internal_batch_size: int | None = None,
    progress: bool | None = None,
) -> list[Explanation]:
    """RISE saliency of each pair's image patches and/or caption tokens.

    Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018.

    Args:
        model: Any dual encoder.
        pair: Prepared batch of B pairs.
        side: ``"both"`` (two independent samplings), ``"text"`` or ``"image"``.
        budget: Number of random masks per side and pair.
        p: Probability that a player (image: a coarse cell) is kept, in (0, 1).
        cell: Coarse cell side in patches (default: a 7 × 7 coarse grid, as the paper); 1 gives i.i.d.
            patches.
        seed: Seed of every row's masks (a batch row gets what its single call gets).
        units: ``"cosine"`` or ``"score"`` (the model's own logit).
        internal_batch_size: Masked inputs per forward pass (default 64 on CPU, 256 on CUDA).
        progress: Show a progress bar.

    Returns:
        One `Explanation` per pair with ``image_main`` ``(P,)`` and/or ``text_main`` ``(S,)`` (special
        positions 0), no target; diagnostics ``*_mean_score`` (mean masked score), ``image_cell``.
    """
    check_units(units)
    sides = sides_of(side)
    budget = positive_int("budget", budget)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < float(p) < 1.0:
        raise InputError(f"p must be a probability in (0, 1), got {p!r}")
    p = float(p)
    if cell is not None:
        cell = positive_int("cell", cell)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    chunk = rows_per_pass(internal_batch_size, model.device, cpu=64)
    scores = scores_of(model, pair)
    out: list[Explanation] = []
    with bar(pair.batch_size * budget * len(sides), "rise masks", progress) as pb, torch.no_grad():
        for b in range(pair.batch_size):
            g = torch.Generator().manual_seed(seed)  # the row's single call: batches change nothing
            inputs = {s: pair.side(s).select([b]) for s in SIDES}
            emb = {s: model.tower(s).encode(inputs[s]) for s in SIDES}
            terms: dict[str, Any] = {}
            diag: dict[str, float] = {}
            for s in (s for s in SIDES[::-1] if s in sides):  # image masks first: the generator's order
                x = inputs[s]
                n = model.tower(s).n_players(x)
                if isinstance(x, ImageInputs):
                    c = cell if cell is not None else default_cell(x.grid)
                    masks = grid_masks(budget, x.grid, c, p, g)
                    diag["image_cell"] = float(c)
                else:
                    masks = bernoulli_masks(budget, n, p, g)
                other = emb[opposite(s)]
                f = masked_scores(model, s, x, masks, other, units, chunk, pb)
                sal = rise_saliency(f, masks, p)
                diag[f"{s}_mean_score"] = float(f.mean())
                terms.update(player_terms(s, sal, pair.side(s), b))
            params = {"side": side, "budget": budget, "p": p, "cell": cell, "seed": seed, "units": units}
            out.append(
                row_explanation(
                    model, pair, b, scores, method="rise", params=params, cross=None, diagnostics=diag, **terms
                )
            )
    return out
