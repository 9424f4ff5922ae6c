"""Attention rollout (``method="rollout"``): attention flow through the residual stream, no gradients.

Abnar, Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020 (arXiv:2005.00928). Written from
the paper's rules.

Each block's attention, fused over heads (``mean``, as in the paper; ``max``/``min`` as popular
implementations offer), is mixed with the identity for the residual connection and re-normalised per
row, then the layers are multiplied from the first to the last:

    Ã_ℓ = rownorm(½ fuse_h(A_ℓ) + ½ I),     R = Ã_L ⋯ Ã_{start+1} Ã_start.

The relevance of each position for the embedding is the row of R at the pooled query (CLS for CLIP
images, EOS for CLIP text, the last position for SigLIP text). SigLIP's image tower pools with an
attention head whose probe is not a token; its row is ``fuse_h(A_head) R`` (the probe attends, with no
residual of its own), dualex's reading. Mean-pooled towers have no single pooled row and raise.

Every entry is non-negative and each row of R sums to 1. Outputs: ``image_main`` ``(P,)`` over the
patches (the CLS/prefix share in ``diagnostics["image_prefix"]``), ``text_main`` ``(S,)`` over all
caption positions. First-order: for span-conditional maps explain (image, span text).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.methods import register_method
from dualex.methods.baselines.attention import pooled_rows, query_positions
from dualex.methods.common import (
    SideOption,
    row_chunks,
    row_explanation,
    rows_per_pass,
    scores_of,
    side_terms,
    sides_of,
)
from dualex.models.base import SIDES, DualEncoder, Pair
from dualex.progress import bar

HeadFusion = Literal["mean", "max", "min"]


def fuse_heads(A: Tensor, head_fusion: str) -> Tensor:
    """``(H, Tq, T)`` attention fused over heads -> ``(Tq, T)``."""
    if head_fusion == "mean":
        return A.mean(0)
    if head_fusion == "max":
        return A.amax(0)
    if head_fusion == "min":
        return A.amin(0)
    raise InputError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")


def rollout_matrix(probs: list[Tensor], head_fusion: str = "mean", residual: float = 0.5) -> Tensor:
    """``R = Ã_L ⋯ Ã_1`` for per-layer attention probabilities ``(H, T, T)`` (first layer first).

    Args:
        probs: Attention probabilities of the layers, in forward order.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        residual: Weight of the identity (the paper's ½).

    Returns:
        ``(T, T)`` float32; the identity for no layers.
    """
    if not probs:
        raise InputError("attention rollout needs at least one layer")
    T = probs[0].shape[-1]
    eye = torch.eye(T, dtype=torch.float32, device=probs[0].device)
    R = eye
    for A in probs:
        a = (1.0 - residual) * fuse_heads(A.float(), head_fusion) + residual * eye
        a = a / a.sum(-1, keepdim=True)
        R = a @ R
    return R


@register_method(
    "rollout",
    order=1,
    summary="attention rollout: attention multiplied through the layers with the residual, per patch and "
    "per token (Abnar & Zuidema, ACL 2020)",
    cost="1 forward pass per pair",
)
def explain_rollout(
    model: DualEncoder,
    pair: Pair,
    *,
    side: SideOption = "both",
    head_fusion: HeadFusion = "mean",
    start_layer: int = 0,
    internal_batch_size: int | None = None,
    progress: bool | None = None,
) -> list[Explanation]:
    """Attention rollout of each pair's image patches and/or caption tokens.

    Abnar, Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.

    Args:
        model: A transformers CLIP/SigLIP/SigLIP-2 or open_clip ViT model (attention is recorded).
        pair: Prepared batch of B pairs.
        side: ``"both"``, ``"text"`` or ``"image"``.
        head_fusion: ``"mean"`` (the paper), ``"max"`` or ``"min"`` over heads.
        start_layer: First block included (0 = all; negative counts from the end).
        internal_batch_size: Pairs per recorded forward pass (memory bound: the attention of every
            block is kept; default 16 on CPU, 256 on CUDA).
        progress: Show a progress bar.

    Returns:
        One `Explanation` per pair with ``image_main`` ``(P,)`` and/or ``text_main`` ``(S,)`` (≥ 0), no
        target; diagnostics ``image_prefix`` and ``*_start_layer``.

    Raises:
        UnsupportedModelError: attention cannot be recorded, or a tower mean-pools.
    """
    fuse_heads(torch.ones(1, 1, 1), head_fusion)  # validates the option
    sides = sides_of(side)
    starts = {s: model.tower(s).check_layer(start_layer) for s in sides}
    for s in sides:
        if starts[s] >= model.tower(s).n_layers:
            raise InputError(f"start_layer must name a block of the {s} tower, got {start_layer}")
    chunk = rows_per_pass(internal_batch_size, model.device)
    scores = scores_of(model, pair)
    out: list[Explanation] = []
    with bar(pair.batch_size, "rollout", progress) as pb, torch.no_grad():
        for rows in row_chunks(pair.batch_size, chunk):  # pairs are independent rows: one pass per chunk
            inputs = {s: pair.side(s).select(rows) for s in SIDES}
            rels: dict[str, list[Tensor]] = {}
            for s in sides:
                with model.tower(s).record_attention(inputs[s]) as rec:
                    model.tower(s).encode(inputs[s])
                rels[s] = []
                for k in range(len(rows)):
                    R = rollout_matrix([site.probs()[k] for site in rec.blocks[starts[s] :]], head_fusion)
                    q = query_positions(model, s, inputs[s], rec, k)
                    if q is None:
                        assert rec.pool is not None
                        rels[s].append(fuse_heads(rec.pool.probs()[k], head_fusion)[0] @ R)
                    else:
                        rels[s].append(pooled_rows(R, q))
            for k, b in enumerate(rows):
                terms: dict[str, Any] = {}
                diag: dict[str, float] = {}
                for s in sides:
                    diag[f"{s}_start_layer"] = float(starts[s])
                    t, d = side_terms(s, rels[s][k].cpu(), pair.image, b)
                    terms.update(t)
                    diag.update(d)
                params = {"side": side, "head_fusion": head_fusion, "start_layer": start_layer}
                out.append(
                    row_explanation(
                        model, pair, b, scores, method="rollout", params=params, cross=None, diagnostics=diag, **terms
                    )
                )
            pb.update(len(rows))
    return out
