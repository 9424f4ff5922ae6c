"""Shared passes: rows of a pair batch that repeat one side's input are computed once for that side.

One image against K captions (``dualex.explain(model, image, [c1, ..., cK])``, contrasts, zero-shot
classes, rankings) is a batch whose image side holds the same input K times. A method's work on one side
depends on that side's input alone (ij's one-side integrated Jacobian, FIxLIP's coalition embeddings,
a gradient method's forward of the side that stays fixed), so it is done once per *distinct* input and
reused; the result equals the one-pair call (float rounding of different batch sizes only).

Rows are the same input when every tensor of the side's inputs (ids, masks, pooling index, pixels,
adapter extras) is equal on them; display data (strings, transforms) does not enter any computation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass, replace
from typing import Any

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.models.base import SIDES, DualEncoder, ImageInputs, Pair, Side, TextInputs, check_image_sizes


def _row_tensors(inputs: Any) -> list[Tensor]:
    """The batch-first tensors of a side's inputs (dataclass fields and the ``extra`` dict)."""
    B = int(inputs.batch_size)
    out: list[Tensor] = []
    assert is_dataclass(inputs)
    for f in fields(inputs):
        v = getattr(inputs, f.name)
        if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == B:
            out.append(v)
        elif isinstance(v, dict):
            out.extend(t for t in v.values() if isinstance(t, Tensor) and t.dim() >= 1 and t.shape[0] == B)
    return out


def distinct_rows(inputs: Any) -> tuple[list[int], list[int]]:
    """Group the rows of one side's inputs by content.

    Args:
        inputs: A side's batch (`TextInputs`, `ImageInputs`, or any dataclass with ``batch_size`` and
            batch-first tensors).

    Returns:
        ``(first, unique)``: ``unique`` lists the first row of each distinct input in batch order, and
        ``first[b]`` is the index into ``unique`` of row b's input.
    """
    tensors = _row_tensors(inputs)
    unique: list[int] = []
    first: list[int] = []
    for b in range(int(inputs.batch_size)):
        for k, u in enumerate(unique):
            if all(torch.equal(t[b], t[u]) for t in tensors):
                first.append(k)
                break
        else:
            first.append(len(unique))
            unique.append(b)
    return first, unique


def per_distinct(inputs: Any, fn: Callable[[Any], Tensor]) -> Tensor:
    """``fn(inputs)`` computed on the distinct rows only and spread back to every row.

    Args:
        inputs: A side's batch of B rows.
        fn: A batch-first map of inputs (``(R, ...)`` out for R rows in), e.g. a tower's hidden states.

    Returns:
        ``(B, ...)``, row b = ``fn`` of row b's input.
    """
    first, unique = distinct_rows(inputs)
    if len(unique) == int(inputs.batch_size):
        return fn(inputs)
    out = fn(inputs.select(unique))
    return out[torch.tensor(first, device=out.device)]


def own_text_lengths(prepare_text: Callable[[list[str]], Any], texts: list[str]) -> list[int]:
    """Sequence length of each caption tokenised on its own (a batch pads every caption to the longest)."""
    lengths: dict[str, int] = {}
    for t in texts:
        if t not in lengths:
            lengths[t] = int(prepare_text([t]).ids.shape[1])
    return [lengths[t] for t in texts]


def prepare_pairs(model: DualEncoder, images: list[Any], texts: list[str]) -> Pair:
    """`DualEncoder.prepare` of one-to-one pairs, each distinct image object (or sentence) prepared once.

    Args:
        model: The dual encoder.
        images: B images (paths, arrays, PIL images; sentences for text-text bi-encoders); repeating one
            object (``[img] * K``) loads and preprocesses it once.
        texts: B captions.

    Returns:
        The `Pair` batch of B rows on the model's device.
    """
    if len(images) != len(texts):
        raise InputError(f"got {len(images)} images but {len(texts)} captions; pair them one-to-one")
    order: list[int] = []
    seen: dict[int, int] = {}
    distinct: list[Any] = []
    for im in images:
        key = id(im)
        if key not in seen:
            seen[key] = len(distinct)
            distinct.append(im)
        order.append(seen[key])
    image = model.tower("image").prepare(distinct)
    if isinstance(image, ImageInputs):
        check_image_sizes(image)
    if len(distinct) != len(images):
        image = image.select(order)
    text = model.tower("text").prepare(list(texts))
    if not isinstance(text, TextInputs):
        raise InputError(f"{model.name}: the first tower must take texts (a caption side)")
    return Pair(text.to(model.device), image.to(model.device))


