"""Pointing games: does an explanation put a caption span on its object's box, and back?

Definitions (exCLIP, arXiv:2408.14153; FIxLIP, arXiv:2508.05430), all on one `Explanation`:

* **Span → box (``t2i``).** The span map ``M = Σ_{s∈span} cross[s]`` (``Explanation.image_map``), over
  the patch grid. The box's patches ``B`` are those covered by the (union of the) box(es) to at least
  half of their area (`Explanation.patches` / `dualex.spans.box_patch_mask`; a box smaller than a patch
  takes the patch it overlaps most).

  * energy ``= Σ_{p∈B} M⁺_p / Σ_p M⁺_p`` with ``M⁺ = max(M, 0)`` (positive-part energy, Score-CAM's
    energy pointing game for signed maps); 0 when the map has no positive mass;
  * hit ``= 1`` if ``argmax_p M_p ∈ B`` (first maximum in row-major order), else 0. The mean of hits over
    objects is the pointing-game accuracy (the ``pg_hit_*`` columns).
  * box area ``= |B| / P``, the share of the grid's patches in the box: the energy a uniform (or
    random, on average) map gets, so the baseline to read every energy against. A map that puts all
    its positive mass on the box gets energy 1, i.e. ``1 / box_area`` times the uniform map; run
    summaries report ``pge_over_area`` = mean energy / mean box area.

* **Box → span (``i2t``).** Token scores ``m = Σ_{p∈B} cross[:, p]`` (``Explanation.text_scores``);
  special tokens (BOS, EOS, CLS, SEP, padding) are excluded from both numerator and denominator and
  from the argmax.

  * energy ``= Σ_{s∈span} m⁺_s / Σ_{s∈players} m⁺_s``; hit ``= 1`` if ``argmax_{s∈players} m_s ∈ span``.

* **First-order explanations** (no ``cross``) have no conditional maps; the unconditional first-order
  maps (`Explanation.first_order`) are used for every span and every box, as FIxLIP does for its
  first-order baselines.

* **Span–box interaction** ``Σ_{s∈span, p∈B} cross[s, p]`` (the explanation's units): how much the span
  and its own box add to the score together (negative: the model sees a mismatch).

* **Pointing game recognition (PGR)** on image grids (FIxLIP Table 1). The image is a grid of cells (one
  class per cell); the caption names some of the classes. A cell's patches are those lying *entirely*
  inside it (for a 7×7 grid over a 2×2 composition the middle row and column belong to no cell). For each
  named object with span map ``M`` (order 2) or first-order image map plus the span's own first-order
  value ``e_t`` counted on both sides (order 1):

  * in = ``M`` over the object's cell, out = ``M`` over all other cells (named or not);
  * correct = ``Σ in⁺ + Σ |out⁻|``, wrong = ``Σ out⁺ + Σ |in⁻|``;
  * PGR = correct / (correct + wrong), pooled over the named objects of one caption (the paper's number);
    the per-object ratios are returned too. Multi-token class names use the span's summed rows (the paper
    assumed one token per class).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from dualex.errors import InputError
from dualex.explanation import Explanation
from dualex.metrics.base import MetricValues, register_metric
from dualex.spans import Span, box_patch_weights

if TYPE_CHECKING:
    from dualex.datasets.base import Item


@dataclass
class PointingResult:
    """Pointing-game numbers of one (span, box) ground-truth object."""

    energy_t2i: float
    hit_t2i: float
    energy_i2t: float
    hit_i2t: float
    span_box: float
    box_area: float = float("nan")
    """Share of the patch grid inside the box (the energy of a uniform map), in [0, 1]."""

    def as_dict(self) -> dict[str, float]:
        """The object row's columns: ``pg_energy_*``, ``pg_hit_*``, ``span_box``, ``box_area``."""
        return {
            "pg_energy_t2i": self.energy_t2i,
            "pg_hit_t2i": self.hit_t2i,
            "pg_energy_i2t": self.energy_i2t,
            "pg_hit_i2t": self.hit_i2t,
            "span_box": self.span_box,
            "box_area": self.box_area,
        }


def positive_energy(values: Tensor, inside: Tensor, *, valid: Tensor | None = None) -> float:
    """``Σ_{inside} v⁺ / Σ_{valid} v⁺`` (0 when there is no positive mass).

    Args:
        values: Scores, any shape.
        inside: Bool mask of the same number of entries: the ground-truth region.
        valid: Bool mask of entries that count at all (default: all).
    """
    v = values.flatten().double().clamp(min=0)
    ins = inside.flatten().bool()
    if valid is not None:
        ok = valid.flatten().bool()
        v = v * ok
        ins = ins & ok
    total = float(v.sum())
    return float(v[ins].sum()) / total if total > 0 else 0.0


