"""Dataset readers for evaluation: one `Item` record (image, caption, per-object spans and boxes) per pair.

Open a dataset with ``open_dataset("KIND:PATH", **options)``:

* ``coco:ROOT`` — COCO captions + instances JSON (`dualex.datasets.coco`);
* ``flickr30k:ROOT`` — Flickr30k Entities Sentences + Annotations (`dualex.datasets.flickr`);
* ``imagenet-grid:ROOT`` — ImageNet-style class folders composed into 2×2 grids (`dualex.datasets.imagenet_grid`);
* ``shapes:`` or ``shapes:DIR`` — the bundled synthetic scenes (`dualex.datasets.shapes`).
"""

from __future__ import annotations

from dualex.datasets.base import (
    READERS,
    Composite,
    Dataset,
    GroundTruth,
    Item,
    dataset_kinds,
    open_dataset,
    register_reader,
)

__all__ = ["READERS", "Composite", "Dataset", "GroundTruth", "Item", "dataset_kinds", "open_dataset", "register_reader"]
