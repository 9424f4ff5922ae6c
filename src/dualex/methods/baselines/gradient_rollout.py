"""GAME (``method="game"``): generic attention-model explainability, gradient-weighted attention rollout.

Chefer, Gur, Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal and
Encoder-Decoder Transformers", ICCV 2021 (arXiv:2103.15679). Written from the paper's rules.

For a tower's self-attention layers, a relevance matrix over its positions starts at the identity
(every position explains itself) and is updated layer by layer:

    Ā_ℓ = mean_heads( ReLU( ∇A_ℓ ⊙ A_ℓ ) ),     R ← R + Ā_ℓ R,

where A_ℓ are the attention probabilities and ∇A_ℓ the gradient of the explained similarity with
respect to them. The relevance of each position for the embedding is the row of R at the pooled
query (CLS for CLIP images, EOS for CLIP text, the last position for SigLIP text). SigLIP's image
tower pools with an attention head whose probe is not a token; its relevance row is
``Ā_head R`` (the paper's rule for a query attending to a contextualised sequence, applied to a single
query with no self-relevance).

Every entry is non-negative by construction. The pooled position keeps its identity share (≥ 1), so
text relevance is large at EOS (a special position); image relevance is reported over the patches
(the CLS entry goes to ``diagnostics["image_prefix"]``). First-order: no ``cross``; for
span-conditional maps explain (image, span text).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dualex.explanation import Explanation
from dualex.methods import register_method
from dualex.methods.baselines.attention import (
    AttentionSite,
    RecordedPass,
    explain_recorded,
    pooled_rows,
    query_positions,
)
from dualex.methods.common import SideOption, Units, check_units, sides_of
from dualex.models.base import DualEncoder, Pair, Side, SideInputs


def head_mean_relevance(site: AttentionSite, grad_output: Tensor) -> Tensor:
    """``Ā = mean_h ReLU(∇A ⊙ A)`` for row 0 of ``site``, ``(Tq, T)`` float32."""
    A = site.probs()[0]
    gA = site.probs_grad(grad_output)[0]
    return (gA * A).clamp_min(0.0).mean(0)


def rollout(sites: list[AttentionSite], grads: list[Tensor], start: int) -> Tensor:
    """The relevance matrix ``R`` ``(T, T)`` after the self-attention layers ``start..``, from ``R = I``."""
    T = sites[0].x_key.shape[1] if sites else 0
    R = torch.eye(T, device=sites[0].x_key.device) if sites else torch.zeros(0, 0)
    for site, g in zip(sites[start:], grads[start:], strict=True):
        R = R + head_mean_relevance(site, g) @ R
    return R


@register_method(
    "game",
    order=1,
    summary="GAME: gradient-weighted attention rollout, per patch and per token (Chefer et al., ICCV 2021)",
    cost="1 forward+backward pass per pair",
)
def explain_game(
    model: DualEncoder,
    pair: Pair,
    *,
    side: SideOption = "both",
    start_layer: int = 0,
    units: Units = "cosine",
    fp32: bool = True,
    progress: bool | None = None,
) -> list[Explanation]:
    """GAME relevance of each pair's image patches and/or caption tokens.

    Chefer, Gur, Wolf, "Generic Attention-model Explainability for Interpreting Bi-Modal and
    Encoder-Decoder Transformers", ICCV 2021.

    Args:
        model: A transformers CLIP/SigLIP or open_clip ViT model (attention internals are recorded).
        pair: Prepared batch of B pairs.
        side: ``"both"``, ``"text"`` or ``"image"``.
        start_layer: First block whose attention updates the relevance (0 = all blocks, as in the
            paper; negative counts from the end, e.g. -1 = the last block only; ``n_layers`` = none,
            leaving the identity).
        units: Gradient of the ``"cosine"`` or of the ``"score"`` (a constant factor).
        fp32: Differentiate fp16/bf16 models in float32.
        progress: Show a progress bar.

    Returns:
        One `Explanation` per pair with ``image_main`` ``(P,)`` and/or ``text_main`` ``(S,)`` (all ≥ 0),
        no target; diagnostics ``image_prefix`` (CLS relevance) and ``*_start_layer``.

    Raises:
        UnsupportedModelError: the model's attention cannot be recorded, or its image tower
            average-pools.
    """
    check_units(units)
    sides = sides_of(side)
    work = model.float32() if fp32 else model
    starts = {s: work.tower(s).check_layer(start_layer) for s in sides}

    def side_map(run: RecordedPass, s: Side, inputs: SideInputs) -> tuple[Tensor, dict[str, float]]:
        rec = run.recordings[s]
        R = rollout(rec.blocks, run.grads[s], starts[s])
        q = query_positions(work, s, inputs, rec)
        if q is None:
            pool_grad = run.pool_grad[s]
            assert rec.pool is not None and pool_grad is not None
            rel = (head_mean_relevance(rec.pool, pool_grad)[0] @ R).cpu()
        else:
            rel = pooled_rows(R, q).cpu()
        return rel, {f"{s}_start_layer": float(starts[s])}

    params = {"side": side, "start_layer": start_layer, "units": units}
    return explain_recorded(model, work, pair, sides, side_map, method="game", params=params, units=units,
                            progress=progress)  # fmt: skip