MODALITIES = ("image", "text")


def modality_pair(model: DualEncoder, modalities: tuple[str, str]) -> DualEncoder:
    """The model made of ``model``'s towers for the given (column side, row side) modalities.

    ``("image", "text")`` is ``model`` itself (for an image–text model); ``("image", "image")`` its image
    tower on both sides, ``("text", "text")`` its text tower on both (`dualex.models.base.TowerPair`, with
    the model's logit scale and bias).

    Raises:
        InputError: a modality the model has no tower for, or not two modalities.
    """
    from dualex.models.base import TowerPair

    if not (isinstance(modalities, (tuple, list)) and len(modalities) == 2):
        raise InputError(f"modalities must be two of {MODALITIES}, e.g. ('image', 'image'); got {modalities!r}")
    towers: dict[str, Any] = {t.modality: t for t in model.towers}
    for m in modalities:
        if m not in towers:
            raise InputError(
                f"{model.name} has no {m!r} tower (its towers embed {', '.join(sorted(towers))}); "
                f"modalities must be among those"
            )
    column, row = (towers[m] for m in modalities)
    if column is model.tower("image") and row is model.tower("text"):
        return model
    return TowerPair(row, column, logit_scale=model.logit_scale, logit_bias=model.logit_bias,
                     name=f"{model.name} [{modalities[1]}-{modalities[0]}]")  # fmt: skip


def explain_same_modality(
    model: Any, first: Any, second: Any, fn: Callable[..., list[Explanation]], modalities: tuple[str, str], *,
    device: Any = None, **options: Any,
) -> Any:
    """`dualex.explain` for pairs of given modalities (``first``: the column side, ``second``: the rows).

    One input (not a list) on either side against a list on the other is broadcast; lists pair one-to-one.
    """
    from dualex.models.registry import resolve_model

    enc = modality_pair(resolve_model(model, device=device), modalities)
    single = not isinstance(first, (list, tuple)) and not isinstance(second, (list, tuple))
    cols = list(first) if isinstance(first, (list, tuple)) else None
    rows = list(second) if isinstance(second, (list, tuple)) else None
    n = len(cols) if cols is not None else len(rows) if rows is not None else 1
    if n == 0:
        raise InputError("nothing to explain: an empty list of inputs")
    cols = cols if cols is not None else [first] * n
    rows = rows if rows is not None else [second] * n
    if len(cols) != len(rows):
        raise InputError(f"got {len(cols)} and {len(rows)} inputs; pair them one-to-one")
    pair = prepare_any(enc, cols, rows)
    out = fn(enc, pair, **options)
    if isinstance(pair.text, TextInputs):
        out = unpad_all(enc, out, pair)
    return out[0] if single else out


def prepare_any(model: DualEncoder, second: list[Any], first: list[Any]) -> Pair:
    """A `Pair` batch of any two towers' inputs (``first``: the rows' tower ``"text"``, ``second``: the columns'),
    each distinct input object prepared once."""
    sides: list[Any] = []
    pairs: tuple[tuple[Side, list[Any]], ...] = (("text", first), ("image", second))
    for side, values in pairs:
        order: list[int] = []
        seen: dict[int, int] = {}
        distinct: list[Any] = []
        for v in values:
            if id(v) not in seen:
                seen[id(v)] = len(distinct)
                distinct.append(v)
            order.append(seen[id(v)])
        inputs = model.tower(side).prepare(distinct)
        if isinstance(inputs, ImageInputs):
            check_image_sizes(inputs)
        if len(distinct) != len(values):
            inputs = inputs.select(order)
        sides.append(inputs.to(model.device))
    return Pair(sides[0], sides[1])


