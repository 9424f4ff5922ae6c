"""The `DualEncoder` contract: everything an explanation method may ask of a model.

A dual encoder embeds its two inputs separately and compares the embeddings. dualex calls the first
input the *text* side (a caption) and the second the *image* side (a photo, or a second sentence for
text-text bi-encoders). Methods talk to models only through this contract, written side-generically:
``side`` is ``"text"`` or ``"image"``.

Shapes used throughout:
    B   batch of inputs,
    S   text sequence length (all positions, special tokens included),
    T   number of hidden-state positions of a side (text: S; image: prefix tokens + patches),
    W   hidden width of a tower at the split layer,
    D   embedding dimension of the joint space.
"""

from __future__ import annotations

import contextlib
import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import torch
from torch import Tensor

from dualex.errors import InputError, UnsupportedModelError
from dualex.images import ImageTransform

if TYPE_CHECKING:
    from dualex.models.tower import Tower

Side = Literal["text", "image"]
SIDES: tuple[Side, Side] = ("text", "image")


@dataclass
class TextInputs:
    """A tokenised batch of texts, ready for a text tower.

    Attributes:
        ids: Token ids, ``(B, S)`` long.
        mask: Attention mask, ``(B, S)`` long (1 = attend). Masked-out players are 0 here.
        tokens: Per row, the S token strings (as the tokenizer spells them, e.g. ``"dog</w>"``).
        special: ``(B, S)`` bool, True for positions that are not players (BOS, EOS, CLS, SEP, pad).
        pool_index: ``(B,)`` long, the position the tower pools at (EOS for CLIP, last for SigLIP,
            unused for mean pooling).
        texts: The raw strings.
        offsets: Per row and position, the ``(start, end)`` character span of the token in the raw
            string, or None for special tokens.
        extra: Adapter-specific tensors with batch dimension first (kept aligned by indexing).
    """

    ids: Tensor
    mask: Tensor
    tokens: list[list[str]]
    special: Tensor
    pool_index: Tensor
    texts: list[str]
    offsets: list[list[tuple[int, int] | None]]
    extra: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def from_tokenized(cls, t: Any, texts: list[str], pool_index: Tensor) -> TextInputs:
        """Inputs from a `dualex.models.tokenize.Tokenized` batch of ``texts`` and the tower's pooling positions."""
        return cls(
            ids=t.ids,
            mask=t.mask,
            tokens=t.tokens,
            special=t.special,
            pool_index=pool_index,
            texts=list(texts),
            offsets=t.offsets,
        )

    @property
    def batch_size(self) -> int:
        """Number of captions B."""
        return int(self.ids.shape[0])

    def to(self, device: torch.device | str) -> TextInputs:
        """A copy with every tensor (ids, mask, special, pool_index, extra) moved to `device`."""
        return replace(
            self,
            ids=self.ids.to(device),
            mask=self.mask.to(device),
            special=self.special.to(device),
            pool_index=self.pool_index.to(device),
            extra={k: v.to(device) for k, v in self.extra.items()},
        )

    def select(self, rows: Tensor | list[int] | slice) -> TextInputs:
        """Rows ``rows`` of the batch (repeats allowed, e.g. to expand one text for coalitions)."""
        idx = _as_index(rows, self.batch_size)
        pick = idx.tolist()
        return TextInputs(
            ids=self.ids[idx.to(self.ids.device)],
            mask=self.mask[idx.to(self.mask.device)],
            tokens=[self.tokens[i] for i in pick],
            special=self.special[idx.to(self.special.device)],
            pool_index=self.pool_index[idx.to(self.pool_index.device)],
            texts=[self.texts[i] for i in pick],
            offsets=[self.offsets[i] for i in pick],
            extra={k: v[idx.to(v.device)] for k, v in self.extra.items()},
        )

    def players(self, row: int = 0) -> Tensor:
        """Positions of row ``row`` that are players (not special, not padding), ``(n,)`` long."""
        return torch.nonzero(~self.special[row].bool(), as_tuple=False).flatten().cpu()


