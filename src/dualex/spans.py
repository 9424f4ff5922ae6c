"""Resolving what users point at: caption spans -> token positions, boxes -> patch masks."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.images import ImageTransform

Span = str | tuple[int, int] | Sequence[int] | Tensor | None
Box = tuple[float, float, float, float] | Sequence[float] | Tensor


def _is_int(x: object) -> bool:
    """True for a plain integer (a user's single token index), not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def span_positions(
    span: Span,
    *,
    text: str,
    tokens: Sequence[str],
    special: Tensor,
    offsets: Sequence[tuple[int, int] | None],
    occurrence: int = 0,
) -> Tensor:
    """Token positions ``(k,)`` named by ``span``.

    Args:
        span: Words of the caption (case-insensitive; the ``occurrence``-th match), a ``(start, stop)``
            token range (stop exclusive), a list of token indices, a boolean mask over tokens, or None
            for all non-special tokens.
        text: The caption.
        tokens: Token strings (S).
        special: ``(S,)`` bool, non-player positions.
        offsets: Character spans of the tokens (None for specials).
        occurrence: Which match to use when the words occur several times.

    Raises:
        InputError: the words are not in the caption, or indices are out of range.
    """
    S = len(tokens)
    players = torch.nonzero(~special.bool().cpu(), as_tuple=False).flatten()
    if span is None:
        return players
    if isinstance(span, str):
        words = span.strip()
        if not words:
            raise InputError("empty span; name words of the caption, e.g. span='red circle'")
        pattern = r"\s+".join(re.escape(w) for w in words.lower().split())
        matches = list(re.finditer(pattern, text.lower()))
        if not matches:
            raise InputError(f"span {span!r} does not occur in the caption {text!r}")
        if occurrence >= len(matches):
            raise InputError(f"span {span!r} occurs {len(matches)} time(s) in the caption; occurrence={occurrence}")
        m = matches[occurrence]
        pos = [i for i, o in enumerate(offsets) if o is not None and o[0] < m.end() and o[1] > m.start()]
        if not pos:
            ends = [o[1] for o in offsets if o is not None]
            if ends and m.start() >= max(ends):
                raise InputError(
                    f"span {span!r} lies in the part of the caption that does not fit the model's context "
                    f"(its {S} token positions end at ...{text[max(0, max(ends) - 30) : max(ends)]!r}); "
                    "shorten the caption"
                )
            raise InputError(f"span {span!r} occurs in the caption but no caption token covers it")
        return torch.tensor(pos, dtype=torch.long)
    if isinstance(span, Tensor) and span.dtype == torch.bool:
        if span.numel() != S:
            raise InputError(f"a boolean span must have one entry per token ({S}), got {span.numel()}")
        return torch.nonzero(span.cpu(), as_tuple=False).flatten()
    if isinstance(span, tuple) and len(span) == 2 and all(isinstance(v, int) for v in span):
        start, stop = span
        if not 0 <= start < stop <= S:
            raise InputError(f"token range {span} is outside 0..{S} (the caption has {S} token positions)")
        return torch.arange(start, stop)
    if not isinstance(span, Tensor) and hasattr(span, "tolist") and not isinstance(span, (str, bytes)):
        span = torch.as_tensor(span)  # numpy arrays
    if isinstance(span, Tensor):
        if span.is_floating_point() or span.is_complex():
            raise InputError(f"a tensor span must hold token indices (integers) or be a boolean mask, got {span.dtype}")
    elif not isinstance(span, (list, tuple, range)) or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in span
    ):
        raise InputError(
            f"cannot use {type(span).__name__} {span!r:.40} as a caption span; give caption words (a string), "
            "a (start, stop) token range, a list of token indices, or a boolean mask over the tokens"
            + (f" (one token: [{span}])" if _is_int(span) else "")
        )
    idx = torch.as_tensor(list(span) if not isinstance(span, Tensor) else span, dtype=torch.long).flatten()
    if idx.numel() == 0:
        raise InputError("empty list of token indices")
    if int(idx.min()) < -S or int(idx.max()) >= S:
        raise InputError(f"token indices {idx.tolist()} out of range for {S} token positions")
    return idx % S