def unpad_all(model: DualEncoder, exs: list[Explanation], pair: Pair) -> list[Explanation]:
    """Each explanation of a batch cut to the shapes of its pair prepared alone (`unpad`, `unpad_prefix`)."""
    lengths = own_text_lengths(model.tower("text").prepare, list(pair.text.texts))
    out = [unpad(ex, n) for ex, n in zip(exs, lengths, strict=True)]
    image = pair.image
    if not isinstance(image, ImageInputs) and hasattr(image, "texts"):  # a bi-encoder's second sentences
        own = own_text_lengths(model.tower("image").prepare, list(image.texts))
        out = [unpad_prefix(ex, n - ex.n_patches) for ex, n in zip(out, own, strict=True)]
    return out


def unpad(ex: Explanation, n: int) -> Explanation:
    """``ex`` cut to its first ``n`` caption positions, where the rest is batch padding.

    A batch pads every caption to the longest; padding positions are special (no player, zero terms), so
    the cut explanation is the one of the pair prepared on its own. ``ex`` itself is returned when it has
    no more than ``n`` positions or a position past ``n`` is a player.
    """
    S = len(ex.tokens)
    if n >= S or not bool(ex.special[n:].all()):
        return ex
    cut = {name: t[:n] for name in ("cross", "cross_prefix", "text_main") if (t := getattr(ex, name)) is not None}
    if ex.text_pairs is not None:
        cut["text_pairs"] = ex.text_pairs[:n, :n]
    stderr = {k: (v[:n, :n] if k == "text_pairs" else v[:n] if k in cut else v) for k, v in ex.stderr.items()}
    return replace(
        ex, **cut, tokens=ex.tokens[:n], special=ex.special[:n], token_offsets=ex.token_offsets[:n], stderr=stderr,
        pieces=ex.pieces[:n] if ex.pieces is not None else None,
    )


def unpad_prefix(ex: Explanation, n_other: int) -> Explanation:
    """``ex`` with ``cross_prefix`` cut to its first ``n_other`` columns (a padded second sentence of a
    text-text bi-encoder: its padding positions are the last non-player columns)."""
    cp = ex.cross_prefix
    if cp is None or cp.shape[1] <= n_other:
        return ex
    return replace(ex, cross_prefix=cp[:, :n_other] if n_other > 0 else None)




class SideMemo:
    """Per-side results of one method call, computed once per distinct input of that side.

    ``memo.get(side, row, what, fn)`` returns ``fn()`` for the first row of each distinct input and the
    stored value for the rows repeating it; ``what`` names the quantity (``"hidden"``, ``"U"``, ...).

    Args:
        pair: The batch whose rows are grouped (`distinct_rows` of each side).
    """

    def __init__(self, pair: Pair) -> None:
        self.groups: dict[str, list[int]] = {side: distinct_rows(pair.side(side))[0] for side in SIDES}
        self._store: dict[tuple[str, int, str], Any] = {}

    def key(self, side: str, row: int) -> int:
        """The distinct-input index of ``row`` on ``side``."""
        return self.groups[side][row]

    def get(self, side: str, row: int, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` for the first row of each distinct ``side`` input, the stored value for the rows repeating it."""
        k = (side, self.groups[side][row], what)
        if k not in self._store:
            self._store[k] = fn()
        return self._store[k]


class GameCaches:
    """One coalition-embedding cache per distinct side input of a batch, for the rows' games to share.

    FIxLIP builds one masking game per row; rows that repeat a side's input (one image against K
    captions) embed each of its coalitions once when their games share that side's cache.

    Args:
        pair: The batch.
    """

    def __init__(self, pair: Pair) -> None:
        self.groups: dict[str, list[int]] = {side: distinct_rows(pair.side(side))[0] for side in SIDES}
        self._stores: dict[tuple[str, int], dict[bytes, Tensor]] = {}

    def attach(self, game: Any, row: int) -> None:
        """Give ``game`` (a `dualex.games.game.DualEncoderGame` of row ``row``) the shared caches of its inputs."""
        for side, first in self.groups.items():
            game.share_embeddings(side, self._stores.setdefault((side, first[row]), {}))


__all__ = [
    "MODALITIES",
    "GameCaches",
    "SideMemo",
    "distinct_rows",
    "explain_same_modality",
    "modality_pair",
    "own_text_lengths",
    "per_distinct",
    "prepare_any",
    "prepare_pairs",
    "unpad",
    "unpad_all",
    "unpad_prefix",
]
