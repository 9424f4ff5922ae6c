"""Pieces shared by adapters that are not transformers CLIP/SigLIP: masking, references, attention.

Pure tensor helpers; the adapters (`dualex.models.openclip`, `dualex.models.sentence`) choose the ids
and the semantics and document them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.models.base import ImageInputs, TextInputs
from dualex.models.preprocess import patch_keep_to_pixels


def as_coalitions(keep: Tensor | Sequence[bool] | Sequence[Sequence[bool]], n_players: int, side: str) -> Tensor:
    """``keep`` as a bool ``(K, n_players)`` matrix (a single ``(n_players,)`` row is allowed)."""
    if not isinstance(keep, Tensor):
        keep = torch.as_tensor(keep)
    keep = keep.to(torch.bool)
    if keep.dim() == 1:
        keep = keep[None]
    if keep.dim() != 2 or keep.shape[1] != n_players:
        raise InputError(
            f"{side} coalitions must be a (K, {n_players}) boolean matrix (one column per player), "
            f"got shape {tuple(keep.shape)}"
        )
    return keep


def mask_image_patches(inputs: ImageInputs, keep: Tensor, how: str, black: Tensor) -> ImageInputs:
    """K copies of row 0 with the patches where ``keep`` is False replaced.

    Args:
        inputs: Image inputs; row 0 is masked.
        keep: ``(K, n_patches)`` bool, True = patch kept.
        how: ``"default"``/``"zeros"``/``"mean"`` (0 in normalised space = the dataset mean colour) or
            ``"black"``.
        black: Black in normalised space, ``(3, 1, 1)``.

    Returns:
        `ImageInputs` with K rows.
    """
    keep = as_coalitions(keep, inputs.n_patches, "image")
    one = inputs.select([0] * keep.shape[0])
    H, W = one.pixels.shape[-2:]
    pm = patch_keep_to_pixels(keep.cpu(), inputs.grid, (H, W)).to(one.pixels)
    if how in ("default", "zeros", "mean"):
        fill = torch.zeros_like(one.pixels)
    elif how == "black":
        fill = black.to(one.pixels).expand_as(one.pixels)
    else:
        raise InputError(f"unknown image masking {how!r}; use 'zeros' or 'black'")
    one.pixels = one.pixels * pm + fill * (1 - pm)
    return one


def mask_text_players(inputs: TextInputs, keep: Tensor, how: str, filler_id: int) -> TextInputs:
    """K copies of row 0 with the player tokens where ``keep`` is False removed.

    Args:
        inputs: Text inputs; row 0 is masked.
        keep: ``(K, n_players)`` bool, True = token kept.
        how: ``"default"``/``"attention"``: attention mask 0 at removed tokens (ids unchanged);
            ``"pad"``: removed ids replaced by ``filler_id`` (mask unchanged).
        filler_id: Token id put in place of removed tokens for ``"pad"``.
    """
    players = inputs.players(0)
    keep = as_coalitions(keep, int(players.numel()), "text")
    out = inputs.select([0] * keep.shape[0])
    pos = players.to(out.ids.device)
    k = keep.to(out.ids.device)
    if how in ("default", "attention"):
        mask = out.mask.clone()
        mask[:, pos] = k.long() * mask[:, pos]
        out.mask = mask
    elif how == "pad":
        ids = out.ids.clone()
        ids[:, pos] = torch.where(k, ids[:, pos], torch.full_like(ids[:, pos], filler_id))
        out.ids = ids
    else:
        raise InputError(f"unknown text masking {how!r}; use 'attention' or 'pad'")
    return out


def image_reference(inputs: ImageInputs, kind: str, black: Tensor) -> ImageInputs:
    """Reference images of the same shape: ``"zeros"`` (= ``"default"``), ``"black"`` or ``"noise"``."""
    ref = inputs.select(list(range(inputs.batch_size)))
    if kind in ("default", "zeros"):
        ref.pixels = torch.zeros_like(inputs.pixels)
    elif kind == "black":
        ref.pixels = black.to(inputs.pixels).expand_as(inputs.pixels).clone()
    elif kind == "noise":
        g = torch.Generator().manual_seed(0)
        ref.pixels = torch.randn(inputs.pixels.shape, generator=g).to(inputs.pixels)
    else:
        raise InputError(f"unknown image reference {kind!r}; use 'zeros', 'black' or 'noise'")
    return ref


def end_positions(inputs: TextInputs, eos_id: int) -> Tensor:
    """Per row, the first position holding ``eos_id`` (else the last attended position), ``(B,)``."""
    hit = inputs.ids == eos_id
    first = hit.int().argmax(-1)
    last_attended = (inputs.mask.long().cumsum(-1).argmax(-1)).to(first.device)
    return torch.where(hit.any(-1), first, last_attended).long()


def bos_filler_eos_reference(
    inputs: TextInputs,
    kind: str,
    *,
    bos_id: int,
    eos_id: int,
    filler_id: int,
    pad_id: int,
    pool_index: Callable[[Tensor, Tensor], Tensor],
) -> TextInputs:
    """BOS + fillers + EOS (+ padding) references with the caption's sequence length.

    Args:
        inputs: The captions.
        kind: ``"default"``: ``[BOS, filler, EOS, pad, ...]`` (exCLIP's reference);
            ``"same_length"``: ``[BOS, filler * n, EOS, pad, ...]`` with EOS where the caption has it.
        bos_id, eos_id, filler_id, pad_id: Token ids.
        pool_index: ``fn(ids, mask) -> (B,)``, the tower's pooling position for the reference.

    Returns:
        `TextInputs` with every position marked special, attention mask 1 up to EOS.
    """
    if kind not in ("default", "same_length"):
        raise InputError(f"unknown text reference {kind!r}; use 'default' or 'same_length'")
    ref = inputs.select(list(range(inputs.batch_size)))
    B, S = inputs.ids.shape
    if kind == "same_length":
        eos_at = end_positions(inputs, eos_id)
    else:
        eos_at = torch.full((B,), 2, dtype=torch.long, device=inputs.ids.device)
    if int(eos_at.max()) >= S:
        raise InputError(f"captions of {S} positions are too short for the {kind!r} text reference")
    pos = torch.arange(S, device=inputs.ids.device)[None]
    e = eos_at[:, None]
    ids = torch.where(pos < e, filler_id, torch.where(pos == e, eos_id, pad_id))
    ids[:, 0] = bos_id
    ref.ids = ids.to(inputs.ids.dtype)
    ref.mask = (pos <= e).to(inputs.mask.dtype)
    ref.special = torch.ones_like(inputs.special)
    ref.pool_index = pool_index(ref.ids, ref.mask)
    return ref


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float | Tensor) -> Tensor:
    """Plain attention ``softmax(q kᵀ · scale + mask) v`` on ``(R, H, T, d)`` tensors.

    Written out (no fused kernel), so that ``torch.func.jvp``/``vjp``/``vmap`` apply on every device.
    """
    scores = torch.matmul(q * scale, k.transpose(-1, -2))
    if mask is not None:
        scores = scores + mask
    return torch.matmul(scores.softmax(dim=-1), v)
