"""InteractionCAM (``method="interaction_cam"``): CAM-style maps for a pair, from final-layer features.

Idea from Sammani, Joukovsky, Deligiannis, "Visualizing and Understanding Contrastive Learning",
IEEE TIP 2023 (arXiv:2206.09753), which explains the similarity of two images. Their Interaction-CAM
weights the final feature maps of each image by the channel-wise product of the two images' pooled
features (the channels both images share) and by the rectified gradient of the similarity, then sums
over channels. The exCLIP paper lists an InteractionCAM baseline; its exact definition there could not
be checked, so what follows is **dualex's reading**, stated precisely.

Transformer towers have no feature *maps*, so each position is projected into the joint embedding
space as if the tower pooled it: ``u_s = head(h_s)`` for caption position s and ``z_p = head(h_p)``
for patch p, where ``h`` are the last block's output states and ``head`` is everything after the last
block (final norm, pooling, projection; for SigLIP's attention-pooling head, attention to that one
position). With ``e_T``, ``e_I`` the pair's embeddings, ê their unit vectors and ``g_T = ∂f/∂e_T``,
``g_I = ∂f/∂e_I`` the gradients of the explained similarity f:

* ``pairwise=False`` (first order, the paper's form): ``text_main[s] = Σ_c u_{s,c} (ê_T ⊙ ê_I)_c
  ReLU(g_T)_c`` and ``image_main[p] = Σ_c z_{p,c} (ê_T ⊙ ê_I)_c ReLU(g_I)_c`` (the channel weights
  ``ê_T ⊙ ê_I`` sum to the pair's cosine);
* ``pairwise=True`` (default; the token × patch form this library adds): the pooled product is replaced
  by the pair's own product, ``cross[s, p] = Σ_c u_{s,c} z_{p,c} (ReLU(g_T)_c ReLU(g_I)_c)^{1/2}``: the
  channels in which caption position s and patch p agree, counted where raising them raises the
  similarity on both sides (the geometric mean keeps the map linear in f, like the first-order form).

Neither form claims completeness (``target`` is None); values scale with the logit scale for
``units="score"``. Cost: one forward pass per tower plus one head evaluation per position.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dualex.explanation import Explanation
from dualex.methods import register_method
from dualex.methods.common import (
    Units,
    check_units,
    positive_int,
    row_explanation,
    scores_of,
    side_terms,
    similarity,
    split_prefix,
)
from dualex.models.base import SIDES, DualEncoder, Pair, Side, SideInputs
from dualex.progress import bar


def position_features(model: DualEncoder, side: Side, inputs: SideInputs, *, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """Each position of a tower's last hidden states mapped through the head, and the pooled embedding.

    A position's feature is the head applied to a sequence in which every position holds that
    position's state, so CLS/EOS/last-token pooling, mean pooling and attention pooling all return it.

    Args:
        model: The dual encoder.
        side: Which tower.
        inputs: One row of inputs.
        chunk: Positions per head evaluation.

    Returns:
        ``(T, D)`` per-position features and ``(D,)`` the embedding, float32 (no grad).
    """
    L = model.tower(side).n_layers
    with torch.no_grad():
        h = model.tower(side).hidden(inputs, L)  # (1, T, W)
        e = model.tower(side).tail(inputs, h, L)[0].float()
        T = h.shape[1]
        parts = []
        for start in range(0, T, chunk):
            pos = torch.arange(start, min(start + chunk, T), device=h.device)
            rows = h[0, pos][:, None, :].expand(pos.numel(), T, h.shape[-1])
            parts.append(model.tower(side).tail(inputs, rows, L).float())
    return torch.cat(parts), e


def cam_terms(
    u: Tensor, z: Tensor, e_t: Tensor, e_i: Tensor, g_t: Tensor, g_i: Tensor, *, pairwise: bool
) -> dict[str, Tensor]:
    """The InteractionCAM terms from features and gradients (pure).

    Args:
        u: Text position features ``(S, D)``.
        z: Image position features ``(T, D)``.
        e_t: Text embedding ``(D,)``.
        e_i: Image embedding ``(D,)``.
        g_t: ``∂f/∂e_t`` ``(D,)``.
        g_i: ``∂f/∂e_i`` ``(D,)``.
        pairwise: Token × position map (True) or per-side maps (False).

    Returns:
        ``{"cross": (S, T)}`` or ``{"text_main": (S,), "image_main": (T,)}``.
    """
    gt, gi = g_t.clamp_min(0.0), g_i.clamp_min(0.0)
    if pairwise:
        return {"cross": (u * (gt * gi).sqrt()) @ z.T}
    joint = torch.nn.functional.normalize(e_t, dim=0) * torch.nn.functional.normalize(e_i, dim=0)
    return {"text_main": u @ (joint * gt), "image_main": z @ (joint * gi)}


@register_method(
    "interaction_cam",
    order=2,
    summary="InteractionCAM: gradient-gated products of final-layer token and patch features "
    "(after Sammani et al. 2023; dualex's reading)",
    cost="1 forward pass per tower + 1 head evaluation per position",
)
def explain_interaction_cam(
    model: DualEncoder,
    pair: Pair,
    *,
    pairwise: bool = True,
    units: Units = "cosine",
    internal_batch_size: int = 64,
    fp32: bool = True,
    progress: bool | None = None,
) -> list[Explanation]:
    """InteractionCAM maps of each pair (see the module docstring for the definition).

    After Sammani, Joukovsky, Deligiannis, "Visualizing and Understanding Contrastive Learning",
    IEEE TIP 2023 (arXiv:2206.09753).

    Args:
        model: The dual encoder (any adapter).
        pair: Prepared batch of B pairs.
        pairwise: True: token × patch ``cross`` (second order); False: the paper's per-side maps in
            ``text_main``/``image_main``.
        units: Gradients of the ``"cosine"`` or of the ``"score"``.
        internal_batch_size: Positions per head evaluation.
        fp32: Run fp16/bf16 models in float32.
        progress: Show a progress bar.

    Returns:
        One `Explanation` per pair; ``cross`` ``(S, P)`` (pairwise) or ``text_main``/``image_main``. Image
        prefix (CLS) columns go to ``cross_prefix`` (pairwise) or ``diagnostics["image_prefix"]``.
    """
    check_units(units)
    chunk = positive_int("internal_batch_size", internal_batch_size)
    work = model.float32() if fp32 else model
    scores = scores_of(model, pair)
    out: list[Explanation] = []
    with bar(pair.batch_size, "interaction_cam", progress) as pb:
        for b in range(pair.batch_size):
            inputs = {s: pair.side(s).select([b]) for s in SIDES}
            feats = {s: position_features(work, s, inputs[s], chunk=chunk) for s in SIDES}
            e_t = feats["text"][1].clone().requires_grad_(True)
            e_i = feats["image"][1].clone().requires_grad_(True)
            with torch.enable_grad():
                f = similarity(work, e_t[None], e_i[None], units).sum()
                g_t, g_i = torch.autograd.grad(f, [e_t, e_i])
            t = cam_terms(feats["text"][0], feats["image"][0], e_t.detach(), e_i.detach(), g_t, g_i, pairwise=pairwise)
            terms: dict[str, Any] = {}
            diag: dict[str, float] = {}
            if pairwise:
                terms["cross"], terms["cross_prefix"] = split_prefix(t["cross"].cpu(), pair.image, b)
            else:
                image_terms, diag = side_terms("image", t["image_main"].cpu(), pair.image, b)
                terms.update(text_main=t["text_main"].cpu(), cross=None, **image_terms)
            out.append(
                row_explanation(
                    model,
                    pair,
                    b,
                    scores,
                    method="interaction_cam",
                    params={"pairwise": pairwise, "units": units},
                    diagnostics=diag,
                    **terms,
                )
            )
            pb.update(1)
    return out
