"""Mismatch analysis: do interactions match objects across the two inputs and penalise mismatches?

exCLIP's claim is that CLIP models "match objects across input modes and also account for
mismatches". Two tests of it:

* **Cross pairs in a run** (`mismatch_analysis`). For a caption naming two objects a and b, each with
  its boxes, the *matching* interaction ``Σ cross[span_a, box_a]`` should be positive and the *cross*
  interaction ``Σ cross[span_a, box_b]`` negative. Both ordered pairs (a→b and b→a) of an item count.
  exCLIP's abstract-level numbers for CLIP on COCO are 94.1 % (matching positive) and 68.4 % (cross
  negative); we could not check them against the paper's tables (exCLIP, arXiv:2408.14153).
* **Hard negatives** (`hard_negative_analysis`). One object of the caption is swapped for one that is
  not in the image (its colour or shape for the shapes data, its class name for the others), the image
  is explained with the altered caption, and the swapped span's interaction with the original object's
  box ``Σ cross[swapped span, box]`` should be negative.

Signs are what matters here, so the units of the explanations (cosine or score) do not change a share.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dualex.analysis.common import (
    as_boxes,
    char_span_positions,
    first_line,
    object_rows,
    read_rows,
    row_patch_mask,
    row_span_positions,
    span_box_sum,
)
from dualex.datasets.base import GroundTruth, Item
from dualex.errors import DualexError, InputError
from dualex.images import float_box
from dualex.progress import bar

if TYPE_CHECKING:
    import pandas as pd

    from dualex.models.base import DualEncoder

PAPER_SHARES = {"matching_positive": 0.941, "cross_negative": 0.684}  # exCLIP, CLIP on COCO [unverified]


# ---------------------------------------------------------------------------------------------------- results
@dataclass
class MismatchResult:
    """Outcome of `mismatch_analysis`.

    Attributes:
        pairs: One row per ordered object pair: ``item_id, method, object_a, object_b, class_a, class_b,
            phrase_a, phrase_b, matching, cross, matching_positive, cross_negative, overlap`` (``overlap``:
            share of box a's patches that box b covers too).
        shares: Per method: ``n_pairs, n_items, matching_positive, cross_negative, both``,
            ``matching_above_cross`` (shares in [0, 1]) and the medians of ``matching`` and ``cross``.
        skipped: ``(item_id, method, reason)`` of items that could not be used (``item_id`` ``"*"``: the
            whole method, e.g. a first-order method without token × patch interactions).
    """

    pairs: pd.DataFrame
    shares: pd.DataFrame
    skipped: list[tuple[str, str, str]] = field(default_factory=list)

    def to_text(self) -> str:
        """The result as the text ``dualex mismatch`` prints."""
        return format_shares(self.shares, skipped=len(self.skipped))


def _unit_pairs(ex: Any, rows: pd.DataFrame, *, disjoint: bool) -> list[dict[str, Any]]:
    """Ordered object pairs of one (item, method) unit with their matching and cross sums."""
    objs = []
    for _, r in rows.sort_values("object").iterrows():
        rec = r.to_dict()
        objs.append((rec, row_span_positions(ex, rec), row_patch_mask(ex, rec)))
    out = []
    for ia, (ra, span_a, box_a) in enumerate(objs):
        for ib, (rb, span_b, box_b) in enumerate(objs):
            if ia == ib:
                continue
            if set(span_a.tolist()) == set(span_b.tolist()):
                raise InputError(f"objects {ra['object']} and {rb['object']} name the same caption tokens")
            if bool(torch.equal(box_a, box_b)):
                raise InputError(f"the boxes of objects {ra['object']} and {rb['object']} cover the same patches")
            own, other = box_a, box_b
            if disjoint:
                own, other = box_a & ~box_b, box_b & ~box_a
                if not bool(own.any()) or not bool(other.any()):
                    raise InputError(f"objects {ra['object']} and {rb['object']} have no patches of their own")
            overlap = float((box_a & box_b).sum()) / max(float(box_a.sum()), 1.0)
            matching = span_box_sum(ex, span_a, own)
            cross = span_box_sum(ex, span_a, other)
            out.append(
                {
                    "object_a": int(ra["object"]),
                    "object_b": int(rb["object"]),
                    "class_a": ra.get("class_name"),
                    "class_b": rb.get("class_name"),
                    "phrase_a": ra.get("phrase"),
                    "phrase_b": rb.get("phrase"),
                    "matching": matching,
                    "cross": cross,
                    "matching_positive": matching > 0,
                    "cross_negative": cross < 0,
                    "overlap": overlap,
                }
            )
    return out


def mismatch_analysis(
    run: Any,
    *,
    method: str | None = None,
    exactly_two: bool = True,
    disjoint: bool = False,
    run_dir: str | Path | None = None,
    progress: bool | None = None,
) -> MismatchResult:
    """Shares of positive matching and negative cross span–box interactions over a run's items.

    Needs the run's explanation files (second-order methods: ``cross`` interactions).

    Args:
        run: A run directory (or a DataFrame read from one; then give ``run_dir`` for the files).
        method: Only this method (default: every method whose explanations have ``cross``).
        exactly_two: Use captions naming exactly two objects (the paper's setting); False uses every
            ordered pair of objects of captions naming two or more.
        disjoint: Count only the patches a box does not share with the other box (overlapping boxes
            otherwise put the same patches on both sides of the comparison).
        run_dir: Run directory when ``run`` is a DataFrame.
        progress: Progress bar (None: only on a terminal).

    Returns:
        A `MismatchResult`.

    Raises:
        InputError: no item with two usable objects.
    """
    import pandas as pd

    from dualex.evaluation.store import load_explanation

    df = read_rows(run)
    root = run_dir if run_dir is not None else (None if isinstance(run, pd.DataFrame) else str(run))
    if root is None:
        raise InputError("pass run_dir= with a DataFrame: the explanation files are read from the run directory")
    rows = object_rows(df, method=method)
    if rows.empty:
        raise InputError("the run has no object-level rows without errors")
    pair_rows = df[(df["level"] == "pair") & df["explanation"].notna()]
    files = {(r.item_id, r.method): r.explanation for r in pair_rows.itertuples(index=False)}
    groups = [(key, g) for key, g in rows.groupby(["item_id", "method"], sort=True)]
    records: list[dict[str, Any]] = []
    skipped: list[tuple[str, str, str]] = []
    first_order: set[str] = set()  # methods whose explanations have no cross term: skipped once, as a whole
    with bar(len(groups), "mismatch", progress) as pbar:
        for (item, meth), g in groups:
            pbar.update(1)
            n = len(g)
            if n < 2 or (exactly_two and n != 2) or meth in first_order:
                continue
            rel = files.get((item, meth))
            if not rel and g["explanation"].notna().any():
                rel = g["explanation"].dropna().iloc[0]
            if not rel:
                skipped.append((item, meth, "no explanation file"))
                continue
            try:
                ex = load_explanation(root, {"explanation": rel, "item_id": item, "method": meth})
                if ex.cross is None:
                    first_order.add(meth)
                    skipped.append(("*", meth, f"method {meth!r} has no token × patch interactions"))
                    continue
                unit = _unit_pairs(ex, g, disjoint=disjoint)
            except DualexError as exc:
                skipped.append((item, meth, first_line(exc)))
                continue
            records.extend({"item_id": item, "method": meth, **u} for u in unit)
    if not records:
        need = "exactly two" if exactly_two else "two or more"
        why = f"; {len(skipped)} skipped, e.g. {skipped[0][2]}" if skipped else ""
        raise InputError(f"no item of this run has {need} usable objects with explanation files{why}")
    pairs = pd.DataFrame.from_records(records)
    return MismatchResult(pairs=pairs, shares=shares_of(pairs), skipped=skipped)


def shares_of(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per-method shares of a pair table (see `MismatchResult`)."""
    import pandas as pd

    out = []
    for meth, g in pairs.groupby("method", sort=True):
        out.append(
            {
                "method": meth,
                "n_pairs": len(g),
                "n_items": g["item_id"].nunique(),
                "matching_positive": float(g["matching_positive"].mean()),
                "cross_negative": float(g["cross_negative"].mean()),
                "both": float((g["matching_positive"] & g["cross_negative"]).mean()),
                "matching_above_cross": float((g["matching"] > g["cross"]).mean()),
                "matching_median": float(g["matching"].median()),
                "cross_median": float(g["cross"].median()),
            }
        )
    return pd.DataFrame.from_records(out)


def format_shares(shares: pd.DataFrame, *, skipped: int = 0) -> str:
    """The per-method shares as plain text."""
    lines = [f"{'method':<14} {'pairs':>6} {'items':>6} {'match>0':>8} {'cross<0':>8} {'both':>8} {'match>cross':>12}"]
    for r in shares.itertuples(index=False):
        lines.append(
            f"{r.method:<14} {r.n_pairs:>6d} {r.n_items:>6d} {r.matching_positive:>8.1%} "
            f"{r.cross_negative:>8.1%} {r.both:>8.1%} {r.matching_above_cross:>12.1%}"
        )
    p = PAPER_SHARES
    lines.append(
        f"(exCLIP reports {p['matching_positive']:.1%} / {p['cross_negative']:.1%} for CLIP on COCO; unverified)"
    )
    if skipped:
        lines.append(f"{skipped} item(s) skipped (see `skipped`)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- hard negatives
@dataclass(frozen=True)
class Change:
    """One object whose words a hard negative changed.

    Attributes:
        object: Index of the object in `Item.objects`.
        start, end: Character span of the new words in the altered caption.
        original: The words that were replaced.
        replacement: The words put in their place.
    """

    object: int
    start: int
    end: int
    original: str
    replacement: str


@dataclass(frozen=True)
class Swap:
    """A hard-negative caption: the true caption with the words of one or more objects changed.

    Attributes:
        caption: The altered caption.
        changes: The changed objects (one for a class swap; two when attributes were exchanged).
        kind: What was swapped (``"colour"``, ``"shape"``, ``"class"``).
    """

    caption: str
    changes: tuple[Change, ...]
    kind: str


Swapper = Callable[[Item, int, random.Random], "Swap | None"]


def span_of(obj: GroundTruth) -> tuple[int, int]:
    """The caption span ``(start, end)`` of an object of an `as_item` item (every one has one)."""
    if obj.start is None or obj.end is None:
        raise InputError(f"object {obj.class_name!r} is not named in the caption")
    return obj.start, obj.end


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if isinstance(obj, dict):
            if obj.get(n) is not None:
                return obj[n]
        elif getattr(obj, n, None) is not None:
            return getattr(obj, n)
    return default


def as_item(item: Any, index: int = 0) -> Item:
    """Read a dataset item into an `Item`.

    Accepted: `dualex.datasets` items (``id``, ``image``, ``caption``, ``objects`` with ``class_name``,
    ``boxes``, ``phrase``, ``start``, ``end``), the shapes generator's ``ShapeScene`` (objects in caption
    order, class = shape), and dicts with the same fields (``item_id``, ``span = (start, end)`` and
    ``box`` are also understood). Objects without caption words or boxes are left out.
    """
    if isinstance(item, Item) and all(o.start is not None and o.end is not None and o.boxes for o in item.objects):
        return item  # already in the form the analysis needs
    if hasattr(item, "spans") and hasattr(item, "plan") and hasattr(item, "objects"):  # a ShapeScene
        objs = [
            GroundTruth(item.objects[s.object].shape, [float_box(item.objects[s.object].box)],
                        item.caption[s.start : s.end], s.start, s.end)
            for s in item.spans
        ]  # fmt: skip
        ident = f"shapes-{item.seed}" if getattr(item, "seed", None) is not None else f"shapes-{index}"
        return Item(ident, item.image, item.caption, objs, meta={"source": item})
    caption = _get(item, "caption", "text")
    image = _get(item, "image", "image_path", "path")
    if not isinstance(caption, str) or image is None:
        raise InputError(f"dataset item {index} has no caption and image")
    if _get(item, "error"):
        raise InputError(f"dataset item {index}: {_get(item, 'error')}")
    objects = []
    for o in _get(item, "objects", default=[]) or []:
        start, end = _get(o, "start", "span_start"), _get(o, "end", "span_end")
        span = _get(o, "span")
        if (start is None or end is None) and isinstance(span, (tuple, list)) and len(span) == 2:
            start, end = span
        phrase = _get(o, "phrase")
        if (start is None or end is None) and phrase:
            k = caption.lower().find(str(phrase).lower())
            start, end = (k, k + len(str(phrase))) if k >= 0 else (None, None)
        boxes = _get(o, "boxes")
        if boxes is None and _get(o, "box") is not None:
            boxes = [_get(o, "box")]
        if start is None or end is None or not boxes:
            continue
        start, end = int(start), int(end)
        objects.append(
            GroundTruth(str(_get(o, "class_name", "category", "label", default="")), as_boxes(boxes),
                        caption[start:end], start, end)
        )  # fmt: skip
    item_id = _get(item, "item_id", "id", default=str(index))
    return Item(str(item_id), image, caption, objects, meta={"source": item})


def replace_span(caption: str, start: int, end: int, new: str) -> str:
    """``caption`` with characters ``[start, end)`` replaced by ``new``."""
    return caption[:start] + new + caption[end:]


def category_swapper(categories: Sequence[str]) -> Swapper:
    """Swap an object's class name for another category name that is absent from the item.

    If the class name (or its plural with ``s``/``es``) occurs in the object's words, that occurrence is
    replaced (keeping the plural ending); otherwise (a synonym such as "man" for person) all of the
    object's words are. Candidate names exclude every class present in the item and names that contain,
    or are contained in, the original.
    """
    cats = sorted({c.strip() for c in categories if c and c.strip()})

    def swap(item: Item, index: int, rng: random.Random) -> Swap | None:
        obj = item.objects[index]
        present = {o.class_name.lower() for o in item.objects}
        original = obj.class_name.lower()
        choices = [
            c for c in cats if c.lower() not in present and original not in c.lower() and c.lower() not in original
        ]
        if not choices:
            return None
        new = rng.choice(choices)
        o_start, o_end = span_of(obj)
        phrase = item.caption[o_start:o_end]
        m = re.search(rf"\b{re.escape(original)}(es|s)?\b", phrase.lower()) if original else None
        if m is not None:
            start, end = o_start + m.start(), o_start + m.end()
            plural = m.group(1)
            repl = new + ("es" if new.endswith(("s", "x", "ch", "sh")) else "s") if plural else new
        else:
            start, end, repl = o_start, o_end, new
        caption = replace_span(item.caption, start, end, repl)
        change = Change(index, start, start + len(repl), item.caption[start:end], repl)
        return Swap(caption, (change,), "class")

    return swap


def shapes_swapper(kind: str = "any") -> Swapper:
    """Hard negatives of shapes scenes from the generator's builders (`swap_colours`, `swap_shapes`).

    The builders exchange the colours (or shapes) of two objects of the scene, keeping the wording, so
    both objects' phrases change; each becomes a `Change` spanning only the changed word (``"red"`` ->
    ``"blue"``). The object ``index`` asked for is not used (the builder chooses).

    Args:
        kind: ``"colour"``, ``"shape"`` or ``"any"`` (one of the two at random per swap).
    """
    from dualex.datasets import shapes_generator as gen

    builders = {"colour": gen.swap_colours, "shape": gen.swap_shapes}
    if kind not in (*builders, "any"):
        raise InputError(f"unknown shapes swap {kind!r}; use 'colour', 'shape' or 'any'")
    phrase_re = re.compile(
        rf"\b(?:{'|'.join(gen.SIZES)}) (?:{'|'.join(gen.COLOURS)}) (?:{'|'.join(gen.SHAPES)})\b"
    )

    def swap(item: Item, index: int, rng: random.Random) -> Swap | None:
        scene = _scene_of(item)
        which = rng.choice(sorted(builders)) if kind == "any" else kind
        caption = builders[which](scene, rng.randrange(2**31))
        found = list(phrase_re.finditer(caption))
        if len(found) != len(item.objects):
            raise InputError(f"cannot find the {len(item.objects)} object phrases in the hard negative {caption!r}")
        changes = tuple(
            _word_change(k, obj.phrase or "", m.group(), m.start())
            for k, (m, obj) in enumerate(zip(found, item.objects, strict=True))
            if m.group() != obj.phrase
        )
        return Swap(caption, changes, which) if changes else None

    return swap


def _word_change(obj: int, old: str, new: str, offset: int) -> Change:
    """The changed words of a phrase (``"small red circle"`` -> ``"small red star"``: ``star``) as a
    `Change` whose span lies in the new caption (``offset``: where ``new`` starts there)."""
    a, b = old.split(" "), new.split(" ")
    if len(a) != len(b):
        return Change(obj, offset, offset + len(new), old, new)
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    starts = [sum(len(w) + 1 for w in b[:i]) for i in range(len(b))]
    lo, hi = diff[0], diff[-1]
    s, e = starts[lo], starts[hi] + len(b[hi])
    return Change(obj, offset + s, offset + e, " ".join(a[lo : hi + 1]), new[s:e])


def _int_box(values: Iterable[float]) -> tuple[int, int, int, int]:
    """A pixel box ``(x0, y0, x1, y1)`` rounded to integers."""
    x0, y0, x1, y1 = (round(v) for v in values)
    return x0, y0, x1, y1


def _scene_of(item: Item) -> Any:
    """The generator scene behind a shapes item: the item's own `ShapeScene`, or one rebuilt from a
    `dualex.datasets` shapes item (classes = shapes, ``meta`` colours, sizes and relation), with the
    caption plan that reproduces its caption exactly."""
    from dualex.datasets import shapes_generator as gen

    src = item.meta.get("source", item)
    if src is not None and hasattr(src, "plan") and hasattr(src, "spans"):
        return src
    meta = getattr(src, "meta", None) or {}
    colours, sizes = meta.get("colours"), meta.get("sizes")
    if not colours or not sizes or len(colours) != len(item.objects) or len(sizes) != len(item.objects):
        raise InputError(
            "shapes hard negatives need the generator's scenes (dualex.datasets.shapes_generator) or shapes "
            "dataset items (dualex.datasets shapes reader) to rebuild the caption"
        )
    import numpy as np

    objects = [
        gen.ShapeObject(o.class_name, str(c), str(sz), _int_box(o.boxes[0]), np.zeros((1, 1), dtype=bool))
        for o, c, sz in zip(item.objects, colours, sizes, strict=True)
    ]  # fmt: skip
    spans = [gen.CaptionSpan(*span_of(o), k) for k, o in enumerate(item.objects)]
    descs = [o.description for o in objects]
    order = tuple(range(len(objects)))
    relation = meta.get("relation")
    for template in range(64):
        plan = gen.CaptionPlan(order, template, relation)
        try:
            caption, _ = gen.compose_caption(descs, plan)
        except (IndexError, InputError):
            break
        if caption == item.caption:
            return gen.ShapeScene(np.zeros((1, 1, 3), dtype=np.uint8), caption, objects, spans, plan)
        if relation is not None:
            break
    raise InputError(f"cannot rebuild the wording of the shapes caption {item.caption!r}")


@dataclass
class HardNegativeResult:
    """Outcome of `hard_negative_analysis`.

    Attributes:
        rows: One row per changed object: ``item_id, object, class_name, kind, original, replacement,
            caption, swapped_box`` (Σ cross[swapped words, the object's boxes]), ``negative``
            (swapped_box < 0), ``score_original``, ``score_swapped``, ``score_drop`` (original − swapped,
            in the model's score) and, with ``compare_original``, ``original_box`` (Σ cross[true words,
            boxes] on the true caption).
        summary: ``n`` (changed objects), ``n_captions``, ``negative`` (share), ``score_lower`` (share of
            hard-negative captions the model scores below the true one) and, with ``compare_original``,
            ``original_positive`` and ``lower_than_original`` (swapped_box < original_box).
        skipped: ``(item_id, object, reason)``.
    """

    rows: pd.DataFrame
    summary: dict[str, float]
    skipped: list[tuple[str, int, str]] = field(default_factory=list)

    def to_text(self) -> str:
        """The result as the text ``dualex mismatch --hard-negatives`` prints."""
        s = self.summary
        lines = [
            f"hard negatives: {int(s['n'])} changed objects in {int(s['n_captions'])} captions",
            f"  swapped words × box interaction negative: {s['negative']:.1%}",
            f"  model scores the hard negative lower:     {s['score_lower']:.1%}",
        ]
        if "original_positive" in s:
            lines.append(f"  true words × box interaction positive:    {s['original_positive']:.1%}")
            lines.append(f"  swapped interaction below the true one:   {s['lower_than_original']:.1%}")
        if self.skipped:
            lines.append(f"  {len(self.skipped)} object(s) skipped (see `skipped`), e.g. {self.skipped[0][2]}")
        return "\n".join(lines)


def _is_shapes(item: Item) -> bool:
    """A generator scene, or a shapes dataset item (its meta lists the objects' colours and sizes)."""
    src = item.meta.get("source", item)
    if hasattr(src, "plan") and hasattr(src, "spans"):
        return True
    meta = getattr(src, "meta", None)
    return isinstance(meta, dict) and "colours" in meta and "sizes" in meta


def default_swapper(items: Sequence[Item], kind: str | None = None) -> Swapper:
    """Shapes builders for shapes scenes, else class-name swaps among the items' classes."""
    if kind == "shapes" or (items and kind is None and all(_is_shapes(it) for it in items)):
        return shapes_swapper()
    cats = {o.class_name for it in items for o in it.objects if o.class_name}
    if len(cats) < 2:
        raise InputError("class-name swaps need at least two object classes among the items")
    return category_swapper(sorted(cats))


def hard_negative_analysis(
    model: DualEncoder | str,
    items: Iterable[Any],
    *,
    method: str = "ij",
    swapper: Swapper | None = None,
    dataset_kind: str | None = None,
    categories: Sequence[str] | None = None,
    swaps_per_item: int | None = 1,
    compare_original: bool = False,
    seed: int = 0,
    limit: int | None = None,
    progress: bool | None = None,
    **options: Any,
) -> HardNegativeResult:
    """Explain images with hard-negative captions and test the sign of the swapped words' interactions.

    For each item, objects are swapped (``swapper``), the image is explained with the altered caption
    (``dualex.explain(model, image, caption, method, **options)``), and for every changed object
    ``Σ cross[new words, the object's boxes]`` is recorded. A model that accounts for mismatches gives
    it a negative sign.

    Args:
        model: A `DualEncoder` or a model name.
        items: Dataset items (see `as_item`: `dualex.datasets` items, shapes scenes, dicts).
        method: A second-order explanation method.
        swapper: ``fn(item, object_index, rng) -> Swap | None``; default: `shapes_swapper` for shapes
            scenes (``dataset_kind == "shapes"``), else `category_swapper` over ``categories`` (default:
            the classes that occur in ``items``).
        dataset_kind: ``"shapes"``, ``"coco"``, ... (picks the default swapper).
        categories: Class names to swap in (class-name swaps).
        swaps_per_item: Hard negatives per item (one explanation each; objects in random order);
            None = one per object.
        compare_original: Also explain the true caption and record its words × box interaction.
        seed: Seed of the swap choices.
        limit: Use at most this many items.
        progress: Progress bar (None: only on a terminal).
        **options: Options of the method.

    Returns:
        A `HardNegativeResult`.
    """
    import pandas as pd

    from dualex.models.registry import resolve_model

    enc = resolve_model(model)
    dataset_kind = dataset_kind or getattr(items, "kind", None)
    all_items: list[Item] = []
    skipped: list[tuple[str, int, str]] = []
    for i, raw in enumerate(items):
        if limit is not None and len(all_items) >= limit:
            break
        try:
            all_items.append(as_item(raw, i))
        except DualexError as exc:
            skipped.append((str(_get(raw, "id", "item_id", default=i)), -1, first_line(exc)))
    usable = [it for it in all_items if it.objects]
    if not usable:
        raise InputError("no dataset item has objects with boxes and caption words")
    if swapper is None:
        swapper = category_swapper(categories) if categories else default_swapper(usable, dataset_kind)
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    n_captions = 0
    with bar(len(usable), "hard negatives", progress) as pbar:
        for it in usable:
            pbar.update(1)
            order = list(range(len(it.objects)))
            rng.shuffle(order)
            chosen = order if swaps_per_item is None else order[:swaps_per_item]
            for j in chosen:
                try:
                    recs = _one_hard_negative(enc, it, j, swapper, rng, method, compare_original, options)
                except DualexError as exc:
                    skipped.append((it.id, j, first_line(exc)))
                    continue
                if not recs:
                    skipped.append((it.id, j, "no swap available"))
                    continue
                n_captions += 1
                records.extend({"item_id": it.id, **r} for r in recs)
    if not records:
        why = f"; e.g. {skipped[0][2]}" if skipped else ""
        raise InputError(f"no hard negative could be built and explained{why}")
    rows = pd.DataFrame.from_records(records)
    per_caption = rows.drop_duplicates(["item_id", "caption"])
    summary: dict[str, float] = {
        "n": float(len(rows)),
        "n_captions": float(n_captions),
        "negative": float(rows["negative"].mean()),
        "score_lower": float((per_caption["score_drop"] > 0).mean()),
    }
    if compare_original:
        summary["original_positive"] = float((rows["original_box"] > 0).mean())
        summary["lower_than_original"] = float((rows["swapped_box"] < rows["original_box"]).mean())
    return HardNegativeResult(rows=rows, summary=summary, skipped=skipped)


def _one_hard_negative(
    enc: DualEncoder,
    it: Item,
    j: int,
    swapper: Swapper,
    rng: random.Random,
    method: str,
    compare_original: bool,
    options: dict[str, Any],
) -> list[dict[str, Any]]:
    from dualex.methods import explain

    sw = swapper(it, j, rng)
    if sw is None or not sw.changes:
        return []
    if sw.caption == it.caption:
        raise InputError("the swap left the caption unchanged")
    image = it.load_image()
    ex = explain(enc, image, sw.caption, method=method, **options)
    if ex.cross is None:
        raise InputError(f"method {method!r} gives no token × patch interactions")
    ex0 = explain(enc, image, it.caption, method=method, **options) if compare_original else None
    scores = enc.score(enc.prepare([image, image], [it.caption, sw.caption])).score
    out = []
    for ch in sw.changes:
        obj = it.objects[ch.object]
        box = ex.patches(obj.boxes).flatten()
        swapped = span_box_sum(ex, char_span_positions(ex, ch.start, ch.end), box)
        rec: dict[str, Any] = {
            "object": ch.object,
            "class_name": obj.class_name,
            "kind": sw.kind,
            "original": ch.original,
            "replacement": ch.replacement,
            "caption": sw.caption,
            "swapped_box": swapped,
            "negative": swapped < 0,
            "score_original": float(scores[0]),
            "score_swapped": float(scores[1]),
            "score_drop": float(scores[0] - scores[1]),
        }
        if ex0 is not None:
            rec["original_box"] = span_box_sum(ex0, char_span_positions(ex0, *span_of(obj)), box)
        out.append(rec)
    return out


__all__ = [
    "PAPER_SHARES",
    "Change",
    "HardNegativeResult",
    "MismatchResult",
    "Swap",
    "as_item",
    "category_swapper",
    "default_swapper",
    "format_shares",
    "hard_negative_analysis",
    "mismatch_analysis",
    "shapes_swapper",
    "shares_of",
]
