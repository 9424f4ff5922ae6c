"""LeGrad (``method="legrad"``): layer-wise gradients of the score with respect to the attention maps.

Bousselham, Boggust, Chaybouti, Strobelt, Kuehne, "LeGrad: An Explainability Method for Vision
Transformers via Feature Formation Sensitivity", 2024 (arXiv:2404.03214). Written from the paper's
description; checked against its public wrapper's defaults.

For every block ℓ from ``start_layer`` on, the states leaving that block are sent through the tower's
head, giving an intermediate image embedding ``z^ℓ``, and scored against the caption:
``s^ℓ = cos(z^ℓ, e_text)``. Its gradient with respect to block ℓ's attention probabilities ``A^ℓ``
``(H, T, T)`` is rectified and averaged over heads and query positions, and the per-layer maps are
summed:

    map[k] = Σ_{ℓ ≥ start} mean_{h, q} ReLU(∂s^ℓ / ∂A^ℓ_{h, q, k}).

Only the direct effect of ``A^ℓ`` on ``s^ℓ`` counts (``A^ℓ`` enters ``z^ℓ`` through block ℓ alone).
Probabilities are kept in the autograd graph by running the tower block by block
(`DualEncoder.attention_blocks`), so the gradient is exact for every adapter.

Readings, stated: ``start_layer=-2`` (the last two blocks) is the default of the authors' wrapper
(``layer_index=-2``). The intermediate embedding is the tower's own head on layer ℓ's states
(`DualEncoder.tail` at ``n_layers``): the CLS token for CLIP, the attention-pooling head for SigLIP
(as the authors' SigLIP code does; their CLIP code mean-pools all tokens before the final norm
instead). The paper min–max normalises the map for display; dualex reports it unnormalised (≥ 0).

Image side only (LeGrad explains vision transformers). Outputs: ``image_main`` ``(P,)`` ≥ 0, the
CLS/prefix key's share in ``diagnostics["image_prefix"]``. First-order: for a span-conditional map
explain (image, span text).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.methods import register_method
from dualex.methods.common import row_explanation, scores_of, side_terms
from dualex.models.base import DualEncoder, Pair, SideInputs
from dualex.progress import bar


def legrad_map(model: DualEncoder, inputs: SideInputs, e_text: Tensor, start: int) -> Tensor:
    """LeGrad relevance of every image position ``(T,)`` (row 0 of ``inputs``), float32.

    Args:
        model: A dual encoder with attention internals.
        inputs: One-row image inputs.
        e_text: The caption embedding ``(D,)``.
        start: First block whose attention map contributes (0..n_layers-1).
    """
    L = model.tower("image").n_layers
    t = torch.nn.functional.normalize(e_text.detach().float(), dim=-1)
    with torch.no_grad():
        x = model.tower("image").hidden(inputs, 0)
    mask = model.tower("image").attention_mask(inputs, x.shape[0], x.dtype)
    total = torch.zeros(x.shape[1], dtype=torch.float32, device=x.device)
    with torch.enable_grad():
        for layer, block in enumerate(model.tower("image").attention_blocks()):
            if layer < start:
                with torch.no_grad():
                    x, _ = block.run(x, mask)
                continue
            q, k, v = block.qkv(x)
            A = block.probs(q, k, mask).detach().requires_grad_(True)
            x = block.finish(x, A, v)
            z = model.tower("image").tail(inputs, x, L)
            s = torch.nn.functional.cosine_similarity(z[0].float(), t, dim=-1)
            (g,) = torch.autograd.grad(s, A, retain_graph=layer < L - 1)
            total = total + g[0].float().clamp_min(0.0).mean(dim=(0, 1))
    return total


@register_method(
    "legrad",
    order=1,
    summary="LeGrad: rectified gradients of layer-wise scores w.r.t. attention maps, per patch "
    "(Bousselham et al., 2024)",
    cost="1 forward + (n_layers - start_layer) backward passes per pair",
)
def explain_legrad(
    model: DualEncoder,
    pair: Pair,
    *,
    start_layer: int = -2,
    fp32: bool = True,
    progress: bool | None = None,
) -> list[Explanation]:
    """LeGrad maps of each pair's image patches.

    Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via Feature Formation
    Sensitivity", 2024.

    Args:
        model: A transformers CLIP/SigLIP/SigLIP-2 or open_clip ViT model.
        pair: Prepared batch of B pairs.
        start_layer: First block whose attention contributes (negative counts from the end; default the
            last two blocks, the authors' default).
        fp32: Differentiate fp16/bf16 models in float32.
        progress: Show a progress bar.

    Returns:
        One `Explanation` per pair with ``image_main`` ``(P,)`` ≥ 0, no target; diagnostics
        ``image_prefix`` and ``start_layer``.

    Raises:
        InputError: ``start_layer`` out of range.
        UnsupportedModelError: the model exposes no attention internals.
    """
    work = model.float32() if fp32 else model
    L = work.tower("image").n_layers
    start = work.tower("image").check_layer(start_layer)
    if start >= L:
        raise InputError(f"start_layer must name a block (0..{L - 1} or -{L}..-1), got {start_layer}")
    scores = scores_of(model, pair)
    out: list[Explanation] = []
    with bar(pair.batch_size, "legrad", progress) as pb:
        for b in range(pair.batch_size):
            with torch.no_grad():
                e_text = work.tower("text").encode(pair.text.select([b]))[0]
            rel = legrad_map(work, pair.image.select([b]), e_text, start)
            terms, diag = side_terms("image", rel.detach().cpu(), pair.image, b)
            diag["start_layer"] = float(start)
            params = {"start_layer": start_layer}
            out.append(
                row_explanation(
                    model, pair, b, scores, method="legrad", params=params, cross=None, diagnostics=diag, **terms
                )
            )
            pb.update(1)
    return out