@dataclass
class ImageInputs:
    """A preprocessed batch of images, ready for an image tower.

    Attributes:
        pixels: Normalised pixels, ``(B, 3, H, W)`` float (SigLIP-2 keeps this layout; its patchified
            inputs are built from it, with the extra tensors in ``extra``).
        grid: ``(rows, cols)`` of the patch grid.
        n_prefix: Number of hidden positions before the patches (CLS and register tokens).
        transforms: Per row, how the original image maps onto the input canvas.
        display: Per row, the model-input image as uint8 ``(H, W, 3)`` (un-normalised), for plots.
        extra: Adapter-specific tensors with batch dimension first.
    """

    pixels: Tensor
    grid: tuple[int, int]
    n_prefix: int
    transforms: list[ImageTransform]
    display: list[Tensor]
    extra: dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        """Number of images B."""
        return int(self.pixels.shape[0])

    @property
    def n_patches(self) -> int:
        """Number of grid patches, rows * cols (prefix tokens not counted)."""
        return self.grid[0] * self.grid[1]

    def to(self, device: torch.device | str) -> ImageInputs:
        """A copy with the pixels and the extra tensors moved to `device`."""
        return replace(self, pixels=self.pixels.to(device), extra={k: v.to(device) for k, v in self.extra.items()})

    def select(self, rows: Tensor | list[int] | slice) -> ImageInputs:
        """The images at `rows` (index tensor, list or slice), with their transforms, displays and extras."""
        idx = _as_index(rows, self.batch_size)
        pick = idx.tolist()
        return replace(
            self,
            pixels=self.pixels[idx.to(self.pixels.device)],
            transforms=[self.transforms[i] for i in pick],
            display=[self.display[i] for i in pick],
            extra={k: v[idx.to(v.device)] for k, v in self.extra.items()},
        )

    def players(self, row: int = 0) -> Tensor:
        """Hidden positions that are patches, ``(n_patches,)`` long."""
        return torch.arange(self.n_prefix, self.n_prefix + self.n_patches)


SideInputs = TextInputs | ImageInputs


@dataclass
class Pair:
    """A batch of (text, image) inputs, row i of one side paired with row i of the other.

    For text-text bi-encoders the image side is a second `TextInputs` whose tokens play the role of
    patches (grid ``(1, n_tokens)``).
    """

    text: TextInputs
    image: SideInputs

    def side(self, side: Side) -> SideInputs:
        """The inputs of `side` ('text' or 'image').

        Raises:
            InputError: `side` is neither.
        """
        if side not in SIDES:
            raise InputError(f"side must be 'text' or 'image', got {side!r}")
        inputs: SideInputs = getattr(self, side)
        return inputs

    @property
    def batch_size(self) -> int:
        """Number of pairs B (the text side's batch size)."""
        return self.text.batch_size

    def select(self, rows: Tensor | list[int] | slice) -> Pair:
        """The pairs at `rows` (index tensor, list or slice), both sides alike."""
        return Pair(self.text.select(rows), self.image.select(rows))

    def to(self, device: torch.device | str) -> Pair:
        """A copy with both sides moved to `device`."""
        return Pair(self.text.to(device), self.image.to(device))


@dataclass
class Scores:
    """A model's own score and the plain cosine, both ``(B,)`` (or ``(M, K)`` for all pairs)."""

    score: Tensor
    cosine: Tensor


