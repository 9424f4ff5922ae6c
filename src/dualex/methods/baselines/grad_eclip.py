"""Grad-ECLIP (``method="grad_eclip"``): gradient-weighted value maps of the last attention layer.

Zhao, Wang, Zeng, Zhao, Chan, "Gradient-based Visual Explanation for Transformer-based CLIP", ICML 2024
(journal version: "Grad-ECLIP: Gradient-based Visual and Textual Explanations for CLIP",
arXiv:2502.18816). Written from the paper's description; the authors' code has no licence and was
not used.

The embedding of a tower is a function of the output of its last attention layer at the pooled
query position q (CLS for CLIP images, EOS for CLIP text, the probe of SigLIP's attention-pooling
head, the last position for SigLIP text). Per head h, that output is ``o_h = Σ_i A_{h,i} v_{h,i}``.
Grad-ECLIP weights each value channel by the gradient of the similarity f with respect to ``o``
(channel importance) and each position by a *loosened* attention (spatial importance), then
rectifies:

    map[i] = ReLU( Σ_h λ_{h,i} Σ_c (∂f/∂o_{h,c}) v_{h,i,c} ).

dualex's reading of the loosened attention (``spatial="loosened"``, the default): the pre-softmax
scores ``q_q · k_i · scale`` of the query, min–max normalised to [0, 1] over the keys it may attend
to, per head (CLIP's softmax attention is nearly one-hot; the normalised scores keep the ranking
without the sparsity). ``spatial="attention"`` uses the softmax probabilities themselves; then,
without the ReLU, the map is an exact decomposition ``Σ_i map[i] = ⟨∂f/∂o, o⟩`` of the output's
first-order contribution. ``spatial="none"`` drops the spatial weights.

Outputs: ``image_main`` over the patches (a CLS/prefix key's value goes to
``diagnostics["image_prefix"]``), ``text_main`` over all caption positions. First-order: no
``cross``; for span-conditional maps explain (image, span text), as the paper does.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.methods import register_method
from dualex.methods.baselines.attention import AttentionSite, RecordedPass, explain_recorded, query_positions
from dualex.methods.common import SideOption, Units, check_units, sides_of
from dualex.models.base import DualEncoder, Pair, Side, SideInputs

Spatial = Literal["loosened", "attention", "none"]


def spatial_weights(site: AttentionSite, query: int, spatial: str) -> Tensor:
    """Spatial importance ``(H, T)`` of every key for one query (row 0), zero on masked keys.

    Args:
        site: The attention layer.
        query: Query position in the site.
        spatial: ``"loosened"`` (min–max normalised scores), ``"attention"`` (softmax) or ``"none"``.
    """
    logits = site.logits()[0, :, query, :]  # (H, T)
    allowed = site.allowed().expand(1, site.n_heads, -1, -1)[0, :, query, :]
    if spatial == "attention":
        return logits.softmax(dim=-1)
    if spatial == "none":
        return allowed.float()
    if spatial != "loosened":
        raise InputError(f"spatial must be 'loosened', 'attention' or 'none', got {spatial!r}")
    big = torch.finfo(logits.dtype).max
    lo = torch.where(allowed, logits, big).amin(-1, keepdim=True)
    hi = torch.where(allowed, logits, -big).amax(-1, keepdim=True)
    lam = (logits - lo) / (hi - lo).clamp_min(1e-12)
    return torch.where(allowed, lam, torch.zeros_like(lam))


def grad_eclip_map(site: AttentionSite, grad_output: Tensor, query: int, spatial: str, relu: bool) -> Tensor:
    """The Grad-ECLIP map over the keys of ``site`` for ``query`` (row 0), ``(T,)`` float32.

    Args:
        site: The last attention layer (or attention-pooling head) of a tower.
        grad_output: Gradient of the similarity with respect to ``site.output``, ``(1, Tq, W')``.
        query: The pooled query position.
        spatial: See `spatial_weights`.
        relu: Rectify the map (the paper's choice).
    """
    g = site.head_output_grad(grad_output)[0, :, query, :]  # (H, d): channel importance
    v = site.values()[0]  # (H, T, d)
    lam = spatial_weights(site, query, spatial)  # (H, T)
    m = (lam * torch.einsum("htd,hd->ht", v, g)).sum(0)
    return m.clamp_min(0.0) if relu else m


@register_method(
    "grad_eclip",
    order=1,
    summary="Grad-ECLIP: gradient-weighted values of the last attention layer, per patch and per token "
    "(Zhao et al., ICML 2024)",
    cost="1 forward+backward pass per pair",
)
def explain_grad_eclip(
    model: DualEncoder,
    pair: Pair,
    *,
    side: SideOption = "both",
    spatial: Spatial = "loosened",
    relu: bool = True,
    units: Units = "cosine",
    fp32: bool = True,
    progress: bool | None = None,
) -> list[Explanation]:
    """Grad-ECLIP maps of each pair: image patches and/or caption tokens.

    Zhao et al., "Gradient-based Visual Explanation for Transformer-based CLIP", ICML 2024.

    Args:
        model: A transformers CLIP/SigLIP or open_clip ViT model (attention internals are recorded).
        pair: Prepared batch of B pairs.
        side: ``"both"``, ``"text"`` or ``"image"``.
        spatial: Spatial weights: ``"loosened"`` (default, min–max normalised attention scores),
            ``"attention"`` (softmax probabilities) or ``"none"``.
        relu: Rectify the maps (the paper's choice; False keeps signed maps).
        units: Gradient of the ``"cosine"`` or of the ``"score"`` (a constant factor).
        fp32: Differentiate fp16/bf16 models in float32.
        progress: Show a progress bar.

    Returns:
        One `Explanation` per pair with ``image_main`` ``(P,)`` and/or ``text_main`` ``(S,)``, no target;
        diagnostics ``image_prefix`` (value of CLS/prefix keys) and ``query`` positions.

    Raises:
        UnsupportedModelError: the model's attention cannot be recorded, or its image tower
            average-pools.
    """
    check_units(units)
    if spatial not in ("loosened", "attention", "none"):
        raise InputError(f"spatial must be 'loosened', 'attention' or 'none', got {spatial!r}")
    sides = sides_of(side)
    work = model.float32() if fp32 else model

    def side_map(run: RecordedPass, s: Side, inputs: SideInputs) -> tuple[Tensor, dict[str, float]]:
        rec = run.recordings[s]
        queries = query_positions(work, s, inputs, rec)
        if queries is None:  # attention-pooling head: its single probe query
            site, grad, qs = rec.pool, run.pool_grad[s], [0]
        else:
            site, grad, qs = rec.blocks[-1], run.grads[s][-1], queries[0].tolist()
        assert site is not None and grad is not None
        # several pooled queries (average or mean pooling): their maps add up (each query's
        # gradient carries its pooling weight), rectified once
        m = sum(grad_eclip_map(site, grad, q, spatial, relu=False) for q in qs)
        assert isinstance(m, Tensor)
        return (m.clamp_min(0.0) if relu else m).cpu(), {f"{s}_query": float(qs[0])}

    params = {"side": side, "spatial": spatial, "relu": relu, "units": units}
    return explain_recorded(model, work, pair, sides, side_map, method="grad_eclip", params=params, units=units,
                            progress=progress)  # fmt: skip
