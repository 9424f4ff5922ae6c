"""Synthetic scenes of coloured shapes with exact ground truth, for training and checking grounding.

A scene holds 1–4 objects (shape × colour × size) placed without overlap on a textured, noisy grey
background, a caption that names every object (``"a small red circle and a large blue star"``, order
varied, sometimes a spatial relation for two objects), and per object the exact pixel mask, its tight
box and the character span of its phrase in the caption. Everything is a pure function of an integer
seed, so scenes can be regenerated anywhere instead of being stored.

Conventions:
    * Images are uint8 ``(H, W, 3)``; masks are bool ``(H, W)``.
    * Boxes are ``(x0, y0, x1, y1)`` in pixels with exclusive ends: the object covers pixel columns
      ``x0 <= x < x1`` and rows ``y0 <= y < y1``, and the box is the tightest such box around the mask.
    * Caption spans are ``(start, end)`` character ranges (end exclusive) of the phrase naming an
      object, e.g. ``"small red circle"`` (without the article).

Hard negatives (`swap_colours`, `swap_shapes`) rebuild the caption with the same wording and order but
with attributes exchanged between objects, so that the caption no longer describes the scene.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dualex.errors import InputError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 75, 220),
    "yellow": (235, 215, 35),
    "purple": (140, 50, 180),
    "orange": (245, 135, 20),
}
SIZES: dict[str, tuple[float, float]] = {"small": (0.15, 0.19), "large": (0.26, 0.32)}
"""Object extent (side of its square footprint) as a fraction of the image side: (min, max)."""

SPLITS = ("train", "heldout")
MAX_OBJECTS = 4
_LISTS = ("{}", "there is {}", "a picture of {}", "{} on a grey background")
_RELATIONS = {"left": "left of", "right": "right of", "above": "above", "below": "below"}


@dataclass(frozen=True)
class Description:
    """What a caption says about one object."""

    size: str
    colour: str
    shape: str

    @property
    def phrase(self) -> str:
        """The caption phrase: ``"<size> <colour> <shape>"``."""
        return f"{self.size} {self.colour} {self.shape}"


@dataclass
class ShapeObject:
    """One drawn object.

    Attributes:
        shape: One of `SHAPES`.
        colour: One of `COLOURS`.
        size: One of `SIZES`.
        box: Tight ``(x0, y0, x1, y1)`` box around ``mask`` (exclusive ends), pixels.
        mask: Pixels of the object, bool ``(H, W)``.
    """

    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]
    mask: np.ndarray

    @property
    def description(self) -> Description:
        """The object's size, colour and shape as a `Description`."""
        return Description(self.size, self.colour, self.shape)

    @property
    def phrase(self) -> str:
        """The caption phrase of the object (`Description.phrase`)."""
        return self.description.phrase


@dataclass(frozen=True)
class CaptionSpan:
    """Characters ``start:end`` of the caption name object ``object``."""

    start: int
    end: int
    object: int


@dataclass(frozen=True)
class CaptionPlan:
    """How a caption is worded, independent of the object attributes (shared by hard negatives).

    Attributes:
        order: Object indices in the order the caption names them.
        template: Index into the list templates (``"{}"``, ``"there is {}"``...).
        relation: For two objects, ``"left"``, ``"right"``, ``"above"`` or ``"below"``: the first named
            object's position relative to the second; None for a plain list.
    """

    order: tuple[int, ...]
    template: int = 0
    relation: str | None = None


