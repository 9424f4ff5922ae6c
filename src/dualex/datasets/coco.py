"""MS-COCO captions + instances (the official 2014/2017 JSON files).

Layout of ``coco:ROOT`` (as unpacked from cocodataset.org)::

    ROOT/annotations/captions_<split>.json     {"images": [...], "annotations": [{"image_id", "id", "caption"}]}
    ROOT/annotations/instances_<split>.json    {"categories": [...], "annotations": [{"image_id", "bbox", ...}]}
    ROOT/<split>/<file_name>                   (or ROOT/images/<split>/, or ROOT/images/)

One item per caption annotation (``id = "<image_id>-<caption id>"``), images in id order. Objects: for
every instance category present in the image whose name, a simple plural, or a listed synonym
(``person`` ~ man, woman, people, ...) occurs in the caption as whole words, one object with the
category name as class, the first matching words as span, and all boxes of that category (COCO
``[x, y, w, h]`` converted to ``(x, y, x + w, y + h)``). Categories not mentioned are not objects.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dualex.datasets.base import (
    Dataset,
    GroundTruth,
    Item,
    find_phrase,
    first_existing,
    plural_forms,
    read_json,
    register_reader,
)
from dualex.errors import InputError

# Words captions use for COCO categories (beyond the name and its plural). Kept small and literal.
SYNONYMS: dict[str, list[str]] = {
    "person": [
        "people",
        "man",
        "men",
        "woman",
        "women",
        "boy",
        "boys",
        "girl",
        "girls",
        "child",
        "children",
        "kid",
        "kids",
        "guy",
        "guys",
        "lady",
        "ladies",
        "player",
        "players",
        "persons",
        "baby",
        "skier",
        "surfer",
        "skateboarder",
        "snowboarder",
        "rider",
        "batter",
        "catcher",
    ],
    "bicycle": ["bike", "bikes"],
    "motorcycle": ["motorbike", "motorbikes", "motor bike"],
    "airplane": ["plane", "planes", "jet", "jets", "aircraft", "airliner"],
    "dining table": ["table", "tables"],
    "couch": ["sofa", "sofas"],
    "tv": ["television", "televisions", "tvs"],
    "cell phone": ["phone", "phones", "cellphone", "cellphones", "cell phones"],
    "laptop": ["computer", "computers"],
    "donut": ["doughnut", "doughnuts"],
    "potted plant": ["plant", "plants"],
    "teddy bear": ["teddy", "teddy bears", "stuffed animal"],
    "hot dog": ["hotdog", "hotdogs", "hot dogs"],
    "sports ball": ["ball", "balls"],
    "wine glass": ["glass", "glasses", "wine glasses"],
    "car": ["cars", "vehicle"],
    "boat": ["ship", "ships"],
}


def category_words(name: str, *, synonyms: bool = True) -> list[str]:
    """Caption words that may name the category, longest first (so 'teddy bear' beats 'bear')."""
    words = plural_forms(name)
    if synonyms:
        words += SYNONYMS.get(name, [])
    return sorted(dict.fromkeys(words), key=lambda w: (-len(w), w))


def xywh_to_xyxy(b: Any) -> tuple[float, float, float, float]:
    """A COCO box ``[x, y, width, height]`` as ``(x0, y0, x1, y1)`` pixels."""
    if not isinstance(b, (list, tuple)) or len(b) != 4:
        raise InputError(f"a COCO bbox is [x, y, width, height], got {b!r}")
    x, y, w, h = (float(v) for v in b)
    if w <= 0 or h <= 0:
        raise InputError(f"COCO bbox {list(b)} has no area")
    return (x, y, x + w, y + h)


@register_reader("coco")
class CocoDataset(Dataset):
    """COCO captions with instance boxes (see module docstring).

    Options:
        split: ``val2017``, ``val2014``, ... (default: the only ``captions_*.json``, preferring val).
        captions_per_image: Keep at most this many captions per image (default: all).
        synonyms: Match the built-in synonyms of category names (default True).
        captions, instances, images: Override the file/directory locations.
    """

    OPTIONS = ("split", "captions_per_image", "synonyms", "captions", "instances", "images")

    def _files(self) -> tuple[Path, Path, Path, str]:
        o = self.options
        root = self.path
        split = o.get("split")
        if o.get("captions"):
            cap = Path(o["captions"])
        else:
            root = self.require_dir()
            if split is None:
                found = sorted((root / "annotations").glob("captions_*.json"))
                if not found:
                    raise InputError(f"no annotations/captions_<split>.json under {root}")
                vals = [f for f in found if "val" in f.stem]
                pick = (vals or found)[-1] if len(found) > 1 else found[0]
                split = pick.stem.removeprefix("captions_")
            cap = root / "annotations" / f"captions_{split}.json"
        if split is None:
            split = cap.stem.removeprefix("captions_")
        base = root or cap.parent.parent
        inst = Path(o["instances"]) if o.get("instances") else cap.with_name(f"instances_{split}.json")
        if o.get("images"):
            img_dir = Path(o["images"])
        else:
            img_dir = first_existing([base / split, base / "images" / split, base / "images"]) or base / split
        return cap, inst, img_dir, split

    def _read(self) -> Iterator[Item]:
        cap_path, inst_path, img_dir, split = self._files()
        caps = read_json(cap_path)
        inst = read_json(inst_path) if inst_path.exists() else None
        if not isinstance(caps, dict) or "annotations" not in caps:
            raise InputError(f"{cap_path} is not a COCO captions file (no 'annotations' list)")
        images = {im.get("id"): im for im in caps.get("images", []) if isinstance(im, dict)}
        by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for a in caps["annotations"]:
            by_image[a.get("image_id") if isinstance(a, dict) else None].append(a)
        cats: dict[Any, str] = {}
        boxes: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        if inst is not None:
            cats = {c["id"]: c["name"] for c in inst.get("categories", []) if "id" in c and "name" in c}
            for a in inst.get("annotations", []):
                boxes[a.get("image_id")].append(a)
            for im in inst.get("images", []):
                images.setdefault(im.get("id"), im)
        per_image = self.options.get("captions_per_image")
        use_syn = bool(self.options.get("synonyms", True))
        for image_id in sorted(by_image, key=lambda k: (str(type(k)), k)):
            anns = sorted(by_image[image_id], key=lambda a: a.get("id", 0) if isinstance(a, dict) else 0)
            if per_image is not None:
                anns = anns[: int(per_image)]
            info = images.get(image_id)
            for k, ann in enumerate(anns):
                cid = ann.get("id", k) if isinstance(ann, dict) else k
                item_id = f"{image_id}-{cid}"
                caption = ann.get("caption") if isinstance(ann, dict) else None
                if info is None or "file_name" not in info:
                    yield Item(
                        item_id,
                        None,
                        caption or "",
                        split=split,
                        image_id=str(image_id),
                        error=f"image id {image_id} has no entry with a file_name in {cap_path.name}",
                    )
                    continue
                if not isinstance(caption, str) or not caption.strip():
                    yield Item(
                        item_id,
                        None,
                        "",
                        split=split,
                        image_id=str(image_id),
                        error=f"caption annotation {cid} of image {image_id} has no caption text",
                    )
                    continue
                caption = caption.strip()
                try:
                    objects = self._objects(caption, boxes.get(image_id, []), cats, use_syn)
                except InputError as exc:
                    yield Item(
                        item_id,
                        str(img_dir / info["file_name"]),
                        caption,
                        split=split,
                        image_id=str(image_id),
                        error=f"instance annotations of image {image_id}: {exc}",
                    )
                    continue
                yield Item(
                    item_id,
                    str(img_dir / info["file_name"]),
                    caption,
                    objects,
                    split=split,
                    image_id=str(image_id),
                    meta={"width": info.get("width"), "height": info.get("height")},
                )

    @staticmethod
    def _objects(caption: str, anns: list[dict[str, Any]], cats: dict[Any, str], synonyms: bool) -> list[GroundTruth]:
        per_cat: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
        for a in anns:
            name = cats.get(a.get("category_id"))
            if name is None:
                raise InputError(f"unknown category id {a.get('category_id')!r}")
            per_cat[name].append(xywh_to_xyxy(a.get("bbox")))
        found: list[tuple[int, GroundTruth]] = []
        taken: list[tuple[int, int]] = []
        for name in sorted(per_cat, key=lambda n: (-len(n), n)):  # longer names first: 'hot dog' before 'dog'
            for w in category_words(name, synonyms=synonyms):
                pos = 0
                while (m := find_phrase(caption, w, start=pos)) is not None:
                    if not any(m[0] < e and m[1] > s for s, e in taken):
                        break
                    pos = m[0] + 1
                if m is not None:
                    taken.append(m)
                    found.append((m[0], GroundTruth(name, per_cat[name], caption[m[0] : m[1]], m[0], m[1])))
                    break
        return [g for _, g in sorted(found, key=lambda t: t[0])]
