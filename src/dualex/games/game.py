"""Value functions over coalitions: the dual-encoder game of one (image, caption) pair.

Players (spec §1.1): the image-side players first (ViT patches in row-major order, or the second
sentence's tokens for text-text bi-encoders), then the caption tokens without special tokens.
A coalition keeps its players and masks the others through the adapter's `DualEncoder.mask`
(defaults: patches set to 0 in normalised pixel space, i.e. the dataset mean colour; removed tokens
get attention mask 0). The value is the model's own score (``logit_scale · cosine + bias``), so
explanations are in score units (spec §1.3).

Because the towers embed their inputs separately, the game offers three evaluations:

* `DualEncoderGame.embed`: embeddings of coalitions of one side (each distinct coalition once);
* `DualEncoderGame.grid`: all ``m_I × m_T`` values from ``m_I + m_T`` tower passes (cross-modal);
* calling the game on joint coalitions ``(K, n)``: ``K`` values (model-agnostic).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.models.base import DualEncoder, Pair, Side, SideInputs
from dualex.progress import bar, progress_enabled


class Game(Protocol):
    """A cooperative game: ``game(coalitions (K, n) bool) -> values (K,)``."""

    n_players: int

    def __call__(self, coalitions: Tensor | np.ndarray) -> Tensor: ...


class FunctionGame:
    """Wrap a plain function of coalitions as a `Game` (values returned as float64 tensors)."""

    def __init__(self, fn: Callable[[Tensor], Any], n_players: int) -> None:
        self.fn, self.n_players = fn, int(n_players)

    def __call__(self, coalitions: Tensor | np.ndarray) -> Tensor:
        Z = torch.as_tensor(coalitions).bool()
        return torch.as_tensor(self.fn(Z), dtype=torch.float64).reshape(-1)


class DualEncoderGame:
    """The similarity game of one (image, caption) pair.

    Args:
        model: Any `DualEncoder` adapter.
        pair: A one-row `Pair` (use ``pair.select([row])``).
        image_masking: ``how`` passed to ``model.mask("image", ...)`` (HF adapters: ``"default"`` =
            ``"zeros"`` (mean colour) or ``"black"``).
        text_masking: ``how`` passed to ``model.mask("text", ...)`` (HF adapters: ``"default"`` =
            ``"attention"`` or ``"pad"``).
        batch_size: Coalitions per tower pass.
        progress: Show a tqdm bar per embedding run (None: only on a terminal, never under pytest).

    Attributes:
        n_image, n_text, n_players: Numbers of players; joint index = image players, then text players.
        text_positions: ``(n_text,)`` caption positions of the text players.
        n_passes: Inputs sent through a tower so far (both sides).
    """

    def __init__(
        self,
        model: DualEncoder,
        pair: Pair,
        *,
        image_masking: str = "default",
        text_masking: str = "default",
        batch_size: int = 64,
        progress: bool | None = False,
    ) -> None:
        if pair.batch_size != 1:
            raise InputError(f"a game explains one pair; got a batch of {pair.batch_size} (use pair.select([row]))")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"internal_batch_size must be a positive integer, got {batch_size!r}")
        self.model, self.pair = model, pair
        self.masking: dict[Side, str] = {"image": image_masking, "text": text_masking}
        self.batch_size = batch_size
        self.progress = progress_enabled(progress)
        self.n_image = int(model.n_players("image", pair.image))
        self.n_text = int(model.n_players("text", pair.text))
        self.n_players = self.n_image + self.n_text
        self.text_positions = pair.text.players(0)
        self.n_passes = 0

    def side_inputs(self, side: Side) -> SideInputs:
        return self.pair.side(side)

    def n_side(self, side: Side) -> int:
        return self.n_image if side == "image" else self.n_text

    @torch.no_grad()
    def embed(self, side: Side, keep: Tensor | np.ndarray) -> Tensor:
        """Embeddings of coalitions of one side, ``(K, D)`` float32 on the model's device.

        Args:
            side: ``"image"`` or ``"text"``.
            keep: ``(K, n_side)`` bool; each distinct row is sent through the tower once.
        """
        keep = torch.as_tensor(keep).bool()
        n = self.n_side(side)
        if keep.dim() != 2 or keep.shape[1] != n:
            raise InputError(f"{side} coalitions must have shape (K, {n}), got {tuple(keep.shape)}")
        if keep.shape[0] == 0:
            raise InputError(f"no {side} coalitions to embed")
        uniq, inverse = torch.unique(keep.cpu(), dim=0, return_inverse=True)
        inputs = self.side_inputs(side)
        chunks = []
        with bar(int(uniq.shape[0]), f"fixlip: {side} coalitions", self.progress, unit="coal") as pb:
            for s in range(0, uniq.shape[0], self.batch_size):
                block = uniq[s : s + self.batch_size].to(self.model.device)
                masked = self.model.mask(side, inputs, block, how=self.masking[side])
                chunks.append(self.model.encode(side, masked).float())
                self.n_passes += int(block.shape[0])
                pb.update(int(block.shape[0]))
        emb = torch.cat(chunks)
        return emb[inverse.to(emb.device)]

    def grid(self, keep_image: Tensor | np.ndarray, keep_text: Tensor | np.ndarray) -> Tensor:
        """All values ``v(S_I^a ∪ S_T^b)``, ``(m_I, m_T)`` float64 on the model's device."""
        e_img = self.embed("image", keep_image)
        e_txt = self.embed("text", keep_text)
        return self.model.similarity(e_img, e_txt, all_pairs=True).score.double()

    def __call__(self, coalitions: Tensor | np.ndarray) -> Tensor:
        """Values of joint coalitions ``(K, n_players)`` bool, ``(K,)`` float64 on the model's device."""
        Z = torch.as_tensor(coalitions).bool()
        if Z.dim() != 2 or Z.shape[1] != self.n_players:
            raise InputError(f"coalitions must have shape (K, {self.n_players}), got {tuple(Z.shape)}")
        e_img = self.embed("image", Z[:, : self.n_image])
        e_txt = self.embed("text", Z[:, self.n_image :])
        return self.model.similarity(e_img, e_txt).score.double()

    def empty_and_full(self) -> tuple[float, float]:
        """``(v(∅), v(N))``."""
        Z = torch.zeros(2, self.n_players, dtype=torch.bool)
        Z[1] = True
        v = self(Z).cpu()
        return float(v[0]), float(v[1])


__all__ = ["DualEncoderGame", "FunctionGame", "Game"]