@dataclass
class ShapeScene:
    """A generated scene with its ground truth.

    Attributes:
        image: uint8 ``(H, W, 3)``.
        caption: The true caption.
        objects: The drawn objects, in drawing order.
        spans: One caption span per object, in caption order.
        plan: The caption's wording (used to build hard negatives with the same wording).
        seed: The seed the scene was generated from (None if from a generator object).
    """

    image: np.ndarray
    caption: str
    objects: list[ShapeObject]
    spans: list[CaptionSpan]
    plan: CaptionPlan
    seed: int | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def phrases(self) -> list[str]:
        """The object phrases in caption order (``"small red circle"``...)."""
        return [self.caption[s.start : s.end] for s in self.spans]

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Boxes of the objects in caption order (aligned with `phrases`)."""
        return [self.objects[s.object].box for s in self.spans]

    def span_box(self, span: CaptionSpan | int) -> tuple[int, int, int, int]:
        """Box of the object a caption span (or the ``i``-th span) names."""
        s = self.spans[span] if isinstance(span, int) else span
        return self.objects[s.object].box

    def label_map(self) -> np.ndarray:
        """uint8 ``(H, W)``: 0 for background, ``k + 1`` for pixels of object ``k``."""
        out = np.zeros(self.size, dtype=np.uint8)
        for k, obj in enumerate(self.objects):
            out[obj.mask] = k + 1
        return out

    def to_json(self) -> dict[str, Any]:
        """Everything but the pixels and masks (those are in the image and `label_map`)."""
        return {
            "caption": self.caption,
            "seed": self.seed,
            "size": list(self.size),
            "objects": [
                {"shape": o.shape, "colour": o.colour, "size": o.size, "box": list(o.box)} for o in self.objects
            ],
            "spans": [{"start": s.start, "end": s.end, "object": s.object, "text": self.caption[s.start : s.end]}
                      for s in self.spans],
            "plan": {"order": list(self.plan.order), "template": self.plan.template, "relation": self.plan.relation},
        }

    def save(self, directory: str | Path, name: str = "scene") -> tuple[Path, Path]:
        """Write ``name.png`` (image), ``name_labels.png`` (`label_map`) and ``name.json``; returns the image
        and JSON paths."""
        from PIL import Image

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(self.image).save(d / f"{name}.png")
        Image.fromarray(self.label_map()).save(d / f"{name}_labels.png")
        (d / f"{name}.json").write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return d / f"{name}.png", d / f"{name}.json"

    @classmethod
    def load(cls, directory: str | Path, name: str = "scene") -> ShapeScene:
        """Read a scene written by `save`."""
        from PIL import Image

        d = Path(directory)
        meta = json.loads((d / f"{name}.json").read_text())
        with Image.open(d / f"{name}.png") as im:
            image = np.asarray(im.convert("RGB")).copy()
        with Image.open(d / f"{name}_labels.png") as im:
            labels = np.asarray(im).copy()
        objects = [
            ShapeObject(o["shape"], o["colour"], o["size"], tuple(o["box"]), labels == k + 1)
            for k, o in enumerate(meta["objects"])
        ]
        spans = [CaptionSpan(s["start"], s["end"], s["object"]) for s in meta["spans"]]
        p = meta["plan"]
        plan = CaptionPlan(tuple(p["order"]), p["template"], p["relation"])
        return cls(image, meta["caption"], objects, spans, plan, meta.get("seed"))


# ---------------------------------------------------------------------------------------- drawing
def shape_mask(shape: str, cx: float, cy: float, extent: float, size: tuple[int, int]) -> np.ndarray:
    """Pixels of one shape, bool ``(H, W)``, tested at pixel centres.

    Args:
        shape: One of `SHAPES`.
        cx: Centre column, pixels.
        cy: Centre row, pixels.
        extent: Side of the shape's square footprint, pixels.
        size: ``(H, W)`` of the canvas.
    """
    H, W = size
    r = extent / 2.0
    # Only the footprint (plus a pixel) can hold the shape: test those pixel centres.
    r0, r1 = max(int(np.floor(cy - r)) - 1, 0), min(int(np.ceil(cy + r)) + 2, H)
    c0, c1 = max(int(np.floor(cx - r)) - 1, 0), min(int(np.ceil(cx + r)) + 2, W)
    dy = (np.arange(r0, r1, dtype=np.float64) + 0.5 - cy)[:, None]
    dx = (np.arange(c0, c1, dtype=np.float64) + 0.5 - cx)[None, :]
    out = np.zeros((H, W), dtype=bool)
    out[r0:r1, c0:c1] = _local_mask(shape, dx, dy, r)
    return out


def _local_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Shape test on offsets from the centre: ``dx`` ``(1, w)`` and ``dy`` ``(h, 1)`` -> bool ``(h, w)``."""
    if shape == "circle":
        return np.asarray(dx**2 + dy**2 <= r**2)
    if shape == "square":
        s = 0.86 * r  # about the circle's area, so that size words mean the same for every shape
        return np.asarray((np.abs(dx) <= s) & (np.abs(dy) <= s))
    if shape == "triangle":  # pointing up, apex at the top
        top, bottom = -r, 0.8 * r
        t = (dy - top) / (bottom - top)
        return np.asarray((dy >= top) & (dy <= bottom) & (np.abs(dx) <= t * r))
    if shape == "cross":
        arm = 0.34 * r
        return np.asarray(((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r)))
    if shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        x, y = np.broadcast_arrays(dx, dy)
        return np.asarray(_inside_polygon(x, y, radii * np.cos(angles), radii * np.sin(angles)))
    raise InputError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")


