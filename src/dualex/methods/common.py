"""Pieces every method shares: building an `Explanation` from a prepared pair row."""

from __future__ import annotations

from typing import Any

import torch

from dualex.explanation import Explanation
from dualex.models.base import DualEncoder, ImageInputs, Pair, TextInputs


def scores_of(model: DualEncoder, pair: Pair) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own score and cosine per row, both ``(B,)`` on CPU."""
    s = model.score(pair)
    return s.score.detach().float().cpu(), s.cosine.detach().float().cpu()


def build_explanation(
    model: DualEncoder,
    pair: Pair,
    row: int,
    *,
    method: str,
    params: dict[str, Any],
    score: float,
    cosine: float,
    **terms: Any,
) -> Explanation:
    """An `Explanation` for row ``row`` of ``pair`` with the given attribution ``terms``.

    ``terms`` are Explanation fields (``cross``, ``text_main``, ``target``, ``diagnostics``...).
    """
    t: TextInputs = pair.text
    img = pair.image
    meta: dict[str, Any] = {}
    if isinstance(img, ImageInputs):
        tf = img.transforms[row]
        meta.update(
            grid=img.grid,
            image_size=tuple(tf.input_size),
            image_transform=tf,
            image=img.display[row] if img.display else None,
        )
    else:  # text-text bi-encoder: the second sentence's player tokens are the "patches"
        pos = img.players(row)
        meta.update(
            grid=(1, int(pos.numel())),
            image_tokens=[img.tokens[row][i] for i in pos.tolist()],
            image_text=img.texts[row],
            image_offsets=[img.offsets[row][i] for i in pos.tolist()],
        )
    return Explanation(
        tokens=list(t.tokens[row]),
        special=t.special[row].cpu(),
        text=t.texts[row],
        token_offsets=list(t.offsets[row]),
        score=float(score),
        cosine=float(cosine),
        method=method,
        params=params,
        model=model.name,
        **meta,
        **terms,
    )