@dataclass(frozen=True)
class PooledBlock:
    """A tower's last block and head, evaluated for the one row its embedding reads.

    A CLS-, EOS- or last-position-pooled tower's embedding depends on the last block's output at the
    pooled row p only; the other rows enter through their keys and values. Adapters split the last
    block + head into small pure maps so that tails (and `dualex.methods.ij`'s structured forward mode)
    compute only that:

        k, v = keys_values(h)                           per row: layer norm, key/value projections
        q    = query(h[:, p])                           the pooled row's query (scale, q-norm folded in)
        a    = softmax(q·kᵀ + mask) v                   one query row per head (`attend`)
        e    = finish(h[:, p], a)                       out-projection, residual, MLP, final norm, projection

    Attributes:
        keys_values: ``h (R, T, W) -> (k, v)``, each ``(R, heads, T, d)``; row t of the outputs
            depends on row t of ``h`` only.
        query: ``h_p (R, W) -> q (R, heads, d)``, with the attention scale (and any query norm) applied.
        finish: ``(h_p (R, W), a (R, heads, d)) -> (R, D)``: the rest of the block at the pooled row
            (head scale, inner norm, out-projection, layer scales, residuals, MLP) and the tower's head.
        index: ``(R,)`` long, the pooled row of each of the R hidden-state rows.
        mask: Additive attention mask of the pooled query over the keys, ``(R or 1, T)``, or None.
    """

    keys_values: Callable[[Tensor], tuple[Tensor, Tensor]]
    query: Callable[[Tensor], Tensor]
    finish: Callable[[Tensor, Tensor], Tensor]
    index: Tensor
    mask: Tensor | None = None

    @staticmethod
    def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """One query per row and head: ``q`` ``(R, H, d)``, ``k``/``v`` ``(R, H, T, d)``, ``mask`` ``(R|1, T)``.

        Returns:
            ``(a, P)``: the attention output ``(R, H, d)`` and the attention weights ``(R, H, T)``.
        """
        logits = torch.matmul(k, q.unsqueeze(-1)).squeeze(-1)  # (R, H, T)
        if mask is not None:
            logits = logits + mask.unsqueeze(-2)
        P = logits.softmax(dim=-1)
        return torch.matmul(P.unsqueeze(-2), v).squeeze(-2), P

    def pooled_rows(self, h: Tensor) -> Tensor:
        """``h[r, index[r]]`` for each row: ``(R, T, W) -> (R, W)``."""
        return h[torch.arange(h.shape[0], device=h.device), self.index.to(h.device)]

    def __call__(self, h: Tensor) -> Tensor:
        """The embeddings ``(R, D)`` from the hidden states ``h`` ``(R, T, W)`` entering the last block."""
        hp = self.pooled_rows(h)
        k, v = self.keys_values(h)
        a, _ = self.attend(self.query(hp), k, v, self.mask)
        return self.finish(hp, a)


def pooled_mask(mask: Tensor | None, index: Tensor) -> Tensor | None:
    """The pooled rows of an additive attention mask: ``(R|1, 1, T, T)`` and ``index`` ``(R,)`` -> ``(R, T)``."""
    if mask is None:
        return None
    m = mask[:, 0]  # (R|1, T, T)
    idx = index.to(m.device)
    if m.shape[0] == 1:
        return m[0, idx]
    return m[torch.arange(m.shape[0], device=m.device), idx]


def _as_index(rows: Tensor | list[int] | slice, n: int) -> Tensor:
    if isinstance(rows, slice):
        return torch.arange(n)[rows]
    if isinstance(rows, Tensor):
        return rows.long().flatten().cpu()
    return torch.as_tensor(list(rows), dtype=torch.long)


