"""Hand-made explanations for the viewer tests, so every expected colour is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dualex.explanation import Explanation
from dualex.images import ImageTransform

CAPTION = "a red circle left of a blue square"
# token positions: 0 <bos>, 1 a, 2 red, 3 circle, 4 left, 5 of, 6 a, 7 blue, 8 square, 9 <eos>
RED, CIRCLE, LEFT, BLUE, SQUARE = 2, 3, 4, 7, 8


def _offsets(text: str) -> list[tuple[int, int]]:
    out, i = [], 0
    for w in text.split():
        j = text.index(w, i)
        out.append((j, j + len(w)))
        i = j + len(w)
    return out


def scene() -> torch.Tensor:
    """A 64×64 model-input picture: a red disc top-left, a blue square bottom-right, grey ground."""
    y, x = np.mgrid[0:64, 0:64]
    img = np.full((64, 64, 3), 200, dtype=np.uint8)
    img[(y - 12) ** 2 + (x - 12) ** 2 < 81] = (220, 30, 30)
    img[(y >= 50) & (y < 62) & (x >= 50) & (x < 62)] = (30, 60, 220)
    return torch.from_numpy(img)


def structured_cross(sign: float = 1.0) -> torch.Tensor:
    """``red``/``circle`` × top-left patch and ``blue``/``square`` × bottom-right patch positive, ``left`` ×
    patch 5 negative, a little noise elsewhere (4×4 grid)."""
    g = torch.Generator().manual_seed(3)
    cross = 0.01 * torch.randn(10, 16, generator=g)
    cross[[0, 9]] = 0.0
    cross[RED, 0] = cross[CIRCLE, 0] = 1.0
    cross[BLUE, 15] = cross[SQUARE, 15] = 0.8
    cross[LEFT, 5] = -0.5
    return sign * cross


def make_explanation(*, method: str = "ij", caption: str = CAPTION, cross: torch.Tensor | None = None,
                     **extra) -> Explanation:
    words = caption.split()
    S = len(words) + 2
    special = torch.zeros(S, dtype=torch.bool)
    special[0] = special[-1] = True
    if cross is None:
        g = torch.Generator().manual_seed(S)
        cross = structured_cross() if caption == CAPTION else torch.randn(S, 16, generator=g)
    kw = dict(
        cross=cross,
        tokens=["<bos>", *words, "<eos>"],
        special=special,
        text=caption,
        grid=(4, 4),
        score=0.42,
        cosine=0.21,
        method=method,
        params={"units": "score"},
        token_offsets=[None, *_offsets(caption), None],
        image_size=(64, 64),
        # an 80×96 photo: short side to 64 (64×77 after rounding), 6.5 px cropped on the left and right
        image_transform=ImageTransform.resize_center_crop((80, 96), 64, (64, 64)),
        image=scene(),
        target=0.40,
        model="hand-made",
    )
    kw.update(extra)
    return Explanation(**kw)


def write_run(root: Path) -> Path:
    """A run-like directory: item0 explained by two methods, item1 (another caption) by one."""
    make_explanation().save(root / "explanations" / "ij" / "item0.safetensors")
    make_explanation(method="fixlip", cross=structured_cross(-1.0), text_main=torch.linspace(-1, 1, 10),
                     image_main=torch.linspace(1, -1, 16)).save(root / "explanations" / "fixlip" / "item0.safetensors")
    make_explanation(caption="two blue squares").save(
        root / "explanations" / "ij" / "item1.safetensors"
    )
    return root


SECOND = "the cat sat on the mat"


def make_text_text() -> Explanation:
    """A bi-encoder explanation: the "image" is the sentence ``SECOND`` (6 tokens, grid (1, 6));
    ``red`` interacts with ``cat`` (+1), ``blue`` with ``mat`` (−1)."""
    words = SECOND.split()
    cross = torch.zeros(10, len(words))
    cross[RED, 1] = 1.0
    cross[BLUE, 5] = -1.0
    return make_explanation(
        cross=cross,
        grid=(1, len(words)),
        image=None,
        image_size=None,
        image_transform=None,
        image_tokens=words,
        image_text=SECOND,
        image_offsets=_offsets(SECOND),
        model="hand-made-sentence",
    )
