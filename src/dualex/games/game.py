"""Value functions over coalitions: the one masking game of a (caption, image) pair.

Players (spec §1.1; the one player order of dualex): the image-side players first (ViT patches in
row-major order, or the second sentence's tokens for text-text bi-encoders), then the caption tokens
without special tokens. A coalition keeps its players and masks the others through the adapter's
`DualEncoder.mask` (defaults: patches set to 0 in normalised pixel space, i.e. the dataset mean colour;
removed tokens get attention mask 0). The value is the model's own score (``logit_scale · cosine +
bias``), so explanations are in score units (spec §1.3) — the game of FIxLIP (arXiv:2508.05430),
explained by FIxLIP and measured by the metrics alike.

Because the towers embed their inputs separately, a joint coalition's value needs the embedding of its
image part and of its text part. `DualEncoderGame` caches both, per distinct side coalition, and the
values of joint coalitions, so every consumer of one pair's game (a method, the insertion and deletion
sets of several explanations, the faithfulness coalitions) sends each distinct side coalition through
its tower once. Three evaluations:

* `DualEncoderGame.embed`: embeddings of coalitions of one side;
* `DualEncoderGame.grid`: all ``m_I × m_T`` values from ``m_I + m_T`` tower passes (product designs);
* calling the game on joint coalitions ``(K, n)``: ``K`` values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.games.surrogate import Surrogate
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


def _keys(Z: Tensor) -> list[bytes]:
    """One hashable key per row of a bool matrix."""
    return [r.tobytes() for r in np.packbits(Z.numpy(), axis=1)]


class DualEncoderGame:
    """The masking game of one (image, caption) pair, with cached side embeddings and values.

    Args:
        model: Any `DualEncoder` adapter.
        pair: A prepared pair; row ``row`` is used (a one-row pair needs no ``row``).
        row: Which row of ``pair`` (required when ``pair`` has several rows).
        image_masking: ``how`` passed to ``model.tower("image").mask(...)`` (HF adapters: ``"default"`` =
            ``"zeros"`` (mean colour) or ``"black"``).
        text_masking: ``how`` passed to ``model.tower("text").mask(...)`` (HF adapters: ``"default"`` =
            ``"attention"`` or ``"pad"``).
        internal_batch_size: Coalitions per tower pass (bounds memory).
        cache: Remember side embeddings and values, so that repeated coalitions (and side coalitions
            shared by different joint coalitions) are computed once.
        progress: Show a tqdm bar per embedding run (None: only on a terminal, never under pytest).

    Attributes:
        n_image, n_text, n_players: Numbers of players; joint index = image players, then text players.
        text_positions: ``(n_text,)`` caption positions of the text players.
        n_passes: Inputs sent through a tower so far (both sides).
        calls: Batches of joint coalitions evaluated so far (values served from the cache need none).
    """

    def __init__(
        self,
        model: DualEncoder,
        pair: Pair,
        *,
        row: int | None = None,
        image_masking: str = "default",
        text_masking: str = "default",
        internal_batch_size: int = 64,
        cache: bool = True,
        progress: bool | None = False,
    ) -> None:
        if row is None:
            if pair.batch_size != 1:
                raise InputError(f"a game explains one pair; got a batch of {pair.batch_size} (pass row=...)")
            row = 0
        if not 0 <= row < pair.batch_size:
            raise InputError(f"row {row} is outside the batch of {pair.batch_size} pairs")
        b = internal_batch_size
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise InputError(f"internal_batch_size must be a positive integer, got {b!r}")
        self.model = model
        self.pair = pair if pair.batch_size == 1 else pair.select([row])
        self.masking: dict[Side, str] = {"image": image_masking, "text": text_masking}
        self.batch_size = int(b)
        self.progress = progress_enabled(progress)
        self.n_image = int(model.tower("image").n_players(self.pair.image))
        self.n_text = int(model.tower("text").n_players(self.pair.text))
        self.n_players = self.n_image + self.n_text
        self.text_positions = self.pair.text.players(0)
        self.n_passes = 0
        self.calls = 0
        self.cached = bool(cache)
        self._emb: dict[Side, dict[bytes, Tensor]] = {"image": {}, "text": {}}
        self._values: dict[bytes, float] = {}

    @property
    def n(self) -> int:
        """Number of players (alias of ``n_players``)."""
        return self.n_players

    def n_side(self, side: Side) -> int:
        """Number of players of ``side``."""
        return {"image": self.n_image, "text": self.n_text}[side]

    def share_embeddings(self, side: Side, store: dict[bytes, Tensor]) -> None:
        """Use ``store`` as this game's cache of ``side`` coalition embeddings (keyed by coalition).

        Games of pairs that share one side's input (and masking) may share its store, so each of its
        coalitions goes through the tower once for all of them (`dualex.methods.shared.GameCaches`).
        """
        if self.cached:
            self._emb[side] = store

    def side_inputs(self, side: Side) -> SideInputs:
        """The prepared inputs of ``side`` (the game's one-row pair)."""
        return self.pair.side(side)

    def check(self, sur: Surrogate) -> None:
        """Raise if a surrogate's players do not match this pair's."""
        n_img = sur.n_image if sur.n_image is not None else self.n_image
        if n_img != self.n_image or sur.n_players - n_img != self.n_text:
            raise InputError(
                f"the explanation has {sur.n_players - n_img} caption players and {n_img} patches, but the "
                f"prepared pair has {self.n_text} and {self.n_image}; explain and evaluate the same pair"
            )

    def _check_side(self, side: Side, keep: Tensor | np.ndarray) -> Tensor:
        Z = torch.as_tensor(keep).bool().cpu()
        n = self.n_side(side)
        if Z.dim() != 2 or Z.shape[1] != n:
            raise InputError(f"{side} coalitions must have shape (K, {n}), got {tuple(Z.shape)}")
        if Z.shape[0] == 0:
            raise InputError(f"no {side} coalitions to embed")
        return Z

    @torch.no_grad()
    def _embed_rows(self, side: Side, rows: Tensor) -> Tensor:
        """Embeddings of the distinct side coalitions ``rows`` ``(K, n_side)``, ``(K, D)`` float32."""
        inputs = self.side_inputs(side)
        chunks = []
        with bar(int(rows.shape[0]), f"game: {side} coalitions", self.progress, unit="coal") as pb:
            for s in range(0, rows.shape[0], self.batch_size):
                block = rows[s : s + self.batch_size].to(self.model.device)
                masked = self.model.tower(side).mask(inputs, block, how=self.masking[side])
                chunks.append(self.model.tower(side).encode(masked).float())
                self.n_passes += int(block.shape[0])
                pb.update(int(block.shape[0]))
        return torch.cat(chunks)

    def embed(self, side: Side, keep: Tensor | np.ndarray) -> Tensor:
        """Embeddings of coalitions of one side, ``(K, D)`` float32 on the model's device.

        Args:
            side: ``"image"`` or ``"text"``.
            keep: ``(K, n_side)`` bool; each distinct row goes through the tower once (once per game,
                with the cache on).
        """
        Z = self._check_side(side, keep)
        uniq, inverse = torch.unique(Z, dim=0, return_inverse=True)
        if not self.cached:
            emb = self._embed_rows(side, uniq)
            return emb[inverse.to(emb.device)]
        store = self._emb[side]
        keys = _keys(uniq)
        todo = [i for i, k in enumerate(keys) if k not in store]
        if todo:
            new = self._embed_rows(side, uniq[torch.tensor(todo, dtype=torch.long)])
            for j, i in enumerate(todo):
                store[keys[i]] = new[j]
        emb = torch.stack([store[k] for k in keys])
        return emb[inverse.to(emb.device)]

    def grid(self, keep_image: Tensor | np.ndarray, keep_text: Tensor | np.ndarray) -> Tensor:
        """All values ``v(S_I^a ∪ S_T^b)``, ``(m_I, m_T)`` float64 on the model's device."""
        e_img = self.embed("image", keep_image)
        e_txt = self.embed("text", keep_text)
        return self.model.similarity(e_img, e_txt, all_pairs=True).score.double()

    @torch.no_grad()
    def __call__(self, coalitions: Tensor | np.ndarray) -> Tensor:
        """Values of joint coalitions ``(K, n_players)`` bool, ``(K,)`` float64 on CPU.

        Identical coalitions are evaluated once; with the cache, values already known are not recomputed.
        """
        Z = torch.as_tensor(coalitions).bool().cpu()
        if Z.dim() != 2 or Z.shape[1] != self.n_players:
            raise InputError(f"coalitions must have shape (K, {self.n_players}), got {tuple(Z.shape)}")
        uniq, inverse = torch.unique(Z, dim=0, return_inverse=True)
        out = torch.empty(uniq.shape[0], dtype=torch.float64)
        keys = _keys(uniq) if self.cached else []
        todo = list(range(uniq.shape[0]))
        if self.cached:
            todo = []
            for i, k in enumerate(keys):
                v = self._values.get(k)
                if v is None:
                    todo.append(i)
                else:
                    out[i] = v
        idx_all = torch.tensor(todo, dtype=torch.long)
        for a in range(0, idx_all.numel(), self.batch_size):
            idx = idx_all[a : a + self.batch_size]
            chunk = uniq[idx]
            e_img = self.embed("image", chunk[:, : self.n_image])
            e_txt = self.embed("text", chunk[:, self.n_image :])
            out[idx] = self.model.similarity(e_img, e_txt).score.detach().double().cpu()
            self.calls += 1
            if self.cached:
                for j, v in zip(idx.tolist(), out[idx].tolist(), strict=True):
                    self._values[keys[j]] = v
        return out[inverse]

    def empty_and_full(self) -> tuple[float, float]:
        """``(v(∅), v(N))``."""
        Z = torch.zeros(2, self.n_players, dtype=torch.bool)
        Z[1] = True
        v = self(Z)
        return float(v[0]), float(v[1])

    def full(self) -> float:
        """``v(N)``: the game value with every player kept."""
        return self.empty_and_full()[1]

    def empty(self) -> float:
        """``v(∅)``: the game value with every player removed."""
        return self.empty_and_full()[0]


__all__ = ["DualEncoderGame", "FunctionGame", "Game"]
