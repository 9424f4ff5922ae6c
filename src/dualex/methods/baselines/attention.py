"""Attention internals for attention-based explanations, read through the `DualEncoder` contract.

Grad-ECLIP, GAME and rollout need, per attention layer, the attention probabilities and the gradient
of the similarity with respect to them. Each adapter records its towers' attention layers while they
run (`DualEncoder.record_attention`, see `dualex.models.attention`): the inputs of the projections,
the mask and the output after the output projection, from which ``q, k, v``, the probabilities
``A = softmax(q kᵀ · scale + mask)`` and the exact gradient ``∂f/∂A = (∂f/∂O) Vᵀ`` are recomputed.
This works with any attention kernel and on every device. Models without that capability raise
`UnsupportedModelError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from dualex.errors import UnsupportedModelError
from dualex.models.attention import AttentionSite, Recording
from dualex.models.base import SIDES, DualEncoder, Pair, Side, SideInputs

if TYPE_CHECKING:
    from dualex.explanation import Explanation


@contextlib.contextmanager
def record_attention(model: DualEncoder, side: Side, inputs: SideInputs) -> Iterator[Recording]:
    """Record every attention layer of the ``side`` tower while it runs (`DualEncoder.record_attention`)."""
    with model.tower(side).record_attention(inputs) as rec:
        yield rec


def query_positions(
    model: DualEncoder, side: Side, inputs: SideInputs, rec: Recording, row: int = 0
) -> tuple[Tensor, Tensor] | None:
    """The positions whose final states the ``side`` tower pools, and their weights (`Tower.pooled_queries`).

    One position (EOS/last for text, CLS for CLIP images) with weight 1, the patches with ``1/P`` for
    average-pooled ViTs, the attended tokens for mean-pooled bi-encoders. None when the tower pools with
    an attention head (`Recording.pool`, whose query 0 the methods follow instead).

    Raises:
        UnsupportedModelError: the pooling is not a weighted sum of positions (max pooling).
    """
    if rec.pool is not None:
        return None
    return model.tower(side).pooled_queries(inputs, row)


def pooled_rows(matrix: Tensor, queries: tuple[Tensor, Tensor]) -> Tensor:
    """``Σ_j w_j matrix[p_j]``: the weighted pooled rows of a ``(T, T)`` relevance matrix, ``(T,)``."""
    pos, w = queries
    return (w.to(matrix)[:, None] * matrix[pos.to(matrix.device)]).sum(0)


@dataclass
class RecordedPass:
    """One forward/backward pass of a pair with recorded attention.

    Attributes:
        recordings: Per recorded side, its `Recording`.
        grads: Per recorded side, the gradients of the similarity with respect to each block's output
            (same order as ``recordings[side].blocks``).
        pool_grad: Per recorded side, the gradient with respect to the pooling head's output, or None.
        value: The explained similarity of the pair.
    """

    recordings: dict[Side, Recording]
    grads: dict[Side, list[Tensor]]
    pool_grad: dict[Side, Tensor | None]
    value: float


def recorded_pass(
    model: DualEncoder, inputs: dict[Side, SideInputs], sides: tuple[Side, ...], units: str
) -> RecordedPass:
    """Run both towers on one pair (recording attention on ``sides``) and differentiate the similarity.

    Args:
        model: The dual encoder.
        inputs: One-row inputs per side.
        sides: Towers whose attention is recorded.
        units: ``"cosine"`` or ``"score"``.
    """
    from dualex.methods.common import similarity

    recs: dict[Side, Recording] = {}
    emb: dict[Side, Tensor] = {}
    for s in SIDES:
        with torch.no_grad():
            x0 = model.tower(s).hidden(inputs[s], 0)
        if s in sides:
            x0 = x0.detach().requires_grad_(True)
            with torch.enable_grad(), model.tower(s).record_attention(inputs[s]) as rec:
                emb[s] = model.tower(s).tail(inputs[s], x0, 0)
            recs[s] = rec
        else:
            with torch.no_grad():
                emb[s] = model.tower(s).tail(inputs[s], x0, 0)
    with torch.enable_grad():
        f = similarity(model, emb["text"], emb["image"], units).sum()
        sites = [
            (s, i, site) for s in sides for i, site in enumerate([*recs[s].blocks, recs[s].pool]) if site is not None
        ]
        if not sites:
            raise UnsupportedModelError(f"no attention layers were recorded in {model.name}")
        raw = torch.autograd.grad(f, [site.output for _, _, site in sites], allow_unused=True)
    grads: dict[Side, list[Tensor]] = {s: [] for s in sides}
    pool: dict[Side, Tensor | None] = {s: None for s in sides}
    for (s, i, site), g in zip(sites, raw, strict=True):
        g = torch.zeros_like(site.output) if g is None else g.detach()
        if i < len(recs[s].blocks):
            grads[s].append(g)
        else:
            pool[s] = g
    return RecordedPass(recs, grads, pool, float(f.detach()))


SideMap = Callable[[RecordedPass, Side, SideInputs], tuple[Tensor, dict[str, float]]]


def explain_recorded(
    model: DualEncoder,
    work: DualEncoder,
    pair: Pair,
    sides: tuple[Side, ...],
    side_map: SideMap,
    *,
    method: str,
    params: dict[str, Any],
    units: str,
    progress: bool | None,
) -> list[Explanation]:
    """First-order explanations of each pair from one `recorded_pass` of ``work`` per pair.

    Args:
        model: The dual encoder explained (scores and the explanations' model fields).
        work: The model the pass runs on (``model`` or its float32 copy).
        pair: Prepared batch of B pairs.
        sides: Sides explained (and recorded).
        side_map: ``(run, side, one-row inputs) -> (map, diagnostics)``: the side's per-position map
            (``(n,)`` on CPU, positions as in `dualex.methods.common.side_terms`) and extra diagnostics.
        method: The method's name (explanations and the progress bar).
        params: The explanations' ``params``.
        units: ``"cosine"`` or ``"score"``.
        progress: Show a progress bar.

    Returns:
        One `Explanation` per pair with ``text_main`` and/or ``image_main``, no cross term.
    """
    from dualex.methods.common import row_explanation, scores_of, side_terms
    from dualex.progress import bar

    scores = scores_of(model, pair)
    out: list[Explanation] = []
    with bar(pair.batch_size, method, progress) as pb:
        for b in range(pair.batch_size):
            inputs = {s: pair.side(s).select([b]) for s in SIDES}
            run = recorded_pass(work, inputs, sides, units)
            terms: dict[str, Any] = {}
            diag: dict[str, float] = {}
            for s in sides:
                values, extra = side_map(run, s, inputs[s])
                diag.update(extra)
                t, d = side_terms(s, values, pair.image, b)
                terms.update(t)
                diag.update(d)
            out.append(row_explanation(model, pair, b, scores, method=method, params=params, cross=None,
                                       diagnostics=diag, **terms))  # fmt: skip
            pb.update(1)
    return out


__all__ = [
    "AttentionSite",
    "RecordedPass",
    "Recording",
    "explain_recorded",
    "pooled_rows",
    "query_positions",
    "record_attention",
    "recorded_pass",
]