class DualEncoder(ABC):
    """Two towers and a similarity head: what every method needs from a dual encoder, nothing more.

    Everything about one side (preprocessing, hidden states, tails, masking, references, attention) is
    asked of its `Tower`: ``model.tower("text")`` embeds the first input of a pair (a caption),
    ``model.tower("image")`` the second (a photo, or a second sentence for text-text bi-encoders). The
    model itself holds the similarity head: ``score = logit_scale · cos + logit_bias``.

    Subclasses wrap one library's model family: they keep the wrapped module in eval mode, never change
    its weights, and install their towers with `set_towers` in ``__init__``. All tensors returned are on
    `device`.

    Attributes:
        name: The name the model was loaded by (``"hf:openai/clip-vit-base-patch32"``, ``"shapes"``).
        family: Adapter family (``"hf-clip"``, ``"hf-siglip"``, ``"openclip"``, ``"sentence"``...).
    """

    name: str = "model"
    family: ClassVar[str] = "base"
    weights_seed: int | None = None
    """The seed of randomly initialised weights (``openclip:ARCH@random[:SEED]``), None for loaded weights;
    recorded in every explanation's ``params["weights_seed"]``."""
    pooled_tails: bool = True
    """Let tails run the last block for the pooled row only where the tower allows (`Tower.pooled_block`);
    set False on an instance to run every row (the dense reference path, for comparisons)."""

    # ----------------------------------------------------------------- required by every adapter
    @property
    @abstractmethod
    def module(self) -> torch.nn.Module:
        """The wrapped torch module."""

    @property
    @abstractmethod
    def logit_scale(self) -> float:
        """exp(t) of the model (1.0 where the score is a plain cosine)."""

    @property
    def logit_bias(self) -> float:
        """Additive bias of the score (SigLIP), 0.0 otherwise."""
        return 0.0

    # ----------------------------------------------------------------- the two towers
    def set_towers(self, text: Tower, image: Tower) -> None:
        """Install the towers of the two sides (the first input's, the second input's); one tower may
        serve both (a bi-encoder)."""
        self._towers: dict[Side, Tower] = {"text": text, "image": image}

    def tower(self, side: Side) -> Tower:
        """The `Tower` of ``side`` (``"text"``: the first input, ``"image"``: the second)."""
        towers: dict[Side, Tower] | None = self.__dict__.get("_towers")
        if towers is None:
            raise UnsupportedModelError(f"{type(self).__name__} installs no towers (call set_towers in __init__)")
        if side not in towers:
            raise InputError(f"side must be 'text' or 'image', got {side!r}")
        return towers[side]

    @property
    def towers(self) -> tuple[Tower, Tower]:
        """``(tower("text"), tower("image"))``."""
        return self.tower("text"), self.tower("image")

    def rebind_towers(self) -> None:
        """Point copies of the towers at ``self`` (after `copy.copy` of an adapter); a tower shared by both
        sides stays shared."""
        towers: dict[Side, Tower] | None = self.__dict__.get("_towers")
        if towers is None:
            return
        copies: dict[int, Tower] = {}
        for t in towers.values():
            if id(t) not in copies:
                copies[id(t)] = t.rebind(self) if t.owner is not self else t
        self._towers = {s: copies[id(t)] for s, t in towers.items()}

    @contextlib.contextmanager
    def dense_tails(self) -> Iterator[None]:
        """Within the block, tails run every row of every block (for hooks that record each layer's
        module calls, and for comparisons with the pooled path)."""
        had = "pooled_tails" in self.__dict__
        before = self.pooled_tails
        self.pooled_tails = False
        try:
            yield
        finally:
            if had:
                self.pooled_tails = before
            else:
                del self.pooled_tails

    # ----------------------------------------------------------------- shared behaviour
    @property
    def device(self) -> torch.device:
        """Device of the module's first parameter (CPU when it has none)."""
        try:
            return next(self.module.parameters()).device
        except StopIteration:  # pragma: no cover - parameterless module
            return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the module's first parameter (float32 when it has none)."""
        try:
            return next(self.module.parameters()).dtype
        except StopIteration:  # pragma: no cover
            return torch.float32

    def to(self, device: torch.device | str) -> Self:
        """Moves the wrapped module to `device` in place and returns this model."""
        self.module.to(device)
        return self

    def prepare(self, images: Any, texts: str | Sequence[str]) -> Pair:
        """Preprocess a batch of (second input, caption) pairs. Single items are wrapped into lists."""
        images_l = list(images) if isinstance(images, (list, tuple)) else [images]
        texts_l = [texts] if isinstance(texts, str) else list(texts)
        if len(images_l) != len(texts_l):
            raise InputError(
                f"got {len(images_l)} images but {len(texts_l)} captions; explain pairs one-to-one "
                "(repeat the image to explain several captions of it)"
            )
        image = self.tower("image").prepare(images_l)
        if isinstance(image, ImageInputs):
            check_image_sizes(image)
        text = self.tower("text").prepare(texts_l)
        if not isinstance(text, TextInputs):
            raise UnsupportedModelError(f"{self.name}: the first tower must take texts (a caption side)")
        return Pair(text.to(self.device), image.to(self.device))

    def similarity(self, e_img: Tensor, e_txt: Tensor, *, all_pairs: bool = False) -> Scores:
        """The model's own score and the plain cosine.

        Args:
            e_img: Image-side embeddings ``(B, D)`` (or ``(M, D)`` with ``all_pairs``).
            e_txt: Text-side embeddings ``(B, D)`` (or ``(K, D)`` with ``all_pairs``).
            all_pairs: Score every image against every text, giving ``(M, K)``.

        Returns:
            `Scores` with ``score = logit_scale * cosine + logit_bias``.
        """
        a = torch.nn.functional.normalize(e_img.float(), dim=-1)
        b = torch.nn.functional.normalize(e_txt.float(), dim=-1)
        cos = a @ b.T if all_pairs else (a * b).sum(-1)
        return Scores(score=cos * self.logit_scale + self.logit_bias, cosine=cos)

    def score(self, pair: Pair) -> Scores:
        """Score each row of a pair batch with the model's own pipeline, ``(B,)``."""
        with torch.no_grad():
            return self.similarity(self.tower("image").encode(pair.image), self.tower("text").encode(pair.text))

    # ----------------------------------------------------------------- optional capabilities
    def with_module(self, module: torch.nn.Module) -> DualEncoder:
        """The same adapter (tokenizer, pipeline, settings) over another module of the same architecture.

        The default assumes the adapter keeps its module in ``self._module``; adapters that store it
        elsewhere override this. The towers are rebound to the copy.
        """
        twin = copy.copy(self)
        twin._module = module  # type: ignore[attr-defined]  # declared by the adapters, not by this contract
        return twin

    def float32(self) -> DualEncoder:
        """``self`` if the weights are float32 (or float64), else the same adapter over a float32 copy.

        Methods that differentiate fp16/bf16 models (``fp32=True``) work on this copy; the original
        model is untouched.
        """
        if self.dtype not in (torch.float16, torch.bfloat16):
            return self
        return self.with_module(copy.deepcopy(self.module).float())

    @property
    def contrastive_loss(self) -> Literal["softmax", "sigmoid"] | None:
        """The loss the model was trained with (``"softmax"``: InfoNCE, ``"sigmoid"``: SigLIP), or None
        where dualex cannot fine-tune this family."""
        return None

    def check_saveable(self, *, arch: str | None = None) -> None:
        """Raise unless `save_pretrained` can write this model (checked before a long fine-tuning run)."""
        raise UnsupportedModelError(f"dualex cannot save {self.family!r} models ({self.name})")

    def save_pretrained(self, directory: str | Path, *, arch: str | None = None) -> str:
        """Write the model where ``dualex.load`` reads it; returns the name to load it by.

        Args:
            directory: Output directory (created).
            arch: Architecture name for families whose saved weights need it (open_clip).
        """
        raise UnsupportedModelError(f"dualex cannot save {self.family!r} models ({self.name})")

    def __copy__(self) -> Self:
        """A shallow copy whose towers belong to the copy (so that swapping its ``_module`` moves them too)."""
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.rebind_towers()
        return twin

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, family={self.family!r})"