def _inside_polygon(x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Even-odd rule: which points ``(x, y)`` lie inside the polygon with vertices ``(px, py)``."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(px)
    for i in range(n):
        x0, y0, x1, y1 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        if y0 == y1:
            continue  # a horizontal edge is never crossed by a horizontal ray
        crosses = (y0 > y) != (y1 > y)
        xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < xi)
    return inside


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The tightest ``(x0, y0, x1, y1)`` box (exclusive ends) around a non-empty bool mask."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    if rows.size == 0:
        raise InputError("empty mask has no box")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A textured grey background, float32 ``(H, W, 3)`` in 0..255: smooth blotches plus faint stripes."""
    H, W = size
    level = rng.uniform(95, 165)
    coarse = (rng.normal(0.0, 18.0, size=(5, 5, 1)) + rng.normal(0.0, 5.0, size=(5, 5, 3))).astype(np.float32)
    ay, ax = _interp_matrix(H, 5), _interp_matrix(W, 5)
    smooth = np.stack([ay @ coarse[:, :, c] @ ax.T for c in range(3)], axis=-1).astype(np.float32)  # (H, W, 3)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 18)
    amp = rng.uniform(2, 8)
    phase_x = 2 * np.pi * np.cos(angle) / period * np.arange(W)
    phase_y = 2 * np.pi * np.sin(angle) / period * np.arange(H)
    # sin(a + b) = sin a cos b + cos a sin b: two outer products instead of H·W sines
    sy, cy, sx, cx = (f(v).astype(np.float32) for f, v in ((np.sin, phase_y), (np.cos, phase_y),
                                                           (np.sin, phase_x), (np.cos, phase_x)))
    stripes = np.float32(amp) * (sy[:, None] * cx[None, :] + cy[:, None] * sx[None, :])
    smooth += np.float32(level)
    smooth += stripes[..., None]
    return smooth


def _interp_matrix(n: int, k: int) -> np.ndarray:
    """Linear-interpolation weights ``(n, k)`` that stretch ``k`` control values over ``n`` samples."""
    pos = np.linspace(0, k - 1, n)
    return np.clip(1.0 - np.abs(pos[:, None] - np.arange(k)[None, :]), 0.0, None).astype(np.float32)


@functools.cache
def _noise_bank() -> np.ndarray:
    """A fixed field of standard-normal pixel noise, float32 ``(512, 512, 3)`` (the same in every process)."""
    return np.random.default_rng(20240607).standard_normal((512, 512, 3), dtype=np.float32)


def _noise_patch(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Per-pixel noise ``(H, W, 3)``: a random crop of `_noise_bank`, randomly flipped (cheaper than drawing)."""
    bank = _noise_bank()
    H, W = size
    if bank.shape[0] < H or bank.shape[1] < W:
        return rng.standard_normal((H, W, 3), dtype=np.float32)
    y = int(rng.integers(0, bank.shape[0] - H + 1))
    x = int(rng.integers(0, bank.shape[1] - W + 1))
    patch = bank[y : y + H, x : x + W]
    flip_y, flip_x = rng.integers(0, 2, size=2)
    return patch[:: -1 if flip_y else 1, :: -1 if flip_x else 1]


def _place(
    rng: np.random.Generator, extents: Sequence[float], size: tuple[int, int], margin: float
) -> list[tuple[float, float]] | None:
    """Centres for squares of the given sides, inside the canvas and ``margin`` apart; None on failure."""
    H, W = size
    placed: list[tuple[float, float, float]] = []
    for e in extents:
        for _ in range(200):
            cx = rng.uniform(e / 2 + 2, W - e / 2 - 2)
            cy = rng.uniform(e / 2 + 2, H - e / 2 - 2)
            if all(abs(cx - px) * 2 >= e + pe + 2 * margin or abs(cy - py) * 2 >= e + pe + 2 * margin
                   for px, py, pe in placed):
                placed.append((cx, cy, e))
                break
        else:
            return None
    return [(cx, cy) for cx, cy, _ in placed]


