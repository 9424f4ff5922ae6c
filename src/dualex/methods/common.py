"""Pieces the methods share: the model's own scores, the explained similarity, sides, option checks, and
building an `Explanation` from a prepared pair row."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.models.base import SIDES, DualEncoder, ImageInputs, Pair, Side, SideInputs
from dualex.options import positive_int as positive_int  # re-exported for the methods

Units = Literal["cosine", "score"]
SideOption = Literal["both", "text", "image"]


def check_units(units: str) -> str:
    """``units`` if it is ``"cosine"`` or ``"score"``, else one plain `InputError`."""
    if units not in ("cosine", "score"):
        raise InputError(f"units must be 'cosine' or 'score', got {units!r}")
    return units


def sides_of(side: str) -> tuple[Side, ...]:
    """The towers a first-order method attributes: ``"both"`` -> text and image."""
    if side == "both":
        return SIDES
    for s in SIDES:
        if side == s:
            return (s,)
    raise InputError(f"side must be 'both', 'text' or 'image', got {side!r}")


ALL_POSITIONS: dict[Side, bool] = {"text": True, "image": False}
"""The `Explanation` layout per side: the first side's first-order terms (``text_main``) cover all its
positions (special ones flagged by ``special``), the second side's (``image_main``) its players only, the
rest of its positions summed into ``diagnostics["image_prefix"]``."""


def check_side(side: object, what: str = "side") -> Side:
    """``side`` checked to be a side of the model (``"text"`` or ``"image"``) and typed as one.

    Raises:
        InputError: anything else, in one line naming ``what``.
    """
    for s in SIDES:
        if side == s:
            return s
    raise InputError(f"{what} must be 'image' or 'text', got {side!r}")


def opposite(side: Side) -> Side:
    """The other side of a pair."""
    return SIDES[1 - SIDES.index(side)]


def player_terms(side: Side, values: Tensor, inputs: SideInputs, row: int) -> dict[str, Tensor]:
    """First-order Explanation terms of one side from values over its players ``(n_players,)``.

    The first side's values are spread over all its positions (0 at the others, `ALL_POSITIONS`).
    """
    if not ALL_POSITIONS[side]:
        return {f"{side}_main": values}
    full = torch.zeros(n_rows(inputs))
    full[inputs.players(row)] = values.to(full.dtype)
    return {f"{side}_main": full}


def baseline_kinds(
    model: DualEncoder, baselines: str | Mapping[str, str] | None, *, default: str = "aligned_reference"
) -> dict[str, str]:
    """Reference kind per side from captum-style ``baselines``: the one name for reference inputs.

    Args:
        model: The dual encoder (its towers give the defaults).
        baselines: None (each tower's ``default`` attribute), a kind for both sides (``"zeros"``), or a
            mapping ``{"text": ..., "image": ...}`` overriding some sides.
        default: The tower attribute naming a side's default kind: ``"aligned_reference"`` (gradient
            methods) or ``"path_reference"`` (ij's path start).

    Raises:
        InputError: a mapping with other keys than ``"text"``/``"image"``, or a value of another type.
    """
    kinds: dict[str, str] = {s: str(getattr(model.tower(s), default)) for s in SIDES}
    if baselines is None:
        return kinds
    if isinstance(baselines, str):
        return {"text": baselines, "image": baselines}
    if isinstance(baselines, Mapping):
        unknown = set(baselines) - set(SIDES)
        if unknown:
            raise InputError(f"baselines keys must be 'text' and/or 'image', got {sorted(unknown)}")
        return {**kinds, **{k: str(v) for k, v in baselines.items()}}
    raise InputError(
        f"baselines must be a reference kind, a {{'text': ..., 'image': ...}} mapping or None, got {baselines!r}"
    )


def rows_per_pass(internal_batch_size: object, device: torch.device, *, cpu: int = 16, gpu: int = 256) -> int:
    """``internal_batch_size`` checked, or the default rows per pass on ``device`` (``gpu`` on CUDA, else ``cpu``)."""
    return positive_int("internal_batch_size", internal_batch_size or (gpu if device.type == "cuda" else cpu))


def row_chunks(n: int, size: int) -> Iterator[list[int]]:
    """Row indices ``0..n-1`` in consecutive lists of at most ``size`` (one pass each)."""
    for start in range(0, n, size):
        yield list(range(start, min(start + size, n)))


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


def layer_pair(model: DualEncoder, pair: Pair, layers: Mapping[Side, int]) -> Pair:
    """``pair`` with each side re-described for its hidden positions at ``layers[side]`` (`Tower.parts_at`).

    The same pair for transformer towers; for staged towers (CNNs) the image side gets that stage's
    feature-map grid, so that ``players`` and the explanation's grid match the hidden states split there.
    """
    text = model.tower("text").parts_at(pair.text, layers["text"])
    image = model.tower("image").parts_at(pair.image, layers["image"])
    if text is pair.text and image is pair.image:
        return pair
    return Pair(text, image)  # type: ignore[arg-type]  # an image first side: same-modality pairs


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

    ``terms`` are Explanation fields (``cross``, ``text_main``, ``target``, ``diagnostics``...). A model with
    random weights adds its ``weights_seed`` to ``params``, so the explanation says how to rebuild it.
    """
    if model.weights_seed is not None:
        params = {**params, "weights_seed": model.weights_seed}
    t: SideInputs = pair.text  # an ImageInputs for same-modality image–image pairs
    img = pair.image
    meta: dict[str, Any] = {}
    if isinstance(t, ImageInputs):  # image–image pairs: the first image's hidden positions are the rows
        meta.update(row_layout(t, row))
    else:  # display strings as tokens, the tokenizer's raw pieces beside them
        from dualex.bytelevel import display_tokens

        special = t.special[row].cpu()
        pieces, offsets = list(t.tokens[row]), list(t.offsets[row])
        meta.update(tokens=display_tokens(pieces, text=t.texts[row], offsets=offsets, special=special.bool().tolist()),
                    pieces=pieces, special=special, text=t.texts[row], token_offsets=offsets)  # fmt: skip
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
        score=float(score),
        cosine=float(cosine),
        method=method,
        params=params,
        model=model.name,
        **meta,
        **terms,
    )