class TowerPair(DualEncoder):
    """A dual encoder made of two given towers and a similarity head, e.g. one CLIP's image tower on both
    sides (image–image similarity) or its text tower on both (text–text).

    The towers keep their owners (whose modules hold the weights); `module` is the owners' modules.

    Args:
        first: Tower of the first input (``tower("text")``).
        second: Tower of the second input (``tower("image")``).
        logit_scale: Scale of the score (default 1.0: the score is the cosine).
        logit_bias: Bias of the score.
        name: Name reported in explanations.

    Example:
        ``clip = dualex.load("shapes"); images = TowerPair(clip.tower("image"), clip.tower("image"))``
    """

    family = "pair"

    def __init__(
        self, first: Tower, second: Tower, *, logit_scale: float = 1.0, logit_bias: float = 0.0, name: str = "pair"
    ) -> None:
        owners = {id(t.owner): t.owner for t in (first, second)}
        self._modules = torch.nn.ModuleList([o.module for o in owners.values()])
        self._scale, self._bias = float(logit_scale), float(logit_bias)
        self.name = name
        self.set_towers(first, second)

    @property
    def module(self) -> torch.nn.Module:
        """The towers' owners' modules, as one ModuleList."""
        return self._modules

    @property
    def logit_scale(self) -> float:
        """The score scale given at construction (1.0 by default: the score is the cosine)."""
        return self._scale

    @property
    def logit_bias(self) -> float:
        """The score bias given at construction (0.0 by default)."""
        return self._bias

    def rebind_towers(self) -> None:
        """The towers keep their own owners (`with_module` is not supported for pairs)."""

    def with_module(self, module: torch.nn.Module) -> DualEncoder:
        """Not supported: a TowerPair cannot swap its module.

        Raises:
            UnsupportedModelError: Always; build a new pair from the new model's towers.
        """
        raise UnsupportedModelError("a TowerPair cannot swap its module; build a new pair from the new model's towers")


def check_image_sizes(inputs: ImageInputs) -> None:
    """Refuse original images smaller than one patch of the model (they would be upscaled from nothing).

    Raises:
        InputError: an image's height or width (original pixels) is below the patch size.
    """
    rows, cols = inputs.grid
    for i, tf in enumerate(inputs.transforms):
        ph, pw = tf.input_size[0] / rows, tf.input_size[1] / cols
        h, w = tf.original_size
        if h < ph or w < pw:
            which = f"image {i}" if inputs.batch_size > 1 else "the image"
            raise InputError(
                f"{which} is {w}×{h} pixels (width × height), smaller than one {round(pw)}×{round(ph)} patch of the "
                "model; there is nothing to explain at this size"
            )
