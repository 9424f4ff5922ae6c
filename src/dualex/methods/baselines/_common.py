"""Pieces the baseline methods share: the explained similarity, sides, option checks, float copies."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.models.base import SIDES, DualEncoder, Pair, Side

Units = Literal["cosine", "score"]
SideOption = Literal["both", "text", "image"]


def check_units(units: str) -> str:
    if units not in ("cosine", "score"):
        raise InputError(f"units must be 'cosine' or 'score', got {units!r}")
    return units


def sides_of(side: str) -> tuple[Side, ...]:
    """The towers a first-order method attributes: ``"both"`` -> text and image."""
    if side == "both":
        return SIDES
    if side in SIDES:
        return (side,)  # type: ignore[return-value]
    raise InputError(f"side must be 'both', 'text' or 'image', got {side!r}")


def similarity(model: DualEncoder, e_text: Tensor, e_image: Tensor, units: str) -> Tensor:
    """The explained quantity per row, differentiable: cosine, or the model's score for ``units="score"``.

    Args:
        model: The dual encoder (for its logit scale and bias).
        e_text: Text-side embeddings ``(R, D)``.
        e_image: Image-side embeddings ``(R, D)`` (rows broadcast).
        units: ``"cosine"`` or ``"score"`` (``logit_scale · cos + logit_bias``).

    Returns:
        ``(R,)`` float32.
    """
    cos = torch.nn.functional.cosine_similarity(e_text.float(), e_image.float(), dim=-1)
    if units == "score":
        return cos * model.logit_scale + model.logit_bias
    return cos


def own_scores(model: DualEncoder, pair: Pair) -> tuple[Tensor, Tensor]:
    """The model's own score and cosine per row, both ``(B,)`` on CPU."""
    s = model.score(pair)
    return s.score.detach().float().cpu(), s.cosine.detach().float().cpu()


def float_model(model: DualEncoder, fp32: bool) -> DualEncoder:
    """``model`` itself, or with ``fp32`` its float32 twin (`DualEncoder.float32`; itself if already float32)."""
    return model.float32() if fp32 else model


def positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return value


def split_positions(pair: Pair, row: int, values: Tensor) -> tuple[Tensor, float]:
    """A map over the image side's hidden positions ``(T,)`` as ``(patch map (P,), sum over the prefix)``.

    The prefix is what is not a player (CLS and register tokens of a ViT; nothing for SigLIP).
    """
    values = values.detach().float().cpu()
    cols = pair.image.players(row)
    rest = torch.ones(values.shape[0], dtype=torch.bool)
    rest[cols] = False
    return values[cols], float(values[rest].sum())
