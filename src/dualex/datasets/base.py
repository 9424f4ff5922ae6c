"""The common record of every dataset reader (`Item`), its ground truth, and the ``KIND:PATH`` opener.

An `Item` is one (image, caption) pair with its grounding: per object the class name, the caption words
that mention it (character span), and its boxes ``(x0, y0, x1, y1)`` in pixels of the original image
(continuous coordinates: a box covering pixel columns 0..9 is ``x0 = 0, x1 = 10``). Readers never load
pixels while listing items; `Item.load_image` does, so a broken image file becomes an error of that one
item. A reader that cannot build an item (malformed annotation) still yields it, with ``error`` set.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from dualex.errors import InputError
from dualex.plugins import Registry, first_line

Box = tuple[float, float, float, float]


@dataclass
class GroundTruth:
    """One object of an item.

    Attributes:
        class_name: COCO category, Flickr30k phrase type, ImageNet class, shape class...
        boxes: The object's boxes, ``(x0, y0, x1, y1)`` in original-image pixels (several: their union).
        phrase: The caption words that mention the object (None if the caption does not).
        start, end: Character span of ``phrase`` in the caption (end exclusive).
        cell: For image grids, the index of the object's cell in `Item.regions`.
    """

    class_name: str
    boxes: list[Box]
    phrase: str | None = None
    start: int | None = None
    end: int | None = None
    cell: int | None = None

    @property
    def span(self) -> dict[str, int] | str | None:
        """The span in the form `dualex.metrics.pointing_game` takes (character span when known)."""
        if self.start is not None and self.end is not None:
            return {"start": self.start, "end": self.end}
        return self.phrase


@dataclass
class Composite:
    """An image composed of a grid of image files (ImageNet 2×2 grids), built when loaded.

    Attributes:
        paths: Row-major cell images.
        rows, cols: Grid shape.
        cell: ``(height, width)`` every cell image is resized to, pixels.
    """

    paths: list[str]
    rows: int
    cols: int
    cell: tuple[int, int]

    def load(self) -> Any:
        """The grid image: each cell file resized to ``cell`` and placed row-major, as an RGB PIL image."""
        from PIL import Image

        from dualex.images import load_image

        if len(self.paths) != self.rows * self.cols:
            raise InputError(
                f"a {self.rows}x{self.cols} grid needs {self.rows * self.cols} images, got {len(self.paths)}"
            )
        h, w = self.cell
        canvas = Image.new("RGB", (w * self.cols, h * self.rows))
        for k, p in enumerate(self.paths):
            im = load_image(p).resize((w, h), Image.Resampling.BILINEAR)
            r, c = divmod(k, self.cols)
            canvas.paste(im, (c * w, r * h))
        return canvas


@dataclass
class EncodedImage:
    """An image still in its file encoding (a WebDataset member, a Parquet bytes cell), decoded when loaded.

    Attributes:
        data: The encoded file (JPEG, PNG, WebP, ...).
        name: Where it came from, for error messages (``"00003.tar:KEY.jpg"``).
    """

    data: bytes
    name: str = "the image bytes"

    def load(self) -> Any:
        """The image decoded from its bytes as an RGB PIL image."""
        from dualex.images import decode_image

        return decode_image(self.data, self.name)


@dataclass
class Item:
    """One (image, caption) pair with its ground truth.

    Attributes:
        id: Unique within the dataset (e.g. ``"<image id>-<caption id>"``); keys results in a run.
        image: A file path, a PIL image, a uint8 array ``(H, W, 3)``, a `Composite` or an `EncodedImage`.
        caption: The caption.
        objects: Ground-truth objects (may be empty: only pair-level metrics then).
        split: Dataset split (``"val2017"``, ``"test"``, ...).
        image_id: Id of the image in its dataset.
        regions: For image grids, the box of every cell (named in the caption or not).
        error: Set when the reader could not build the item; the run records it and goes on.
        meta: Reader-specific extras (JSON-serialisable).
    """

    id: str
    image: Any
    caption: str
    objects: list[GroundTruth] = field(default_factory=list)
    split: str | None = None
    image_id: str | None = None
    regions: list[Box] | None = None
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Any:
        """The image as an RGB PIL image (raises `InputError` for missing or unreadable files)."""
        from dualex.images import load_image

        if isinstance(self.image, (Composite, EncodedImage)):
            return self.image.load()
        return load_image(self.image)


ALL_PARTS = "all"


class Dataset(ABC):
    """A reader: lists `Item`s of one dataset on disk, in a fixed order.

    A dataset is read in *parts* (`parts`, `read_part`): a list reader has one part (``"all"``, its
    cached item list); a streaming reader (``webdataset``, ``parquet``) has one part per shard or row
    group, read lazily, so that no component holds the item list (engines read parts one by one or in
    parallel; results are tagged with their part so that resuming reads only that part's shards).

    Args:
        path: Where the dataset lives (reader-specific layout; see each reader).
        limit: Keep only the first ``limit`` items.
        **options: Reader options (recorded in the run manifest).
    """

    kind: str = "dataset"
    #: The reader's option names (None: not declared, anything is accepted).
    OPTIONS: ClassVar[tuple[str, ...] | None] = None
    #: Whether the reader streams its parts (never builds the item list unless `items` is called).
    streaming: ClassVar[bool] = False

    def __init__(self, path: str | Path | None, *, limit: int | None = None, **options: Any) -> None:
        if self.OPTIONS is not None:
            from dualex.options import unknown_option_message

            for key in options:
                if key not in self.OPTIONS:
                    raise InputError(unknown_option_message(key, [*self.OPTIONS, "limit"], f"dataset {self.kind!r}"))
        self.path = Path(path) if path not in (None, "") else None
        if limit is not None and limit < 1:
            raise InputError(f"limit must be a positive number of items, got {limit}")
        self.limit = limit
        self.options = options
        self._items: list[Item] | None = None

    @abstractmethod
    def _read(self) -> Iterator[Item]:
        """Yield every item in a deterministic order."""

    def items(self) -> list[Item]:
        """All items (cached after the first call), at most ``limit``."""
        if self._items is None:
            out: list[Item] = []
            for it in self._read() if not self.streaming else self.iter_items():
                out.append(it)
                if self.limit is not None and len(out) >= self.limit:
                    break
            ids = [it.id for it in out]
            if len(set(ids)) != len(ids):
                dup = next(i for i in ids if ids.count(i) > 1)
                raise InputError(f"{self.kind} dataset at {self.path} has duplicate item id {dup!r}")
            self._items = out
        return self._items

    def __len__(self) -> int:
        return len(self.items())

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items())

    def describe(self) -> dict[str, Any]:
        """What identifies this dataset in a run manifest."""
        return {
            "kind": self.kind,
            "path": str(self.path) if self.path is not None else None,
            "options": {"limit": self.limit, **self.options},
        }

    # ------------------------------------------------------------------ parts
    def parts(self) -> list[str]:
        """The dataset's parts in reading order (names stable across runs; a list reader: ``["all"]``)."""
        return [ALL_PARTS]

    def read_part(self, part: str) -> Iterator[Item]:
        """The items of one part, in order (a list reader: its cached `items`)."""
        if part != ALL_PARTS:
            raise InputError(f"the {self.kind} dataset has one part, {ALL_PARTS!r}, not {part!r}")
        return iter(self.items())

    def plan(self) -> list[tuple[str, int | None]]:
        """``(part, most items to read from it or None)`` for every part to read, honouring ``limit``.

        Without a limit, every part, unbounded, without reading anything. With one, parts are counted
        in order until the limit is reached (a streaming reader reads only those parts' headers).
        """
        if not self.streaming or self.limit is None:
            return [(p, None) for p in self.parts()]
        out: list[tuple[str, int | None]] = []
        left = self.limit
        for p in self.parts():
            n = sum(1 for _ in self.read_part(p))
            out.append((p, min(n, left)))
            left -= min(n, left)
            if left <= 0:
                break
        return out

    def iter_items(self) -> Iterator[Item]:
        """Every item, part after part, honouring ``limit`` (lazily for a streaming reader)."""
        if not self.streaming:
            yield from self.items()
            return
        for part, n in self.plan():
            yield from _head(self.read_part(part), n)

    def require_dir(self) -> Path:
        """The dataset directory, or one plain `InputError` when no path was given or it is not a directory."""
        if self.path is None:
            raise InputError(f"the {self.kind} reader needs a path: --dataset {self.kind}:PATH")
        if not self.path.is_dir():
            raise InputError(f"{self.kind} dataset directory not found: {self.path}")
        return self.path


def _head(items: Iterator[Item], n: int | None) -> Iterator[Item]:
    """The first ``n`` items (all when ``n`` is None)."""
    for k, it in enumerate(items):
        if n is not None and k >= n:
            return
        yield it


def find_phrase(caption: str, words: str, *, start: int = 0) -> tuple[int, int] | None:
    """Character span of ``words`` in ``caption`` as whole words, case-insensitive, or None."""
    w = words.strip()
    if not w:
        return None
    pattern = r"(?<![A-Za-z0-9])" + r"\s+".join(re.escape(p) for p in w.split()) + r"(?![A-Za-z0-9])"
    m = re.compile(pattern, re.IGNORECASE).search(caption, start)
    return (m.start(), m.end()) if m else None


def plural_forms(name: str) -> list[str]:
    """``name`` and simple English plurals of its last word (dog/dogs, bus/buses, berry/berries)."""
    head, _, last = name.rpartition(" ")
    pre = f"{head} " if head else ""
    forms = [name]
    if last.endswith(("s", "x", "ch", "sh")):
        forms.append(f"{pre}{last}es")
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        forms.append(f"{pre}{last[:-1]}ies")
    else:
        forms.append(f"{pre}{last}s")
    return forms


# ----------------------------------------------------------------------------- KIND:PATH opener
READERS: Registry[type[Dataset]] = Registry("dataset", package="dualex.datasets")
for _alias, _kind in {"flickr": "flickr30k", "flickr30k-entities": "flickr30k", "imagenet_grid": "imagenet-grid",
                      "grid": "imagenet-grid", "mscoco": "coco"}.items():  # fmt: skip
    READERS.alias(_alias, _kind)


def register_reader(
    kind: str, *, summary: str | None = None, override: bool = False
) -> Callable[[type[Dataset]], type[Dataset]]:
    """Register a `Dataset` subclass as the reader of ``--dataset KIND:PATH``.

    Args:
        kind: The ``KIND`` users type (lower case).
        summary: One line for ``dualex datasets`` (default: the first line of the class docstring).
        override: Replace a reader of the same kind (else a second registration is an error).

    Raises:
        DuplicateNameError: another reader has the kind.
    """

    def deco(cls: type[Dataset]) -> type[Dataset]:
        cls.kind = kind
        text = first_line(cls.__doc__) if summary is None else summary
        READERS.add(kind, cls, summary=text, override=override, module=cls.__module__)
        return cls

    return deco


def dataset_kinds() -> list[str]:
    """The registered dataset kinds (``coco``, ``flickr30k``, ``imagenet-grid``, ``shapes``, ...)."""
    return sorted(READERS.names())


def open_dataset(spec: str | Dataset, **options: Any) -> Dataset:
    """A reader from ``"KIND:PATH"`` (``coco``, ``flickr30k``, ``imagenet-grid``, ``shapes``).

    ``shapes`` may omit the path (scenes are generated). Options go to the reader (``limit=``, ``split=``...).
    """
    if isinstance(spec, Dataset):
        return spec
    kind, _, path = str(spec).partition(":")
    kind = READERS.resolve(kind.strip().lower())
    if kind not in READERS:
        raise InputError(
            f"unknown dataset kind {kind!r} in {spec!r}; use KIND:PATH with KIND one of {', '.join(dataset_kinds())}"
        )
    return READERS[kind](path or None, **{k: v for k, v in options.items() if v is not None})


def read_json(path: Path) -> Any:
    """The parsed JSON file at ``path`` (`InputError` when missing or invalid)."""
    import json

    if not path.exists():
        raise InputError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc})") from None


def first_existing(candidates: Sequence[Path]) -> Path | None:
    """The first of ``candidates`` that exists, or None."""
    for c in candidates:
        if c.exists():
            return c
    return None