# ---------------------------------------------------------------------------------------- captions
def compose_caption(descriptions: Sequence[Description], plan: CaptionPlan) -> tuple[str, list[CaptionSpan]]:
    """Caption text and its object spans for ``descriptions`` (indexed by object) worded by ``plan``."""
    parts: list[str] = []
    spans: list[CaptionSpan] = []
    pos = 0

    def add(text: str, obj: int | None = None) -> None:
        nonlocal pos
        if obj is not None:
            spans.append(CaptionSpan(pos, pos + len(text), obj))
        parts.append(text)
        pos += len(text)

    order = plan.order
    if plan.relation is not None:
        if len(order) != 2:
            raise InputError("a relation caption names exactly two objects")
        add("a ")
        add(descriptions[order[0]].phrase, order[0])
        add(f" {_RELATIONS[plan.relation]} a ")
        add(descriptions[order[1]].phrase, order[1])
        return "".join(parts), spans
    prefix, _, suffix = _LISTS[plan.template].partition("{}")
    add(prefix)
    for k, obj in enumerate(order):
        if k > 0:
            add(" and " if k == len(order) - 1 else ", ")
        add("a ")
        add(descriptions[obj].phrase, obj)
    add(suffix)
    return "".join(parts), spans


def _relation(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> list[str]:
    """Relations that hold unambiguously for box ``a`` relative to box ``b``."""
    out = []
    if a[2] <= b[0]:
        out.append("left")
    if a[0] >= b[2]:
        out.append("right")
    if a[3] <= b[1]:
        out.append("above")
    if a[1] >= b[3]:
        out.append("below")
    return out


# ---------------------------------------------------------------------------------------- scenes
def generate_scene(
    seed: int | np.random.Generator,
    *,
    n_objects: int | Sequence[int] | None = None,
    size: int = 224,
    relation_prob: float = 0.3,
    noise: float = 8.0,
) -> ShapeScene:
    """Generate one scene, deterministically from ``seed``.

    Args:
        seed: An integer seed (recorded in the scene) or a numpy ``Generator``.
        n_objects: Number of objects, or a collection to draw it from uniformly (default 1..4).
        size: Side of the square image, pixels (the shapes CLIP takes 224).
        relation_prob: Probability that a two-object scene is captioned with a spatial relation
            (``"a red circle left of a blue star"``) when one holds.
        noise: Standard deviation of the per-pixel noise, in 0..255 units.

    Returns:
        The `ShapeScene`. Within a scene no two objects share both colour and shape.
    """
    rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed
    if n_objects is None:
        n_objects = range(1, MAX_OBJECTS + 1)
    n = int(n_objects) if isinstance(n_objects, (int, np.integer)) else int(rng.choice(list(n_objects)))
    if not 1 <= n <= MAX_OBJECTS:
        raise InputError(f"a scene holds 1..{MAX_OBJECTS} objects, got {n}")
    if size < 64:
        raise InputError(f"scenes need at least 64 pixels per side, got {size}")
    kinds: list[tuple[str, str]] = []
    while len(kinds) < n:
        k = (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))
        if k not in kinds:
            kinds.append(k)
    while True:
        sizes = [str(rng.choice(list(SIZES))) for _ in range(n)]
        extents = [rng.uniform(*SIZES[s]) * size for s in sizes]
        centres = _place(rng, extents, (size, size), margin=0.02 * size)
        if centres is not None:
            break
    img = background(rng, (size, size))
    objects: list[ShapeObject] = []
    for (colour, shape), sz, e, (cx, cy) in zip(kinds, sizes, extents, centres, strict=True):
        mask = shape_mask(shape, cx, cy, e, (size, size))
        tint = np.asarray(COLOURS[colour], dtype=np.float64) + rng.normal(0, 10, size=3)
        shade = rng.uniform(-12, 12) * np.linspace(-1, 1, size)  # a vertical light gradient, per row
        rows, cols = np.nonzero(mask)
        img[rows, cols] = (tint[None, :] + shade[rows, None]).astype(np.float32)
        objects.append(ShapeObject(shape, colour, sz, tight_box(mask), mask))
    img += noise * _noise_patch(rng, (size, size))
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    order = tuple(int(i) for i in rng.permutation(n))
    relation = None
    if n == 2:
        rels = _relation(objects[order[0]].box, objects[order[1]].box)
        if rels and rng.random() < relation_prob:
            relation = str(rng.choice(rels))
    plan = CaptionPlan(order, int(rng.integers(len(_LISTS))) if relation is None else 0, relation)
    caption, spans = compose_caption([o.description for o in objects], plan)
    return ShapeScene(image, caption, objects, spans, plan, seed if isinstance(seed, (int, np.integer)) else None)


