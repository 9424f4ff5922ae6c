"""Flickr30k Entities (Plummer et al. 2015): Sentences + Annotations, with the Flickr30k images.

Layout of ``flickr30k:ROOT`` (the Entities release unpacked beside the images)::

    ROOT/Sentences/<image id>.txt     one caption per line, phrases marked [/EN#<entity>/<type>[/<type>] words]
    ROOT/Annotations/<image id>.xml   PASCAL-VOC style: <object><name>entity</name>...<bndbox>...</bndbox></object>
    ROOT/flickr30k-images/<id>.jpg    (or ROOT/flickr30k_images/, ROOT/images/, ROOT/Images/)
    ROOT/<split>.txt                  optional: image ids of the split (train.txt, val.txt, test.txt)

One item per caption line (``id = "<image id>-<line>"``). Objects: every marked phrase whose entity has
at least one box (``notvisual`` phrases and entities with only ``<nobndbox>``/``<scene>`` are skipped); the
class is the phrase's first type (``people``, ``clothing``, ``bodyparts``, ``animals``, ``vehicles``,
``instruments``, ``scene``, ``other``), the span its words in the plain caption, the boxes all boxes of the
entity. The XML's 1-based inclusive pixel indices become continuous boxes ``(xmin − 1, ymin − 1, xmax,
ymax)``. Default split: ``test`` when ``test.txt`` exists (the split exCLIP evaluates), else all images.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from dualex.datasets.base import Box, Dataset, GroundTruth, Item, first_existing, register_reader
from dualex.errors import InputError

_PHRASE = re.compile(r"\[/EN#(\d+)/([^\s\]]+)\s+([^\]]*)\]")


def parse_sentence(line: str) -> tuple[str, list[tuple[str, list[str], int, int]]]:
    """A marked Entities sentence -> (plain caption, [(entity id, types, start, end)]).

    Raises:
        InputError: brackets that do not form phrases.
    """
    out: list[str] = []
    phrases: list[tuple[str, list[str], int, int]] = []
    pos, n = 0, 0
    for m in _PHRASE.finditer(line):
        plain = line[pos : m.start()]
        if "[" in plain or "]" in plain:
            raise InputError(f"malformed phrase markup near {plain.strip()[:40]!r}")
        out.append(plain)
        n += len(plain)
        words = m.group(3).strip()
        out.append(words)
        phrases.append((m.group(1), m.group(2).split("/"), n, n + len(words)))
        n += len(words)
        pos = m.end()
    rest = line[pos:]
    if "[" in rest or "]" in rest:
        raise InputError(f"malformed phrase markup near {rest.strip()[:40]!r}")
    out.append(rest)
    raw = "".join(out)
    caption = " ".join(raw.split())
    if caption == raw:
        return caption, phrases
    # whitespace was collapsed: map offsets from raw to collapsed text
    mapping, j, prev_space = [], 0, True
    for ch in raw:
        mapping.append(j)
        if ch.isspace():
            if not prev_space:
                j += 1
            prev_space = True
        else:
            j += 1
            prev_space = False
    mapping.append(j)
    fixed = [(e, t, mapping[s], min(mapping[en], len(caption))) for e, t, s, en in phrases]
    return caption, fixed


def parse_annotation(path: Path) -> dict[str, list[Box]]:
    """Entity id -> boxes from an Entities XML file (entities without boxes are absent)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"cannot parse {path.name} ({exc})") from None
    boxes: dict[str, list[Box]] = defaultdict(list)
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        try:
            x0, y0, x1, y1 = (float(bb.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise InputError(f"{path.name}: a bndbox has a missing or non-numeric coordinate") from None
        if x1 < x0 or y1 < y0:
            raise InputError(f"{path.name}: bndbox ({x0}, {y0}, {x1}, {y1}) has xmax < xmin or ymax < ymin")
        for name in obj.findall("name"):
            if name.text:
                boxes[name.text.strip()].append((x0 - 1.0, y0 - 1.0, x1, y1))
    return dict(boxes)


@register_reader("flickr30k")
class Flickr30kEntities(Dataset):
    """Flickr30k Entities phrases with boxes (see module docstring).

    Options:
        split: ``test``, ``val``, ``train`` (reads ROOT/<split>.txt) or ``all``.
        images: Override the image directory.
    """

    OPTIONS = ("images", "split")

    def _read(self) -> Iterator[Item]:
        root = self.require_dir()
        sent_dir, ann_dir = root / "Sentences", root / "Annotations"
        if not sent_dir.is_dir():
            raise InputError(f"no Sentences/ directory under {root} (expected the Flickr30k Entities layout)")
        img_dir = (
            Path(self.options["images"])
            if self.options.get("images")
            else first_existing([root / d for d in ("flickr30k-images", "flickr30k_images", "images", "Images")])
            or root / "flickr30k-images"
        )
        split = self.options.get("split")
        if split is None:
            split = "test" if (root / "test.txt").exists() else "all"
        if split == "all":
            ids = sorted(p.stem for p in sent_dir.glob("*.txt"))
        else:
            split_file = root / f"{split}.txt"
            if not split_file.exists():
                raise InputError(f"split file {split_file} not found; use split=all or one of the ROOT/*.txt splits")
            ids = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
        for image_id in ids:
            sent_path = sent_dir / f"{image_id}.txt"
            image = str(img_dir / f"{image_id}.jpg")
            try:
                lines = [ln for ln in sent_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                yield Item(
                    f"{image_id}-0",
                    image,
                    "",
                    split=split,
                    image_id=image_id,
                    error=f"cannot read {sent_path.name} ({exc.__class__.__name__}: {exc})",
                )
                continue
            try:
                boxes = parse_annotation(ann_dir / f"{image_id}.xml")
                ann_error = None
            except InputError as exc:
                boxes, ann_error = {}, str(exc)
            for k, line in enumerate(lines):
                item_id = f"{image_id}-{k}"
                try:
                    caption, phrases = parse_sentence(line)
                except InputError as exc:
                    yield Item(
                        item_id,
                        image,
                        line.strip(),
                        split=split,
                        image_id=image_id,
                        error=f"{sent_path.name} line {k + 1}: {exc}",
                    )
                    continue
                if ann_error is not None:
                    yield Item(item_id, image, caption, split=split, image_id=image_id, error=ann_error)
                    continue
                objects = [
                    GroundTruth(types[0], boxes[ent], caption[s:e], s, e)
                    for ent, types, s, e in phrases
                    if ent != "0" and "notvisual" not in types and boxes.get(ent) and e > s
                ]
                yield Item(item_id, image, caption, objects, split=split, image_id=image_id)
