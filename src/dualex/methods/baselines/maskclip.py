"""MaskCLIP (``method="maskclip"``): value-path features of the last attention layer, scored against the caption.

Zhou, Loy, Dai, "Extract Free Dense Labels from CLIP", ECCV 2022 (arXiv:2112.01071). Written from the
paper's description.

CLIP's image embedding is read at one pooled position, whose last attention layer mixes every patch
in through ``q·k`` attention. MaskCLIP drops that mixing in the last block: each position keeps its
own value, i.e. the block runs with the **identity** attention,

    x₁ = x + out_proj(v(norm₁ x)),      x₂ = x₁ + mlp(norm₂ x₁),

and the tower's head (final norm and projection) is applied to every position, giving dense features
``z_t`` in the joint space. The map is the cosine of each patch's feature with the caption embedding
``e_text``: ``map[p] = cos(z_p, e_text)`` (MaskCLIP's per-pixel class logits before the temperature).

Per family (through `DualEncoder.attention_blocks` and `DualEncoder.project_tokens`, no family code
here): CLIP ViTs as above. SigLIP's image tower has no CLS token and pools with an attention head;
dualex takes the last block's value path as for CLIP and then each position's value through the
pooling head (value and output projections, then the head's residual MLP), which is MaskCLIP's own
recipe for CLIP's attention-pooled ResNet towers. That extension to SigLIP is dualex's reading.

Image side only (the paper defines no text map). Outputs: ``image_main`` ``(P,)`` signed cosines, the
CLS/prefix entry in ``diagnostics["image_prefix"]``. First-order: for a span-conditional map explain
(image, span text), as MaskCLIP scores each class name.
"""

from __future__ import annotations

import torch

from dualex.explanation import Explanation
from dualex.methods import register_method
from dualex.methods.common import row_chunks, row_explanation, rows_per_pass, scores_of, side_terms
from dualex.models.base import DualEncoder, Pair, SideInputs
from dualex.progress import bar


def value_path_features(model: DualEncoder, inputs: SideInputs) -> torch.Tensor:
    """MaskCLIP's dense image features ``(R, T, D)``: the last block with identity attention, then the head.

    Args:
        model: A dual encoder with attention internals (`DualEncoder.attention_blocks`).
        inputs: Image inputs with R rows.
    """
    L = model.tower("image").n_layers
    x = model.tower("image").hidden(inputs, L - 1)
    block = model.tower("image").attention_blocks()[-1]
    _, _, v = block.qkv(x)
    eye = torch.eye(x.shape[1], dtype=v.dtype, device=v.device).expand(x.shape[0], block.n_heads, -1, -1)
    return model.tower("image").project_tokens(inputs, block.finish(x, eye, v))


@register_method(
    "maskclip",
    order=1,
    summary="MaskCLIP: last-layer value features of each patch, cosine with the caption (Zhou et al., ECCV 2022)",
    cost="1 forward pass per pair",
)
def explain_maskclip(
    model: DualEncoder,
    pair: Pair,
    *,
    fp32: bool = True,
    internal_batch_size: int | None = None,
    progress: bool | None = None,
) -> list[Explanation]:
    """MaskCLIP maps of each pair's image patches.

    Zhou, Loy, Dai, "Extract Free Dense Labels from CLIP", ECCV 2022.

    Args:
        model: A transformers CLIP/SigLIP/SigLIP-2 or open_clip ViT model.
        pair: Prepared batch of B pairs.
        fp32: Run fp16/bf16 models in float32.
        internal_batch_size: Pairs per forward pass (memory bound; default 16 on CPU, 256 on CUDA).
        progress: Show a progress bar.

    Returns:
        One `Explanation` per pair with ``image_main`` ``(P,)`` (cosines in [-1, 1]), no target;
        diagnostic ``image_prefix`` (the CLS/prefix entry, if any).

    Raises:
        UnsupportedModelError: the model exposes no attention internals (text-text bi-encoders).
    """
    work = model.float32() if fp32 else model
    chunk = rows_per_pass(internal_batch_size, work.device)
    scores = scores_of(model, pair)
    out: list[Explanation] = []
    with bar(pair.batch_size, "maskclip", progress) as pb, torch.no_grad():
        for rows in row_chunks(pair.batch_size, chunk):  # pairs are independent rows: one pass per chunk
            e_text = torch.nn.functional.normalize(work.tower("text").encode(pair.text.select(rows)).float(), dim=-1)
            dense = torch.nn.functional.normalize(value_path_features(work, pair.image.select(rows)).float(), dim=-1)
            maps = torch.einsum("rpd,rd->rp", dense, e_text).cpu()
            for k, b in enumerate(rows):
                terms, diag = side_terms("image", maps[k], pair.image, b)
                out.append(
                    row_explanation(
                        model, pair, b, scores, method="maskclip", params={}, cross=None, diagnostics=diag, **terms
                    )
                )
            pb.update(len(rows))
    return out