# ---------------------------------------------------------------------------------------- hard negatives
def _negative(scene: ShapeScene, rng: np.random.Generator, attr: str) -> str:
    descs = [o.description for o in scene.objects]
    truth = Counter(descs)
    candidates: list[list[Description]] = []
    n = len(descs)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = descs[i], descs[j]
            if getattr(a, attr) == getattr(b, attr):
                continue
            new = list(descs)
            new[i] = replace(a, **{attr: getattr(b, attr)})
            new[j] = replace(b, **{attr: getattr(a, attr)})
            if Counter(new) != truth:
                candidates.append(new)
    if not candidates:  # one object, or nothing to exchange: name another value instead
        values = list(COLOURS) if attr == "colour" else list(SHAPES)
        for i in range(n):
            for v in values:
                if v != getattr(descs[i], attr):
                    new = list(descs)
                    new[i] = replace(descs[i], **{attr: v})
                    candidates.append(new)
    pick = candidates[int(rng.integers(len(candidates)))]
    return compose_caption(pick, scene.plan)[0]


def swap_colours(scene: ShapeScene, rng: np.random.Generator | int = 0) -> str:
    """A hard-negative caption: the colours of two objects exchanged (same wording and order).

    For a single object (or objects all of one colour) the colour of one object is replaced by another.
    The result never describes the scene (its multiset of object descriptions differs).
    """
    return _negative(scene, np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng, "colour")


def swap_shapes(scene: ShapeScene, rng: np.random.Generator | int = 0) -> str:
    """A hard-negative caption: the shapes of two objects exchanged (see `swap_colours`)."""
    return _negative(scene, np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng, "shape")


# ---------------------------------------------------------------------------------------- data sets
def scene_seed(index: int, *, seed: int = 0, split: str = "train") -> int:
    """The seed of scene ``index`` of a data set: train seeds are even, held-out seeds odd (disjoint)."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    if index < 0 or seed < 0:
        raise InputError("index and seed must be non-negative")
    return (seed * 2**31 + index) * 2 + SPLITS.index(split)


@dataclass
class ShapesDataset:
    """``n`` scenes generated on demand from `scene_seed` (train and held-out seeds are disjoint).

    Attributes:
        n: Number of scenes.
        seed: Data-set seed.
        split: ``"train"`` or ``"heldout"``.
        n_objects: Objects per scene (an int, or a collection drawn from; default 1..4).
        size: Image side, pixels.
        options: Further keyword arguments of `generate_scene`.
    """

    n: int
    seed: int = 0
    split: str = "heldout"
    n_objects: int | Sequence[int] | None = None
    size: int = 224
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        scene_seed(0, seed=self.seed, split=self.split)  # validates split and seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> ShapeScene:
        if not -self.n <= index < self.n:
            raise IndexError(index)
        index %= self.n
        return generate_scene(
            scene_seed(index, seed=self.seed, split=self.split), n_objects=self.n_objects, size=self.size,
            **self.options,
        )

    def __iter__(self) -> Iterator[ShapeScene]:
        for i in range(self.n):
            yield self[i]


SAMPLE_SEED = scene_seed(45, seed=7, split="heldout")
"""Seed of the bundled demo scene: held out, three objects of distinct colours and shapes
(``generate_scene(SAMPLE_SEED, n_objects=3)`` is the file `sample_scene` reads)."""


def sample_scene() -> ShapeScene:
    """The bundled demo scene (``dualex/assets/shapes/sample``), a held-out scene with three objects."""
    d = resources.files("dualex") / "assets" / "shapes" / "sample"
    with resources.as_file(d) as path:
        return ShapeScene.load(path)


def sample_image_path() -> Path:
    """Path of the bundled demo scene's PNG."""
    d = resources.files("dualex") / "assets" / "shapes" / "sample" / "scene.png"
    return Path(str(d))
