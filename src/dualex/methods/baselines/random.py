"""Random attributions (``method="random"``): a seeded sanity floor for every metric.

Not a method of any paper: metrics papers (e.g. Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018, arXiv:1810.03292) compare explanations against random ones, and FIxLIP's pointing-game
analysis gives the random scores to expect (symmetric random-sign noise ≈ 0.5 PGR). A method that does
not beat this baseline carries no information about the model.

Values are i.i.d. draws that do not look at the model beyond the shapes of its inputs. Only player
entries are drawn: rows of special caption positions (BOS, EOS, padding) are zero. Every row of a
batch uses the generator seeded with ``seed``, as its own single call does, so results depend only on
the seed and the shapes, on every device, never on the batch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.methods import register_method
from dualex.methods.common import row_explanation, scores_of
from dualex.methods.shared import own_text_lengths
from dualex.models.base import DualEncoder, Pair

Distribution = Literal["normal", "uniform"]


def draw(shape: tuple[int, ...], generator: torch.Generator, distribution: str, scale: float) -> Tensor:
    """i.i.d. values of ``shape``: N(0, scale²) or U(−scale, scale), float32 on CPU."""
    if distribution == "normal":
        return torch.randn(shape, generator=generator) * scale
    if distribution == "uniform":
        return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * scale
    raise InputError(f"distribution must be 'normal' or 'uniform', got {distribution!r}")


@register_method(
    "random",
    order=2,
    summary="seeded random token × patch and main terms: the sanity floor for metrics",
    cost="no model passes beyond the score",
)
def explain_random(
    model: DualEncoder,
    pair: Pair,
    *,
    seed: int = 0,
    order: int = 2,
    distribution: Distribution = "normal",
    scale: float = 1.0,
    progress: bool | None = None,
) -> list[Explanation]:
    """Random attributions with the shapes of each pair's explanation.

    Args:
        model: The dual encoder (only its score is computed).
        pair: Prepared batch of B pairs.
        seed: Seed of every row's generator (a batch row gets what its single call gets).
        order: 1: ``text_main`` and ``image_main`` only; 2: also ``cross`` (token × patch).
        distribution: ``"normal"`` (N(0, scale²)) or ``"uniform"`` (U(−scale, scale)).
        scale: Spread of the values.
        progress: Accepted for the shared vocabulary of sampling methods; nothing here is slow
            enough to show a bar.

    Returns:
        One `Explanation` per pair; special caption positions are zero; no target.
    """
    if order not in (1, 2):
        raise InputError(f"order must be 1 or 2, got {order!r}")
    if distribution not in ("normal", "uniform"):
        raise InputError(f"distribution must be 'normal' or 'uniform', got {distribution!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if not float(scale) > 0:
        raise InputError(f"scale must be positive, got {scale!r}")
    scores = scores_of(model, pair)
    # draws over each caption's own positions (a batch pads captions to the longest): a row's values are
    # those of its single call, padding rows stay zero
    own = own_text_lengths(model.tower("text").prepare, list(pair.text.texts)) if pair.batch_size > 1 else None
    out: list[Explanation] = []
    for b in range(pair.batch_size):
        g = torch.Generator().manual_seed(seed)  # the row's single call: batches change nothing
        special = pair.text.special[b].bool().cpu()
        S = int(special.numel())
        n = min(S, own[b]) if own is not None else S
        P = int(pair.image.players(b).numel())
        keep = (~special).float()
        text_main = torch.zeros(S)
        text_main[:n] = draw((n,), g, distribution, scale)
        image_main = draw((P,), g, distribution, scale)
        cross = None
        if order == 2:
            cross = torch.zeros(S, P)
            cross[:n] = draw((n, P), g, distribution, scale)
        terms: dict[str, Any] = {
            "text_main": text_main * keep,
            "image_main": image_main,
            "cross": cross * keep[:, None] if cross is not None else None,
        }
        out.append(
            row_explanation(
                model,
                pair,
                b,
                scores,
                method="random",
                params={"seed": seed, "order": order, "distribution": distribution, "scale": scale},
                **terms,
            )
        )
    return out