def box_patch_weights(
    box: Box, *, grid: tuple[int, int], transform: ImageTransform, check: bool = True
) -> Tensor:
    """Fraction of each patch covered by ``box``, ``(rows, cols)`` in [0, 1].

    Args:
        box: ``(x0, y0, x1, y1)`` in pixels of the *original* image.
        grid: Patch grid ``(rows, cols)``.
        transform: How the original image maps onto the model input.
        check: Raise if the box is outside the original image or empty.
    """
    values = box.flatten().tolist() if isinstance(box, Tensor) else box
    if hasattr(values, "tolist") and not isinstance(values, (str, bytes)):  # numpy arrays
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values
    ):
        raise InputError(
            f"cannot use {type(box).__name__} {box!r:.40} as a box; give (x0, y0, x1, y1) as four numbers in "
            "original-image pixels, a list of such boxes, or a boolean patch mask"
        )
    b = [float(v) for v in values]
    if len(b) != 4:
        raise InputError(f"a box is (x0, y0, x1, y1); got {len(b)} numbers")
    if not all(math.isfinite(v) for v in b):
        raise InputError(f"box {tuple(b)} has a coordinate that is not a finite number")
    x0, y0, x1, y1 = b
    H0, W0 = transform.original_size
    if check:
        if not (x1 > x0 and y1 > y0):
            raise InputError(f"box {tuple(b)} is empty: need x1 > x0 and y1 > y0")
        tol = 1.0
        if x0 < -tol or y0 < -tol or x1 > W0 + tol or y1 > H0 + tol:
            raise InputError(f"box {tuple(b)} lies outside the image of size {W0}x{H0} (width x height)")
    nx0, ny0, nx1, ny1 = transform.box_to_input((x0, y0, x1, y1))
    H, W = transform.input_size
    rows, cols = grid
    ph, pw = H / rows, W / cols
    ys = torch.arange(rows, dtype=torch.float64) * ph
    xs = torch.arange(cols, dtype=torch.float64) * pw
    oy = (torch.clamp(torch.minimum(ys + ph, torch.tensor(ny1)) - torch.maximum(ys, torch.tensor(ny0)), min=0)) / ph
    ox = (torch.clamp(torch.minimum(xs + pw, torch.tensor(nx1)) - torch.maximum(xs, torch.tensor(nx0)), min=0)) / pw
    return (oy[:, None] * ox[None, :]).float()


def box_patch_mask(box: Box, *, grid: tuple[int, int], transform: ImageTransform, min_overlap: float = 0.5) -> Tensor:
    """Patches covered by the box to at least ``min_overlap`` of their area, ``(rows, cols)`` bool.

    If no patch reaches ``min_overlap`` (a box smaller than a patch), the patch with the largest overlap
    is used, so that a valid box always selects something.
    """
    w = box_patch_weights(box, grid=grid, transform=transform)
    m = w >= min_overlap
    if not bool(m.any()):
        if float(w.max()) <= 0:
            raise InputError(f"box {tuple(box)} does not overlap the model's view of the image (cropped away?)")
        m = w == w.max()
    return m


def as_patch_mask(region: Any, *, grid: tuple[int, int], transform: ImageTransform | None) -> Tensor:
    """A box, a list of boxes (union), or a ``(rows, cols)``/flat bool mask -> ``(rows, cols)`` bool."""
    if isinstance(region, Tensor) and region.dtype == torch.bool:
        if region.numel() != grid[0] * grid[1]:
            raise InputError(f"a patch mask needs {grid[0] * grid[1]} entries, got {region.numel()}")
        return region.reshape(grid).cpu()
    if transform is None:
        raise InputError("this explanation has no image transform; pass a boolean patch mask instead of a box")
    if isinstance(region, (list, tuple)) and region and isinstance(region[0], (list, tuple, Tensor)):
        out = torch.zeros(grid, dtype=torch.bool)
        for b in region:
            out |= box_patch_mask(b, grid=grid, transform=transform)
        return out
    return box_patch_mask(region, grid=grid, transform=transform)
