"""An `Item` as plain JSON and bytes: the form WebDataset/Parquet shards store and Ray records carry.

`item_annotations` gives an item's ground truth, split, ids, regions and meta as a JSON-able dict (the
``KEY.json`` member of a WebDataset shard, the ``objects``/... columns of a Parquet shard);
`item_from_annotations` builds the item back. `encode_image` gives an item's image as an encoded file
(the original bytes when the item points to a JPEG/PNG/WebP file, lossless PNG otherwise), so writing
shards and reading them back gives the same pixels.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dualex.datasets.base import Box, EncodedImage, GroundTruth, Item
from dualex.errors import InputError

#: File extensions (lower case) read as images, with the name used for re-encoded images.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def item_annotations(item: Item) -> dict[str, Any]:
    """Everything of ``item`` but its image and caption, as JSON-able values.

    Returns:
        ``{"id", "objects": [{"class_name", "phrase", "start", "end", "boxes", "cell"}], "split",
        "image_id", "regions", "meta", "error"}`` (keys with None values left out).
    """
    objects = []
    for o in item.objects:
        d: dict[str, Any] = {"class_name": o.class_name, "boxes": [[float(v) for v in b] for b in o.boxes]}
        for key in ("phrase", "start", "end", "cell"):
            if getattr(o, key) is not None:
                d[key] = getattr(o, key)
        objects.append(d)
    out: dict[str, Any] = {"id": item.id, "objects": objects}
    if item.regions is not None:
        out["regions"] = [[float(v) for v in r] for r in item.regions]
    for key in ("split", "image_id", "error"):
        if getattr(item, key) is not None:
            out[key] = getattr(item, key)
    if item.meta:
        out["meta"] = json.loads(json.dumps(item.meta, default=str))
    return out


def _box(values: Any, where: str) -> Box:
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"{where}: a box is [x0, y0, x1, y1], got {values!r}") from None
    return x0, y0, x1, y1


def _int_or_none(d: Mapping[str, Any], key: str, where: str) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v:
        raise InputError(f"{where}: {key} must be an integer, got {v!r}")
    return int(v)


def parse_objects(raw: Any, where: str) -> list[GroundTruth]:
    """Ground-truth objects from their JSON form (a list of dicts; ``class`` is accepted for ``class_name``).

    Raises:
        InputError: not a list of objects with boxes ``[x0, y0, x1, y1]`` and integer spans.
    """
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: objects are not valid JSON ({exc})") from None
    if not isinstance(raw, list):
        raise InputError(f"{where}: objects must be a list, got {type(raw).__name__}")
    out = []
    for k, o in enumerate(raw):
        w = f"{where}, object {k}"
        if not isinstance(o, Mapping):
            raise InputError(f"{w}: an object is a dict with class_name, phrase, start, end, boxes")
        boxes = o.get("boxes")
        if boxes is None and o.get("box") is not None:
            boxes = [o["box"]]
        if boxes is None:
            boxes = []
        if not isinstance(boxes, list | tuple):
            raise InputError(f"{w}: boxes must be a list of [x0, y0, x1, y1]")
        name = o.get("class_name", o.get("class", o.get("phrase")))
        out.append(
            GroundTruth(
                str(name) if name is not None else "object",
                [_box(b, w) for b in boxes],
                None if o.get("phrase") is None else str(o["phrase"]),
                _int_or_none(o, "start", w),
                _int_or_none(o, "end", w),
                _int_or_none(o, "cell", w),
            )
        )
    return out


def item_from_annotations(item_id: str, image: Any, caption: str, ann: Mapping[str, Any], where: str) -> Item:
    """An `Item` from its annotations (`item_annotations` form); malformed ones give an item with ``error``."""
    try:
        objects = parse_objects(ann.get("objects"), where)
        regions = ann.get("regions")
        regions_t = None if regions is None else [_box(r, f"{where}, regions") for r in regions]
        meta = ann.get("meta") or {}
        if not isinstance(meta, dict):
            raise InputError(f"{where}: meta must be a JSON object")
    except InputError as exc:
        return Item(item_id, image, caption, error=str(exc))
    return Item(
        item_id,
        image,
        caption,
        objects,
        split=None if ann.get("split") is None else str(ann["split"]),
        image_id=None if ann.get("image_id") is None else str(ann["image_id"]),
        regions=regions_t,
        error=None if ann.get("error") is None else str(ann["error"]),
        meta=meta,
    )


def encode_image(item: Item) -> tuple[bytes, str]:
    """``(encoded file, extension)`` of the item's image, pixels unchanged.

    A path to a JPEG/PNG/WebP file and an `EncodedImage` keep their bytes (no re-compression); every
    other image (arrays, PIL images, composed grids, other formats) is loaded and written as PNG.

    Raises:
        InputError: the image cannot be loaded.
    """
    img = item.image
    if isinstance(img, EncodedImage):
        return img.data, _sniff(img.data)
    if isinstance(img, str | Path):
        ext = Path(img).suffix.lower().lstrip(".")
        if ext in IMAGE_EXTENSIONS:
            path = Path(img)
            if not path.is_file():
                raise InputError(f"image file not found: {path}")
            item.load_image()  # refuse broken files here, as a run would
            return path.read_bytes(), "jpg" if ext == "jpeg" else ext
    buf = io.BytesIO()
    item.load_image().save(buf, format="PNG")
    return buf.getvalue(), "png"


def _sniff(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "png"