def hit(values: Tensor, inside: Tensor, *, valid: Tensor | None = None) -> float:
    """1.0 if the (first) maximum of ``values`` over ``valid`` entries lies ``inside``, else 0.0."""
    v = values.flatten().double()
    if valid is not None:
        ok = valid.flatten().bool()
        if not bool(ok.any()):
            raise InputError("no valid entries to point at")
        v = v.masked_fill(~ok, float("-inf"))
    return float(bool(inside.flatten().bool()[int(torch.argmax(v))]))


def char_span_positions(ex: Explanation, start: int, end: int) -> Tensor:
    """Token positions ``(k,)`` whose characters overlap ``caption[start:end]`` (specials never)."""
    if not 0 <= start < end <= len(ex.text):
        raise InputError(f"character span ({start}, {end}) is outside the caption of length {len(ex.text)}")
    pos = [
        i
        for i, o in enumerate(ex.token_offsets)
        if o is not None and not bool(ex.special[i]) and o[0] < end and o[1] > start
    ]
    if not pos:
        raise InputError(
            f"caption words {ex.text[start:end]!r} match no token of the explained caption "
            "(truncated by the tokenizer?)"
        )
    return torch.tensor(pos, dtype=torch.long)


def resolve_span(ex: Explanation, span: Span | dict[str, Any]) -> Tensor:
    """Token positions for a span given as words / token range / indices, or ``{"start", "end"}`` chars."""
    if isinstance(span, dict):
        return char_span_positions(ex, int(span["start"]), int(span["end"]))
    return ex.span(span)


def _maps(ex: Explanation, pos: Tensor, patches: Tensor) -> tuple[Tensor, Tensor]:
    """(span map over patches (P,), box scores over tokens (S,))."""
    if ex.cross is not None:
        return ex.cross[pos].sum(0), ex.cross[:, patches].sum(1)
    text, image = ex.first_order()
    return image, text


def pointing_game(ex: Explanation, span: Span | dict[str, Any], boxes: Any) -> PointingResult:
    """Both-direction pointing game for one object: its caption span and its box(es).

    Args:
        ex: The explanation.
        span: Caption words, token range/indices, or ``{"start": c0, "end": c1}`` character span.
        boxes: ``(x0, y0, x1, y1)`` in original-image pixels, a list of boxes (union), or a patch mask.

    Returns:
        `PointingResult` (energies in [0, 1], hits 0/1, the box's share of the grid ``box_area`` (the
        energy of a uniform map), span–box interaction in the explanation's units; the
        interaction is NaN for first-order explanations, and a direction is NaN when a first-order
        explanation has no map of the side it needs, e.g. box → span for an image-only method).
    """
    pos = resolve_span(ex, span)
    box = ex.patches(boxes).flatten()
    image_map, token_scores = _maps(ex, pos, box)
    in_span = torch.zeros(ex.n_tokens, dtype=torch.bool)
    in_span[pos] = True
    players = ~ex.special
    if not bool(players.any()):
        raise InputError("the caption has no player tokens")
    sb = float(ex.cross[pos][:, box].sum()) if ex.cross is not None else float("nan")
    nan = float("nan")
    first = ex.cross is None and ex.text_pairs is None and ex.image_pairs is None
    t2i = not first or ex.image_main is not None  # a first-order method may explain one side only
    i2t = not first or ex.text_main is not None
    return PointingResult(
        energy_t2i=positive_energy(image_map, box) if t2i else nan,
        hit_t2i=hit(image_map, box) if t2i else nan,
        energy_i2t=positive_energy(token_scores, in_span, valid=players) if i2t else nan,
        hit_i2t=hit(token_scores, in_span, valid=players) if i2t else nan,
        span_box=sb,
        box_area=float(box.sum()) / max(int(box.numel()), 1),
    )


def cell_patches(ex: Explanation, box: Any, *, min_overlap: float = 1.0) -> Tensor:
    """Patches (flat bool ``(P,)``) covered by ``box`` to at least ``min_overlap`` of their area (default:
    entirely inside). A bool patch mask is passed through."""
    if isinstance(box, Tensor) and box.dtype == torch.bool:
        return ex.patches(box).flatten()
    if ex.image_transform is None:
        raise InputError("this explanation has no image transform; pass cells as boolean patch masks")
    w = box_patch_weights(box, grid=ex.grid, transform=ex.image_transform)
    return (w >= min_overlap - 1e-6).flatten()


@dataclass
class RecognitionResult:
    """PGR of one caption: pooled over its named objects, and per object."""

    pgr: float
    per_object: list[float]


