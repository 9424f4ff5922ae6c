"""ImageNet-style class folders composed into 2×2 grids for pointing game recognition (FIxLIP Table 1).

Layout of ``imagenet-grid:ROOT``::

    ROOT/<class dir>/<image files>       e.g. ROOT/n01443537/ILSVRC2012_val_00000262.JPEG
    ROOT/LOC_synset_mapping.txt          optional: "<wnid> name, other name" per line (also words.txt,
                                         classes.txt; or beside ROOT); otherwise the folder name is the
                                         class name (underscores read as spaces)

Compositions: ``compositions`` lists of 4 class names or folder names (row-major: top-left, top-right,
bottom-left, bottom-right); default: ``n_compositions`` (10) draws of 4 distinct classes with ``seed``.
For each composition and i = 0..``images_per_class``−1 the i-th image (sorted by file name) of each class
is resized to ``cell`` × ``cell`` (224) pixels and tiled into a 2×2 grid (448 × 448). For k in ``k``
(1, 2, 3, 4) one item names the first k classes: caption = the names joined by spaces (``"goldfish husky"``),
``id = "g<composition>-i<image>-k<k>"``. Objects are the named classes, each with its cell as box;
`Item.regions` holds all four cells (unnamed cells count as "elsewhere" in PGR).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from dualex.datasets.base import Composite, Dataset, GroundTruth, Item, first_existing, register_reader
from dualex.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
MAPPING_FILES = ("LOC_synset_mapping.txt", "words.txt", "classes.txt", "synset_words.txt")


def read_class_names(root: Path) -> dict[str, str]:
    """Folder name -> first class name, from a synset mapping file in or beside ``root`` (may be empty)."""
    path = first_existing([d / f for d in (root, root.parent) for f in MAPPING_FILES])
    names: dict[str, str] = {}
    if path is None:
        return names
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            names[parts[0]] = parts[1].split(",")[0].strip()
    return names


@register_reader("imagenet-grid")
class ImageNetGrid(Dataset):
    """2×2 grids of ImageNet-style class folders (see module docstring).

    Options:
        compositions: List of 4-class lists (names or folder names).
        n_compositions: Number of random compositions when none are given (default 10).
        images_per_class: Grids per composition (default: the smallest class's image count, at most 50).
        cell: Pixel size of each cell (default 224).
        k: Numbers of named classes to make captions for (default [1, 2, 3, 4]).
        seed: Seed of the random compositions (default 0).
        classes: Restrict to these folders/names.
    """

    OPTIONS = ("classes", "cell", "k", "images_per_class", "split", "compositions", "seed", "n_compositions")

    def _read(self) -> Iterator[Item]:
        root = self.require_dir()
        o = self.options
        folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if len(folders) < 4:
            raise InputError(f"{root} has {len(folders)} class folders; a 2x2 grid needs at least 4")
        mapping = read_class_names(root)
        name_of = {d.name: mapping.get(d.name, d.name.replace("_", " ")) for d in folders}
        lookup = {**{n.lower(): f for f, n in name_of.items()}, **{f.lower(): f for f in name_of}}
        if o.get("classes"):
            keep = [self._folder(c, lookup) for c in o["classes"]]
            folders = [d for d in folders if d.name in keep]
        files = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) for d in folders}
        comps = self._compositions(sorted(files), lookup)
        cell = int(o.get("cell", 224))
        ks = [int(k) for k in o.get("k", [1, 2, 3, 4])]
        if any(not 1 <= k <= 4 for k in ks):
            raise InputError(f"k must name 1 to 4 classes of a 2x2 grid, got {ks}")
        regions = [
            (float(c * cell), float(r * cell), float((c + 1) * cell), float((r + 1) * cell))
            for r in range(2)
            for c in range(2)
        ]
        for ci, comp in enumerate(comps):
            available = min(len(files[f]) for f in comp)
            n_img = min(available, int(o.get("images_per_class") or min(available, 50)))
            if n_img == 0:
                empty = [f for f in comp if not files[f]]
                yield Item(f"g{ci:03d}-i000-k{ks[0]}", None, "", error=f"class folder(s) {empty} contain no images")
                continue
            names = [name_of[f] for f in comp]
            for i in range(n_img):
                image = Composite([str(files[f][i]) for f in comp], 2, 2, (cell, cell))
                for k in ks:
                    caption, objects = _caption(names[:k], regions)
                    yield Item(
                        f"g{ci:03d}-i{i:03d}-k{k}",
                        image,
                        caption,
                        objects,
                        split=self.options.get("split"),
                        image_id=f"g{ci:03d}-i{i:03d}",
                        regions=list(regions),
                        meta={"classes": names, "n_named": k},
                    )

    @staticmethod
    def _folder(name: str, lookup: dict[str, str]) -> str:
        f = lookup.get(str(name).lower())
        if f is None:
            raise InputError(f"class {name!r} is neither a folder nor a class name of the dataset")
        return f

    def _compositions(self, folders: Sequence[str], lookup: dict[str, str]) -> list[list[str]]:
        given = self.options.get("compositions")
        if given:
            comps = [[self._folder(c, lookup) for c in comp] for comp in given]
            for comp in comps:
                if len(comp) != 4 or len(set(comp)) != 4:
                    raise InputError(f"a composition names 4 distinct classes, got {comp}")
            return comps
        rng = random.Random(int(self.options.get("seed", 0)))
        n = int(self.options.get("n_compositions", 10))
        return [rng.sample(list(folders), 4) for _ in range(n)]


def _caption(
    names: Sequence[str], regions: Sequence[tuple[float, float, float, float]]
) -> tuple[str, list[GroundTruth]]:
    parts: list[str] = []
    objects: list[GroundTruth] = []
    pos = 0
    for cell, name in enumerate(names):
        if parts:
            pos += 1
        parts.append(name)
        objects.append(GroundTruth(name, [regions[cell]], name, pos, pos + len(name), cell=cell))
        pos += len(name)
    return " ".join(parts), objects
