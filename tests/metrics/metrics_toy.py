"""A dual encoder whose score is a known second-order polynomial of the kept players.

``v(S) = intercept + Σ_{i∈S} main_i + Σ_{{i,j}⊆S} pairs_ij`` over the caption's word tokens (first) and
the image patches. Used to test metrics against games whose answer is known exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dualex.explanation import Explanation
from dualex.images import ImageTransform
from dualex.methods.common import build_explanation
from dualex.models.base import DualEncoder, ImageInputs, Pair, Scores, SideInputs, TextInputs
from dualex.models.tower import Tower


class ToyText(Tower):
    """The caption side: its hidden state is the kept-word indicator."""

    owner: ToyEncoder
    modality = "text"

    def prepare(self, raw: list[Any]) -> TextInputs:
        texts, n_text = list(raw), self.owner.n_text
        rows = []
        for t in texts:
            words, offs, pos = [], [], 0
            for w in t.split():
                start = t.index(w, pos)
                words.append(w)
                offs.append((start, start + len(w)))
                pos = start + len(w)
            assert len(words) == n_text, "the toy model is built for a fixed number of words"
            rows.append((["<bos>", *words, "<eos>"], [None, *offs, None]))
        S = n_text + 2
        special = torch.zeros(len(texts), S, dtype=torch.bool)
        special[:, 0] = special[:, -1] = True
        return TextInputs(
            ids=torch.arange(S).repeat(len(texts), 1),
            mask=torch.ones(len(texts), S, dtype=torch.long),
            tokens=[r[0] for r in rows],
            special=special,
            pool_index=torch.full((len(texts),), S - 1),
            texts=list(texts),
            offsets=[r[1] for r in rows],
        )

    @property
    def n_layers(self) -> int:
        return 0

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        assert isinstance(inputs, TextInputs)
        return inputs.mask[:, 1:-1].double()[..., None]

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        return hidden[..., 0]

    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        assert isinstance(inputs, TextInputs)
        out = inputs.select([0] * keep.shape[0])
        out.mask = out.mask.clone()
        out.mask[:, 1:-1] = keep.bool().long()
        return out

    def reference(self, inputs: SideInputs, kind: str = "default") -> SideInputs:
        return self.mask(inputs, torch.zeros(inputs.batch_size, self.owner.n_text, dtype=torch.bool))


class ToyImage(Tower):
    """The image side: one pixel per patch, its hidden state the kept-patch indicator."""

    owner: ToyEncoder
    modality = "image"

    def prepare(self, raw: list[Any]) -> ImageInputs:
        r, c = self.owner.grid
        tf = ImageTransform((8 * r, 8 * c), (8 * r, 8 * c), 1.0, 1.0)
        display = [torch.zeros(8 * r, 8 * c, 3, dtype=torch.uint8)] * len(raw)
        return ImageInputs(torch.ones(len(raw), 1, r, c), self.owner.grid, 0, [tf] * len(raw), display)

    @property
    def n_layers(self) -> int:
        return 0

    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        assert isinstance(inputs, ImageInputs)
        return inputs.pixels.flatten(1).double()[..., None]

    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        return hidden[..., 0]

    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        assert isinstance(inputs, ImageInputs)
        out = inputs.select([0] * keep.shape[0])
        out.pixels = keep.double().reshape(keep.shape[0], 1, *self.owner.grid)
        return out

    def reference(self, inputs: SideInputs, kind: str = "default") -> SideInputs:
        r, c = self.owner.grid
        return self.mask(inputs, torch.zeros(inputs.batch_size, r * c, dtype=torch.bool))


class ToyEncoder(DualEncoder):
    """Embeddings are the kept-player indicators; `similarity` evaluates the polynomial."""

    name = "toy"
    family = "toy"

    def __init__(self, main: Tensor, pairs: Tensor, *, n_text: int, grid: tuple[int, int], intercept: float = 0.0):
        self.main = main.double()
        self.pairs = pairs.double()
        self.n_text = n_text
        self.grid = grid
        self.intercept = intercept
        self._module = torch.nn.Linear(1, 1)
        assert self.main.numel() == n_text + grid[0] * grid[1]
        self.set_towers(ToyText(self), ToyImage(self))

    @property
    def module(self) -> torch.nn.Module:
        return self._module

    @property
    def logit_scale(self) -> float:
        return 1.0

    def similarity(self, e_img: Tensor, e_txt: Tensor, *, all_pairs: bool = False) -> Scores:
        if all_pairs:  # every image row with every text row, (M, K)
            M, K = e_img.shape[0], e_txt.shape[0]
            grid = self.similarity(e_img.repeat_interleave(K, 0), e_txt.repeat(M, 1)).score.reshape(M, K)
            return Scores(score=grid, cosine=grid)
        k = torch.cat([e_txt, e_img], dim=1).double()
        v = self.intercept + k @ self.main + 0.5 * ((k @ self.pairs) * k).sum(1)
        return Scores(score=v, cosine=v)

    def explanation(
        self, pair: Pair, *, main: Tensor | None = None, pairs: Tensor | None = None, intercept: float = 0.0
    ) -> Explanation:
        """An `Explanation` of ``pair`` whose terms are ``main``/``pairs`` (default: the game's own)."""
        main = self.main if main is None else main.double()
        pairs = self.pairs if pairs is None else pairs.double()
        nt, S = self.n_text, self.n_text + 2
        text_main = torch.zeros(S)
        text_main[1:-1] = main[:nt].float()
        cross = torch.zeros(S, pairs.shape[0] - nt)
        cross[1:-1] = pairs[:nt, nt:].float()
        text_pairs = torch.zeros(S, S)
        text_pairs[1:-1, 1:-1] = pairs[:nt, :nt].float()
        s = float(self.score(pair).score[0])
        second = {"cross": cross, "text_pairs": text_pairs, "image_pairs": pairs[nt:, nt:].float()}
        if not bool(pairs.any()):  # a first-order explanation
            second = {"cross": None}
        return build_explanation(
            self, pair, 0, method="toy", params={}, score=s, cosine=s,
            text_main=text_main, image_main=main[nt:].float(), intercept=intercept, **second,
        )  # fmt: skip


def additive(values: list[float], *, n_text: int, grid: tuple[int, int], intercept: float = 0.0) -> ToyEncoder:
    n = len(values)
    return ToyEncoder(torch.tensor(values), torch.zeros(n, n), n_text=n_text, grid=grid, intercept=intercept)


def caption(n_words: int) -> str:
    return " ".join(f"w{i}" for i in range(n_words))
