"""CLIP Surgery (``method="clip_surgery"``): value–value attention and feature surgery.

Li, Wang, Yang, Guo, Zhang, Zheng, "A Closer Look at the Explainability of Contrastive Language-Image
Pre-training", Pattern Recognition 2025 (arXiv:2304.05653, 2023). Written from the paper's description.

**Architecture surgery.** From block ``L − depth`` on, a second path runs beside the model's own: at
each of those blocks it adds the block's attention output computed with **value–value** attention
``softmax(v vᵀ · scale + mask)`` (queries and keys replaced by the values), read from the original
path's states, and it skips the MLPs:

    x_new ← x_new + attn_vv(norm₁ x_ori),     x_ori ← block(x_ori)       (x_new = x_ori at the start).

The tower's head is applied to every position of ``x_new`` (`DualEncoder.project_tokens`), giving
dense features ``z_t``; the model's own embedding (the original path) is unchanged.

**Feature surgery.** Features common to every text ("redundant features") are removed. With one
caption, as dualex explains, the paper subtracts the embedding of the empty prompt:

    map[p] = ẑ_p · (ê_text − ê_""),     ^ = L2-normalised.

The empty prompt is the adapter's ``"default"`` text reference (`DualEncoder.reference`): for SigLIP
exactly the tokenised empty caption, for CLIP ``[BOS, "!", EOS]`` (exCLIP's empty reference; dualex
tokenizers refuse an empty string). ``redundant="none"`` keeps the plain cosine ``ẑ_p · ê_text``.
(With several class prompts the paper subtracts their class-weighted mean instead; dualex explains one
caption at a time.)

Defaults and readings, stated: ``depth`` defaults to half the blocks (6 of 12 for ViT-B, as the
authors' code modifies the last six); the value–value attention uses the block's own dot-product
scale and mask. SigLIP has no CLS token; its dense features are the positions' values through the
attention-pooling head (as for MaskCLIP, `dualex.methods.baselines.maskclip`), dualex's reading.

Image side only (the paper defines no text map). Outputs: ``image_main`` ``(P,)`` (signed), the
CLS/prefix entry in ``diagnostics["image_prefix"]``. First-order: for a span-conditional map explain
(image, span text).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.methods import register_method
from dualex.methods.common import row_chunks, row_explanation, rows_per_pass, scores_of, side_terms
from dualex.models.base import DualEncoder, Pair, SideInputs
from dualex.progress import bar

Redundant = Literal["empty", "none"]


def surgery_features(model: DualEncoder, inputs: SideInputs, depth: int) -> Tensor:
    """Dense image features ``(R, T, D)`` of the value–value path over the last ``depth`` blocks.

    Args:
        model: A dual encoder with attention internals.
        inputs: Image inputs with R rows.
        depth: Number of final blocks with the second path (1..n_layers).
    """
    L = model.tower("image").n_layers
    start = L - depth
    x_ori = model.tower("image").hidden(inputs, start)
    x_new = x_ori
    mask = model.tower("image").attention_mask(inputs, x_ori.shape[0], x_ori.dtype)
    for block in model.tower("image").attention_blocks()[start:]:
        q, k, v = block.qkv(x_ori)
        vv = block.probs(v, v, mask)
        x_new = x_new + block.attention_branch(torch.matmul(vv, v))
        x_ori = block.finish(x_ori, block.probs(q, k, mask), v)
    return model.tower("image").project_tokens(inputs, x_new)


@register_method(
    "clip_surgery",
    order=1,
    summary="CLIP Surgery: value-value attention path and feature surgery, per patch (Li et al., 2023/2025)",
    cost="1 forward pass per pair (+1 text pass for the empty prompt)",
)
def explain_clip_surgery(
    model: DualEncoder,
    pair: Pair,
    *,
    depth: int | None = None,
    redundant: Redundant = "empty",
    fp32: bool = True,
    internal_batch_size: int | None = None,
    progress: bool | None = None,
) -> list[Explanation]:
    """CLIP Surgery maps of each pair's image patches.

    Li et al., "A Closer Look at the Explainability of Contrastive Language-Image Pre-training", 2023.

    Args:
        model: A transformers CLIP/SigLIP/SigLIP-2 or open_clip ViT model.
        pair: Prepared batch of B pairs.
        depth: Blocks (from the end) with the value–value path; default half the blocks (at least 1).
        redundant: ``"empty"`` subtracts the empty prompt's embedding (the paper's single-text surgery),
            ``"none"`` keeps the plain cosine.
        fp32: Run fp16/bf16 models in float32.
        internal_batch_size: Pairs per forward pass (memory bound; default 16 on CPU, 256 on CUDA).
        progress: Show a progress bar.

    Returns:
        One `Explanation` per pair with ``image_main`` ``(P,)``, no target; diagnostics
        ``image_prefix`` and ``depth``.

    Raises:
        InputError: ``depth`` outside 1..n_layers or an unknown ``redundant``.
        UnsupportedModelError: the model exposes no attention internals.
    """
    if redundant not in ("empty", "none"):
        raise InputError(f"redundant must be 'empty' or 'none', got {redundant!r}")
    work = model.float32() if fp32 else model
    L = work.tower("image").n_layers
    d = max(L // 2, 1) if depth is None else depth
    if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= L:
        raise InputError(f"depth must be an integer in 1..{L} (blocks of the image tower), got {depth!r}")
    chunk = rows_per_pass(internal_batch_size, work.device)
    scores = scores_of(model, pair)
    out: list[Explanation] = []
    with bar(pair.batch_size, "clip_surgery", progress) as pb, torch.no_grad():
        for rows in row_chunks(pair.batch_size, chunk):  # pairs are independent rows: one pass per chunk
            text = pair.text.select(rows)
            e_text = torch.nn.functional.normalize(work.tower("text").encode(text).float(), dim=-1)
            target = e_text
            if redundant == "empty":
                empty = work.tower("text").encode(work.tower("text").reference(text, "default"))
                target = e_text - torch.nn.functional.normalize(empty.float(), dim=-1)
            dense = torch.nn.functional.normalize(surgery_features(work, pair.image.select(rows), d).float(), dim=-1)
            maps = torch.einsum("rpd,rd->rp", dense, target).cpu()
            for k, b in enumerate(rows):
                terms, diag = side_terms("image", maps[k], pair.image, b)
                params = {"depth": depth, "redundant": redundant}
                diag["depth"] = float(d)
                out.append(
                    row_explanation(
                        model, pair, b, scores, method="clip_surgery", params=params, cross=None, diagnostics=diag,
                        **terms,
                    )
                )  # fmt: skip
            pb.update(len(rows))
    return out