def pointing_game_recognition(
    ex: Explanation,
    spans: Sequence[Span | dict[str, Any]],
    cells: Sequence[int],
    regions: Sequence[Any],
    *,
    min_overlap: float = 1.0,
) -> RecognitionResult:
    """Pointing game recognition on an image grid (definition in the module docstring).

    Args:
        ex: The explanation of (grid image, caption naming some of its classes).
        spans: The caption span of each named object.
        cells: For each span, the index of its cell in ``regions``.
        regions: Every cell of the grid: a box in original-image pixels (or a patch mask).
        min_overlap: Fraction of a patch's area that must lie in a cell for it to count (1.0 = entirely).

    Returns:
        `RecognitionResult`; a ratio is NaN when its mass is zero.
    """
    if len(spans) != len(cells):
        raise InputError(f"got {len(spans)} spans but {len(cells)} cell indices")
    if not spans:
        raise InputError("pointing game recognition needs at least one named object")
    masks = [cell_patches(ex, r, min_overlap=min_overlap) for r in regions]
    text1, image1 = (None, None) if ex.cross is not None else ex.first_order()
    per: list[float] = []
    correct_all = wrong_all = 0.0
    for span, c in zip(spans, cells, strict=True):
        if not 0 <= c < len(masks):
            raise InputError(f"cell index {c} out of range for {len(masks)} regions")
        pos = resolve_span(ex, span)
        inside = masks[c]
        outside = torch.zeros_like(inside)
        for j, m in enumerate(masks):
            if j != c:
                outside |= m
        outside &= ~inside
        if ex.cross is not None:
            m = ex.cross[pos].sum(0).double()
            vin, vout = m[inside], m[outside]
        else:
            assert text1 is not None and image1 is not None
            own = text1[pos].sum().double().reshape(1)
            vin = torch.cat([image1.double()[inside], own])
            vout = torch.cat([image1.double()[outside], own])
        correct = float(vin.clamp(min=0).sum() + (-vout).clamp(min=0).sum())
        wrong = float(vout.clamp(min=0).sum() + (-vin).clamp(min=0).sum())
        per.append(correct / (correct + wrong) if correct + wrong > 0 else float("nan"))
        correct_all += correct
        wrong_all += wrong
    pooled = correct_all / (correct_all + wrong_all) if correct_all + wrong_all > 0 else float("nan")
    return RecognitionResult(pooled, per)


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


@register_metric(
    "pointing",
    level="object",
    default=True,
    by_objects=("pgr",),
    columns={
        "pg_energy_t2i": "pointing game energy, caption span → image box",
        "pg_hit_t2i": "pointing game hit, caption span → image box (argmax patch in the box)",
        "pg_energy_i2t": "pointing game energy, image box → caption span",
        "pg_hit_i2t": "pointing game hit, image box → caption span (argmax token in the span)",
        "span_box": "interaction of the span with its own box, Σ cross[span, box] (the explanation's units)",
        "box_area": "share of the patch grid in the box (the energy of a uniform map)",
        "pgr": "pointing game recognition",
    },
    ratios={"pge_over_area": ("pg_energy_t2i", "box_area")},
)
def pointing(explanation: Explanation, item: Item, model: Any, game: Any) -> MetricValues:
    """Pointing games both ways and span-box interaction per object; PGR on image grids.

    Returns:
        Per object ``pg_energy_t2i``, ``pg_hit_t2i``, ``pg_energy_i2t``, ``pg_hit_i2t``, ``span_box``,
        ``box_area`` (`pointing_game`) and, on grids, its ``pgr``; on the pair row the pooled ``pgr``
        (`pointing_game_recognition`; null when the item has no grid regions or no named cell).
    """
    objects: list[Mapping[str, Any] | BaseException] = []
    for obj in item.objects:
        try:
            if obj.span is None:
                raise InputError("the object is not named in the caption")
            if not obj.boxes:
                raise InputError("the object has no box")
            r = pointing_game(explanation, obj.span, list(obj.boxes))
            objects.append({key: _finite(v) for key, v in r.as_dict().items()})
        except Exception as exc:
            objects.append(exc)
    out = MetricValues(pair={"pgr": None}, objects=objects)
    named = [(k, o.span, o.cell) for k, o in enumerate(item.objects) if o.cell is not None and o.span is not None]
    if not item.regions or not named:
        return out
    try:
        res = pointing_game_recognition(explanation, [s for _, s, _ in named], [c for _, _, c in named], item.regions)
    except Exception as exc:
        out.error = exc
        return out
    for (k, _, _), v in zip(named, res.per_object, strict=True):
        row = objects[k]
        if isinstance(row, Mapping):
            objects[k] = {**row, "pgr": _finite(v)}
    out.pair["pgr"] = _finite(res.pgr)
    return out
