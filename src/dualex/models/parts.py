"""Pieces shared by adapters: masking (patches removed after the patch embedding), references, attention.

Pure tensor helpers; the adapters (`dualex.models.openclip`, `dualex.models.sentence`) choose the ids
and the semantics and document them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

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


PATCH_KEEP = "patch_keep"  # ImageInputs.extra key: (K, n_patches) bool, patches kept after the patch embedding
PATCH_FILL = "patch_fill"  # ImageInputs.extra key: (K, 3) normalised colour that removed patches are filled with


def fill_colour(how: str, black: Tensor) -> Tensor:
    """The normalised colour ``(3,)`` a removed patch is filled with for masking ``how``.

    Args:
        how: ``"default"``/``"zeros"``/``"mean"`` (0 in normalised space = the dataset mean colour) or ``"black"``.
        black: Black in normalised space, ``(3, 1, 1)`` or ``(3,)``.
    """
    if how in ("default", "zeros", "mean"):
        return torch.zeros(3)
    if how == "black":
        return black.detach().float().flatten()[:3].cpu()
    raise InputError(f"unknown image masking {how!r}; use 'zeros' or 'black'")


def mask_image_patches(inputs: ImageInputs, keep: Tensor, how: str, black: Tensor) -> ImageInputs:
    """K copies of row 0 with the patches where ``keep`` is False removed (filled with one colour).

    The removal is *recorded*, not applied to pixels: the K rows share row 0's pixels (an expanded view,
    no per-coalition pixel tensor) and ``extra`` holds the coalitions (`PATCH_KEEP`) and the fill colour
    (`PATCH_FILL`). Adapters apply them after the patch embedding (`patch_tokens`): with non-overlapping
    patches, a patch filled with one colour embeds to the embedding of that colour's patch (for the
    default fill, 0 in normalised space, the patch-embedding bias), so the result equals embedding the
    masked pixels (`masked_pixels`) up to float rounding, at the cost of one patch embedding per input.

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
    fill = fill_colour(how, black)
    K = int(keep.shape[0])
    px = inputs.pixels[:1]
    return replace(
        inputs,
        pixels=px.expand(K, *px.shape[1:]),
        transforms=[inputs.transforms[0]] * K,
        display=[inputs.display[0]] * K,
        extra={
            **{k: v[:1].expand(K, *v.shape[1:]) for k, v in inputs.extra.items() if k not in (PATCH_KEEP, PATCH_FILL)},
            PATCH_KEEP: keep.to(px.device),
            PATCH_FILL: fill.to(device=px.device, dtype=px.dtype)[None].expand(K, 3),
        },
    )


def masked_pixels(inputs: ImageInputs) -> Tensor:
    """The pixels ``(B, 3, H, W)`` that recorded patch removals stand for (for plots and checks).

    Patches are the ``grid`` cells of the input canvas; pixels outside the grid (when H or W is not a
    multiple of the patch size) are left as they are.
    """
    keep = inputs.extra.get(PATCH_KEEP)
    if keep is None:
        return inputs.pixels
    H, W = inputs.pixels.shape[-2:]
    rows, cols = inputs.grid
    ph, pw = H // rows, W // cols
    pm = patch_keep_to_pixels(keep.cpu(), inputs.grid, (rows * ph, cols * pw)).to(inputs.pixels)
    pm = torch.nn.functional.pad(pm, (0, W - cols * pw, 0, H - rows * ph), value=1.0)
    fill = inputs.extra[PATCH_FILL].to(inputs.pixels)[:, :, None, None]
    return torch.where(pm.bool(), inputs.pixels, fill.expand_as(inputs.pixels))


def _one_row(x: Tensor) -> bool:
    """True when all rows of ``x`` are one row expanded (stride 0 along the batch)."""
    return x.shape[0] > 1 and x.stride(0) == 0


def patch_tokens(inputs: ImageInputs, embed: Callable[[Tensor], Tensor]) -> Tensor:
    """Patch tokens ``(B, n_patches, W)`` of ``inputs``, with recorded patch removals applied.

    Args:
        inputs: Image inputs, possibly masked by `mask_image_patches`.
        embed: The tower's patch embedding: normalised pixels ``(R, 3, H, W)`` -> ``(R, n_patches, W)``
            (before any class token or position embedding).

    Returns:
        ``embed(pixels)`` for plain inputs. For masked inputs, rows whose pixels are one shared row are
        embedded once; each removed patch takes the embedding of a patch of the fill colour (one broadcast
        selection, exact), which is what ``embed(masked_pixels(inputs))`` gives.
    """
    keep = inputs.extra.get(PATCH_KEEP)
    px = inputs.pixels
    if keep is None:
        return embed(px)
    tokens = embed(px[:1] if _one_row(px) else px)
    fill = inputs.extra[PATCH_FILL].to(px)
    fill = fill[:1] if _one_row(fill) else fill
    fill_tokens = embed(fill[:, :, None, None].expand(fill.shape[0], 3, *px.shape[-2:]))
    return torch.where(keep.to(tokens.device)[:, :, None], tokens, fill_tokens)


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
