"""The bundled shapes scenes (`dualex.datasets.shapes_generator`) as evaluation items.

``shapes:`` (no path) generates scenes on the fly: options ``n`` (default 200), ``seed`` (0), ``split``
(``heldout`` — scenes the shapes model never saw — or ``train``), ``n_objects``, ``size`` (224).
``shapes:DIR`` reads scenes saved with `ShapeScene.save` (``<name>.png``, ``<name>_labels.png``,
``<name>.json``), sorted by name.

One item per scene (``id = "<split>-<index>"`` or the file name); objects in caption order: class = the
shape word (``circle``, ``square``...), span = the object's phrase (``"small red circle"``), box = its tight
box (exclusive ends, i.e. continuous pixel coordinates).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dualex.datasets.base import Dataset, GroundTruth, Item, register_reader
from dualex.errors import InputError
from dualex.images import float_box


def scene_item(scene: Any, item_id: str, *, split: str | None, image: Any = None) -> Item:
    """An `Item` from a `dualex.datasets.shapes_generator.ShapeScene`."""
    objects = []
    for s in scene.spans:
        obj = scene.objects[s.object]
        objects.append(
            GroundTruth(obj.shape, [float_box(obj.box)], scene.caption[s.start : s.end], s.start, s.end)
        )
    meta = {
        "colours": [scene.objects[s.object].colour for s in scene.spans],
        "sizes": [scene.objects[s.object].size for s in scene.spans],
        "relation": scene.plan.relation,
    }
    return Item(
        item_id,
        scene.image if image is None else image,
        scene.caption,
        objects,
        split=split,
        image_id=item_id,
        meta=meta,
    )


@register_reader("shapes")
class ShapesScenes(Dataset):
    """Shapes scenes, generated or read from a directory (see module docstring)."""

    OPTIONS = ("n", "seed", "split", "n_objects", "size")

    def _read(self) -> Iterator[Item]:
        from dualex.datasets.shapes_generator import ShapeScene, ShapesDataset

        o = self.options
        if self.path is None:
            unknown = set(o) - {"n", "seed", "split", "n_objects", "size"}
            if unknown:
                raise InputError(f"unknown shapes options {sorted(unknown)}; use n, seed, split, n_objects, size")
            n = int(o.get("n", 200)) if self.limit is None else min(int(o.get("n", 200)), self.limit)
            split = str(o.get("split", "heldout"))
            ds = ShapesDataset(
                n, seed=int(o.get("seed", 0)), split=split, n_objects=o.get("n_objects"), size=int(o.get("size", 224))
            )
            for i in range(n):
                yield scene_item(ds[i], f"{split}-{i:05d}", split=split)
            return
        root = self.require_dir()
        names = sorted(p.stem for p in root.glob("*.json"))
        if not names:
            raise InputError(f"no saved shapes scenes (<name>.json + <name>.png) in {root}")
        for name in names:
            try:
                scene = ShapeScene.load(root, name)
            except Exception as exc:  # a broken scene file is one item's error, not the run's
                yield Item(
                    name,
                    str(root / f"{name}.png"),
                    "",
                    image_id=name,
                    error=f"cannot read scene {name!r} ({exc.__class__.__name__}: {exc})",
                )
                continue
            yield scene_item(scene, name, split=o.get("split"), image=str(root / f"{name}.png"))