def row_layout(inputs: ImageInputs, row: int) -> dict[str, Any]:
    """Explanation fields for an image on the row side: its T = prefix + patch positions as "tokens".

    Prefix positions (CLS, registers) are special; patch positions are named ``"patch r,c"``.
    """
    rows, cols = inputs.grid
    names = [f"<prefix {i}>" for i in range(inputs.n_prefix)] + [f"patch {r},{c}" for r in range(rows)
                                                                 for c in range(cols)]  # fmt: skip
    special = torch.zeros(len(names), dtype=torch.bool)
    special[: inputs.n_prefix] = True
    return {
        "tokens": names,
        "special": special,
        "text": f"image ({rows}×{cols} patches)",
        "token_offsets": [None] * len(names),
        "text_image": inputs.display[row] if inputs.display else None,
        "text_grid": (rows, cols),
    }


def n_rows(inputs: SideInputs) -> int:
    """Number of row-side positions of a pair batch's first side (caption tokens, or an image's T)."""
    if isinstance(inputs, ImageInputs):
        return inputs.n_prefix + inputs.n_patches
    return int(inputs.ids.shape[1])


def split_prefix(values: Tensor, image: SideInputs, row: int) -> tuple[Tensor, Tensor | None]:
    """Split values over every image-side hidden position into patches and prefix (CLS, registers).

    Args:
        values: ``(..., T)`` values, the last dimension over all image-side positions of row ``row``.
        image: The image side of the pair batch.
        row: The row of ``image`` the values belong to.

    Returns:
        ``(values at the players (..., P), values at the other positions (..., T - P) or None if none)``.
    """
    cols = image.players(row)
    rest = torch.ones(values.shape[-1], dtype=torch.bool)
    rest[cols] = False
    return values[..., cols], (values[..., rest] if bool(rest.any()) else None)


def side_terms(side: Side, values: Tensor, image: SideInputs, row: int) -> tuple[dict[str, Tensor], dict[str, float]]:
    """First-order Explanation terms of one side from values over all its hidden positions.

    Args:
        side: The side the values attribute.
        values: ``(T,)`` per-position values of that side (text: all S positions; image: prefix + patches).
        image: The image side of the pair batch (to find the patch positions).
        row: The row of the pair batch.

    Returns:
        ``({"text_main": (S,)}, {})`` for the text side; ``({"image_main": (P,)}, {"image_prefix": sum of the
        prefix values})`` for the image side.
    """
    if ALL_POSITIONS[side]:
        return {f"{side}_main": values}, {}
    players, prefix = split_prefix(values, image, row)
    return {"image_main": players}, {"image_prefix": float(prefix.sum()) if prefix is not None else 0.0}


def row_explanation(
    model: DualEncoder,
    pair: Pair,
    row: int,
    scores: tuple[Tensor, Tensor],
    *,
    method: str,
    params: dict[str, Any],
    **terms: Any,
) -> Explanation:
    """`build_explanation` for row ``row`` with its score and cosine taken from ``scores = scores_of(model, pair)``."""
    score, cosine = scores
    return build_explanation(
        model, pair, row, method=method, params=params, score=float(score[row]), cosine=float(cosine[row]), **terms
    )
