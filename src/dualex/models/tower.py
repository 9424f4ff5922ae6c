"""`Tower`: one side of a dual encoder, everything a method needs from it and nothing more.

A dual encoder is two towers and a similarity head (`dualex.models.base.DualEncoder`). A tower owns its
*modality* (``"text"``, ``"image"``, ``"audio"``; ``"video"`` as frames × patches), its inputs and their
*parts* (the players of games and the rows and columns of interaction matrices), and the split of its
forward pass at a layer:

    e = tower.encode(x) = tower.tail(x, tower.hidden(x, layer), layer)      for every valid layer

Methods talk to a side only through its tower (``model.tower("text")``, ``model.tower("image")``); none
branches on a side's name or a modality. Two towers of one modality are the same code: a CLIP's image
tower can sit on both sides of an image–image model (`dualex.models.base.TowerPair`).

Parts and their layout live on the inputs a tower prepares:

* text (`dualex.models.base.TextInputs`): token ids, display strings, a ``special`` mask (special tokens
  and padding are not players), character offsets, the pooled position;
* image (`dualex.models.base.ImageInputs`): normalised pixels ``(B, C, H, W)``, a patch ``grid`` of the
  input canvas in input pixels, ``n_prefix`` hidden positions before the patches (CLS, registers);
* audio and video towers bring their own input types with the same ``players(row)``, ``select`` and
  ``to`` (a spectrogram's time × frequency patches or time frames; frames × patches).

Layers are the tower's own units (`layer_unit`): transformer blocks for ViTs and text transformers,
stages for CNN and Swin-like towers (whose feature-map positions are the parts, mapped back to the input
grid). ``hidden(x, 0)`` is the state entering the first unit (after the embeddings), ``hidden(x,
n_layers)`` the output of the last one, before the head.

Shapes used throughout:
    B   batch of inputs,
    R   rows of hidden states a tail runs on (coalitions, path points; one input row is broadcast),
    T   hidden positions of the tower at the split layer (text: S; ViT: prefix + patches),
    W   hidden width at the split layer,
    D   embedding dimension of the joint space.

Adding a family: subclass `Tower` once per side (implement the abstract members, and the optional
capabilities the family supports), then a `DualEncoder` whose ``__init__`` wraps the module and calls
``self.set_towers(TextTower(self), ImageTower(self))``. See the README, "Adding a model family".
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor

from dualex.errors import InputError, UnsupportedModelError
from dualex.models.attention import AttentionBlock, Recording

if TYPE_CHECKING:
    from dualex.models.base import DualEncoder, PooledBlock, SideInputs

Modality = Literal["text", "image", "audio", "video"]


class Tower(ABC):
    """One side of a dual encoder (see the module docstring).

    A tower holds no weights of its own: it runs submodules of its `owner`'s wrapped module, and reads
    the owner's device, dtype, name and `DualEncoder.pooled_tails` switch. `rebind` gives the same tower
    over another owner (`DualEncoder.with_module`).

    Class attributes a subclass sets:
        modality: What the tower embeds.
        layer_unit: What one layer is (``"block"``, ``"stage"``), for messages and docs.
        path_reference: The reference kind path methods start from by default (``reference`` kinds):
            exCLIP's ``"default"`` for CLIP text towers, ``"same_length"`` for bi-encoder sentences,
            ``"zeros"`` for images.
        aligned_reference: The reference kind whose parts sit where the input's do (same length and
            positions: ``"same_length"`` for text, ``"zeros"`` for images), used by gradient methods.

    Args:
        owner: The dual encoder whose module holds this tower's weights.
    """

    modality: ClassVar[Modality]
    layer_unit: ClassVar[str] = "block"
    path_reference: ClassVar[str] = "default"
    aligned_reference: ClassVar[str] = "default"

    def __init__(self, owner: DualEncoder) -> None:
        self.owner = owner

    # ------------------------------------------------------------------ identity
    @property
    def label(self) -> str:
        """``"the image tower of hf:openai/clip-vit-base-patch32"``: how messages name this tower."""
        return f"the {self.modality} tower of {self.owner.name}"

    @property
    def device(self) -> torch.device:
        """The device of the tower's weights (its owner's)."""
        return self.owner.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the tower's weights (its owner's)."""
        return self.owner.dtype

    def rebind(self, owner: DualEncoder) -> Tower:
        """The same tower (settings included) over ``owner``'s module."""
        twin = copy_tower(self)
        twin.owner = owner
        return twin

    # ------------------------------------------------------------------ required
    @abstractmethod
    def prepare(self, raw: list[Any]) -> SideInputs:
        """Preprocess raw inputs (captions; PIL images, paths or arrays; waveforms) as the model's own
        pipeline does. Returns inputs on the CPU; `DualEncoder.prepare` moves them to the device."""

    @property
    @abstractmethod
    def n_layers(self) -> int:
        """Number of layers (`layer_unit`) of the tower; valid split layers are ``0..n_layers``."""

    @abstractmethod
    def hidden(self, inputs: SideInputs, layer: int) -> Tensor:
        """Hidden states entering layer ``layer`` (0 = after the embeddings), ``(B, T, W)``.

        ``layer == n_layers`` gives the output of the last layer (before the final norm and pooling).
        """

    @abstractmethod
    def tail(self, inputs: SideInputs, hidden: Tensor, layer: int) -> Tensor:
        """Layers ``layer..`` and the head on ``hidden`` ``(R, T, W)``: unnormalised embeddings ``(R, D)``.

        A pure function of ``hidden``: ``inputs`` provides only metadata (masks, pooling index). If
        ``inputs`` has one row it is broadcast to all R rows; otherwise R must equal its batch size.
        Safe under ``torch.func.jvp``/``vjp`` (no in-place ops on ``hidden``, no data-dependent hooks).
        """

    @abstractmethod
    def mask(self, inputs: SideInputs, keep: Tensor, *, how: str = "default") -> SideInputs:
        """Apply coalitions to one input row: ``keep`` ``(K, n_players)`` bool -> K masked rows.

        ``how`` names the masking; each tower documents its vocabulary. Image default: removed patches
        are set to 0 in normalised pixel space (the dataset mean colour). Text default: removed tokens
        get attention mask 0 (ids unchanged).
        """

    @abstractmethod
    def reference(self, inputs: SideInputs, kind: str = "default") -> SideInputs:
        """Reference (baseline) inputs for path methods, same batch size as ``inputs``.

        Text kinds: ``"default"`` (BOS, one filler, EOS, padding: exCLIP's reference) and
        ``"same_length"`` (fillers up to the caption's EOS). Image kinds: ``"zeros"`` (= ``"default"``,
        zeros after normalisation), ``"black"``, ``"noise"``.
        """

    # ------------------------------------------------------------------ shared behaviour
    def encode(self, inputs: SideInputs) -> Tensor:
        """Unnormalised embeddings ``(B, D)``."""
        return self.tail(inputs, self.hidden(inputs, 0), 0)

    def check_layer(self, layer: int) -> int:
        """Validate a split layer; negative values count from the end. Returns the layer index.

        Raises:
            InputError: not an integer, or outside ``-n_layers..n_layers``.
        """
        n = self.n_layers
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise InputError(f"{self.modality} layer must be an integer, got {layer!r}")
        idx = layer + n if layer < 0 else layer
        if not 0 <= idx <= n:
            raise InputError(
                f"{self.modality} layer {layer} is out of range: {self.label} has {n} {self.layer_unit}s, "
                f"so layers 0..{n} (or -{n}..-1) are valid"
            )
        return idx

    def parts_at(self, inputs: SideInputs, layer: int) -> SideInputs:
        """``inputs`` re-described for the hidden positions at ``layer`` (their grid and prefix).

        The default returns ``inputs``: for transformer towers the hidden positions are the same parts at
        every layer. Staged towers (CNN, Swin: `dualex.models.trunk_tower`) return a copy whose grid is
        that stage's feature map, so that methods splitting at ``layer`` read players and maps from it.
        """
        return inputs

    def n_players(self, inputs: SideInputs, row: int = 0) -> int:
        """Number of parts of row ``row`` that are players."""
        return int(inputs.players(row).numel())

    # ------------------------------------------------------------------ optional structure
    def pooled_block(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> PooledBlock | None:
        """The last block + head split for its pooled row (`dualex.models.base.PooledBlock`), or None.

        Args:
            inputs: Metadata of the rows (masks, pooling index); one row is broadcast to ``rows``.
            rows: R, the number of hidden-state rows the block will be evaluated on.
            dtype: Dtype of the hidden states (for the additive mask).

        Returns:
            A `PooledBlock` for CLS/EOS/last-position pooled towers; None (the default) for towers whose
            embedding reads every row of the last block (mean pooling, attention-pooling heads, CNNs).
        """
        return None

    def pooled_head(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> PooledBlock | None:
        """The head (after the last layer) as a `PooledBlock`, where it is one attention query.

        For an attention-pooling head (SigLIP's MAP head) the query is a learned probe: ``query`` and
        ``finish`` do not depend on ``h_p`` and ``index`` is 0. Used by `dualex.methods.ij` for a split
        at the head's input (``layer = n_layers``). None (the default) where the head is not that.
        """
        return None

    def use_pooled_block(self, inputs: SideInputs, hidden: Tensor, layer: int) -> PooledBlock | None:
        """`pooled_block` for a `tail` from ``layer`` (an index), if the owner's pooled tails are on and a
        layer remains."""
        if not self.owner.pooled_tails or layer >= self.n_layers:
            return None
        return self.pooled_block(inputs, hidden.shape[0], hidden.dtype)

    # ------------------------------------------------------------------ optional capabilities
    # A method that needs one of these asks the tower; a tower that lacks it raises one plain
    # `UnsupportedModelError` line naming what is missing (`missing`).

    def record_attention(self, inputs: SideInputs) -> AbstractContextManager[Recording]:
        """Record every attention layer while the tower runs (see `dualex.models.attention`).

        Use as ``with tower.record_attention(x) as rec: tower.tail(x, h, 0)``; ``rec.blocks`` then holds
        one `AttentionSite` per block in forward order and ``rec.pool`` the attention-pooling head, if
        the tower has one. Tails run densely meanwhile (the hooks must see every row of every block);
        hooks are removed on exit.

        Raises:
            UnsupportedModelError: at the call, for a tower that exposes no attention internals.
        """
        if type(self).attention_hooks is Tower.attention_hooks:
            raise self.missing("attention layers that dualex can record")
        return self._recording(inputs)

    @contextlib.contextmanager
    def _recording(self, inputs: SideInputs) -> Iterator[Recording]:
        rec = Recording()
        with self.owner.dense_tails():
            handles = self.attention_hooks(inputs, rec)
            try:
                yield rec
            finally:
                for h in handles:
                    h.remove()

    def attention_hooks(self, inputs: SideInputs, rec: Recording) -> list[Any]:
        """Register the forward hooks that fill ``rec`` for `record_attention`; returns their handles.

        A check that can fail comes before the first hook.
        """
        raise self.missing("attention layers that dualex can record")

    def attention_blocks(self) -> list[AttentionBlock]:
        """The blocks as pure functions (`AttentionBlock`), in order."""
        raise self.missing("attention blocks that dualex can run as functions")

    def attention_mask(self, inputs: SideInputs, rows: int, dtype: torch.dtype) -> Tensor | None:
        """The additive self-attention mask the tower applies, ``(rows or 1, 1, T, T)``, or None.

        ``inputs`` has one row (broadcast to ``rows``) or ``rows`` rows.
        """
        raise self.missing("attention blocks that dualex can run as functions")

    def project_tokens(self, inputs: SideInputs, hidden: Tensor) -> Tensor:
        """The head applied to every position, ``(R, T, D)``, from final states ``(R, T, W)``.

        For a tower that pools one token (CLS or EOS), position t gets the embedding it would have if
        it were the pooled token. For an attention-pooling head, each position's value is taken through
        the head (MaskCLIP's dense features).
        """
        raise self.missing("a head that applies to every position")

    def pooled_position(self, inputs: SideInputs, row: int = 0) -> int:
        """The hidden position whose final state becomes the embedding (CLS, EOS, last token).

        Raises:
            UnsupportedModelError: the tower pools several positions (mean pooling) or pools with an
                attention head (its probe is not a token).
        """
        raise self.missing("one pooled position (it pools several positions or with an attention head)")

    def pooled_queries(self, inputs: SideInputs, row: int = 0) -> tuple[Tensor, Tensor]:
        """The final hidden positions the head pools and their weights, for attention methods that follow
        the pooled rows back through the blocks (rollout, GAME, Grad-ECLIP).

        Returns:
            ``(positions (n,) long, weights (n,) float)``: the embedding's input is ``Σ_j w_j h[p_j]``
            (one position with weight 1 for CLS/EOS pooling, the patches with ``1/P`` for average
            pooling, the attended tokens for mean pooling). The default is `pooled_position` alone.

        Raises:
            UnsupportedModelError: the pooling is not a fixed weighted sum of positions (max pooling, an
                attention-pooling head: its probe is recorded as ``Recording.pool`` instead).
        """
        return torch.tensor([self.pooled_position(inputs, row)]), torch.ones(1)

    def missing(self, what: str) -> UnsupportedModelError:
        """The one-line error for a method that needs ``what`` from this tower."""
        return UnsupportedModelError(
            f"{self.label} ({self.owner.family}) has no {what}; use a gradient or perturbation method instead "
            "(method='ij', 'ig', 'rise', 'interaction_lime', 'fixlip')"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(modality={self.modality!r}, owner={self.owner.name!r})"


def copy_tower(tower: Tower) -> Tower:
    """A shallow copy of ``tower`` (its settings shared, its owner replaceable)."""
    import copy

    return copy.copy(tower)


__all__ = ["Modality", "Tower", "copy_tower"]
