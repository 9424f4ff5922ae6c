"""Dataset readers on small fixture files written in the real on-disk formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dualex.datasets import Composite, open_dataset
from dualex.errors import InputError


def _jpg(path: Path, size=(40, 30), colour=(200, 10, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


# ------------------------------------------------------------------------------------------- COCO
@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    images = [
        {"id": 42, "file_name": "000000000042.jpg", "width": 40, "height": 30},
        {"id": 7, "file_name": "000000000007.jpg", "width": 40, "height": 30},
    ]
    caps = {
        "images": [*images, {"id": 99, "width": 1, "height": 1}],  # no file_name: a bad item
        "annotations": [
            {"image_id": 42, "id": 2, "caption": "A man riding a bike next to a dog."},
            {"image_id": 42, "id": 1, "caption": "A dog eating a hot dog"},
            {"image_id": 7, "id": 5, "caption": "An empty street."},
            {"image_id": 99, "id": 9, "caption": "Nothing to see."},
        ],
    }
    inst = {
        "images": images,
        "categories": [
            {"id": 1, "name": "person"},
            {"id": 2, "name": "bicycle"},
            {"id": 18, "name": "dog"},
            {"id": 58, "name": "hot dog"},
        ],
        "annotations": [
            {"image_id": 42, "category_id": 1, "bbox": [1, 2, 10, 20], "id": 100},
            {"image_id": 42, "category_id": 2, "bbox": [5, 5, 10, 10], "id": 101},
            {"image_id": 42, "category_id": 18, "bbox": [20, 10, 5, 5], "id": 102},
            {"image_id": 42, "category_id": 18, "bbox": [30, 10, 5, 5], "id": 103},
            {"image_id": 42, "category_id": 58, "bbox": [0, 0, 4, 4], "id": 104},
        ],
    }
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(caps))
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(inst))
    for im in images:
        _jpg(root / "val2017" / im["file_name"])
    return root


def test_coco_items_objects_and_boxes(coco_root: Path):
    ds = open_dataset(f"coco:{coco_root}")
    items = {it.id: it for it in ds}
    assert list(items) == ["7-5", "42-1", "42-2", "99-9"]  # image id order, then caption id
    it = items["42-2"]
    assert it.split == "val2017" and it.image_id == "42"
    assert it.load_image().size == (40, 30)
    objs = {o.class_name: o for o in it.objects}
    assert set(objs) == {"person", "bicycle", "dog"}  # 'hot dog' is not mentioned in this caption
    assert objs["person"].phrase == "man" and it.caption[objs["person"].start : objs["person"].end] == "man"
    assert objs["bicycle"].phrase == "bike" and objs["bicycle"].boxes == [(5.0, 5.0, 15.0, 15.0)]
    assert objs["dog"].boxes == [(20.0, 10.0, 25.0, 15.0), (30.0, 10.0, 35.0, 15.0)]
    assert [o.start for o in it.objects] == sorted(o.start for o in it.objects)  # caption order
    both = {o.class_name: o.phrase for o in items["42-1"].objects}
    assert both == {"hot dog": "hot dog", "dog": "dog"}
    assert items["42-1"].objects[0].start == items["42-1"].caption.index("dog")
    assert items["7-5"].objects == [] and items["7-5"].error is None
    assert "file_name" in items["99-9"].error


def test_coco_options_and_errors(coco_root: Path, tmp_path: Path):
    assert len(open_dataset(f"coco:{coco_root}", limit=2)) == 2
    assert len(open_dataset(f"coco:{coco_root}", captions_per_image=1)) == 3
    with pytest.raises(InputError, match="not found"):
        open_dataset(f"coco:{tmp_path / 'nope'}").items()
    (coco_root / "annotations" / "captions_val2017.json").write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        open_dataset(f"coco:{coco_root}").items()


# -------------------------------------------------------------------------------------- Flickr30k
SENTENCES = (
    "[/EN#18/people A man] with [/EN#19/bodyparts pierced ears] is wearing [/EN#20/clothing/other an orange hat] .\n"
    """[/EN#18/people A guy] stands in [/EN#0/notvisual the rain] near [/EN#21/scene a street]
[/EN#22/people broken markup
"""
)

ANNOTATION = """<annotation>
  <filename>1000092795.jpg</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <object><name>18</name><name>20</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>
  <object><name>18</name><bndbox><xmin>21</xmin><ymin>1</ymin><xmax>30</xmax><ymax>10</ymax></bndbox></object>
  <object><name>19</name><nobndbox>1</nobndbox></object>
  <object><name>21</name><scene>1</scene></object>
</annotation>
"""


@pytest.fixture
def flickr_root(tmp_path: Path) -> Path:
    root = tmp_path / "flickr"
    (root / "Sentences").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "Sentences" / "1000092795.txt").write_text(SENTENCES)
    (root / "Annotations" / "1000092795.xml").write_text(ANNOTATION)
    (root / "Sentences" / "55.txt").write_text("[/EN#1/animals A dog] runs\n")
    (root / "Annotations" / "55.xml").write_text("<annotation><object>")  # truncated XML
    _jpg(root / "flickr30k-images" / "1000092795.jpg")
    (root / "test.txt").write_text("1000092795\n55\n")
    (root / "train.txt").write_text("55\n")
    return root


def test_flickr_entities(flickr_root: Path):
    items = {it.id: it for it in open_dataset(f"flickr30k:{flickr_root}")}
    assert list(items) == ["1000092795-0", "1000092795-1", "1000092795-2", "55-0"]
    a = items["1000092795-0"]
    assert a.split == "test" and a.caption == "A man with pierced ears is wearing an orange hat ."
    assert [(o.class_name, o.phrase) for o in a.objects] == [("people", "A man"), ("clothing", "an orange hat")]
    assert a.objects[0].boxes == [(0.0, 1.0, 10.0, 20.0), (20.0, 0.0, 30.0, 10.0)]  # 1-based inclusive -> 0-based
    assert a.objects[1].boxes == [(0.0, 1.0, 10.0, 20.0)]  # one box shared by two entities
    for o in a.objects:
        assert a.caption[o.start : o.end] == o.phrase
    assert a.load_image().size == (40, 30)
    b = items["1000092795-1"]
    assert b.caption == "A guy stands in the rain near a street" and [o.phrase for o in b.objects] == ["A guy"]
    assert "malformed phrase markup" in items["1000092795-2"].error
    assert "cannot parse 55.xml" in items["55-0"].error
    assert [it.id for it in open_dataset(f"flickr30k:{flickr_root}", split="train")] == ["55-0"]
    with pytest.raises(InputError, match="split file"):
        open_dataset(f"flickr:{flickr_root}", split="val").items()


# -------------------------------------------------------------------------------------- ImageNet
@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet" / "val"
    wnids = ["n01443537", "n02123159", "n02109961", "n07753592", "n03791053"]
    names = ["goldfish, Carassius auratus", "tiger cat", "Eskimo dog, husky", "banana", "scooter"]
    for k, w in enumerate(wnids):
        for i in range(3 if k else 2):
            _jpg(root / w / f"ILSVRC2012_val_{k}{i:07d}.JPEG", size=(50 + i, 40), colour=(40 * k, 20 * i, 0))
    lines = [f"{w} {n}" for w, n in zip(wnids, names, strict=True)]
    (root.parent / "LOC_synset_mapping.txt").write_text("\n".join(lines))
    return root


def test_imagenet_grid(imagenet_root: Path):
    comps = [["goldfish", "tiger cat", "n02109961", "banana"]]
    ds = open_dataset(f"imagenet-grid:{imagenet_root}", compositions=comps, cell=16)
    items = ds.items()
    assert len(items) == 2 * 4  # 2 images (smallest class) x k = 1..4
    it = items[2]
    assert it.id == "g000-i000-k3" and it.caption == "goldfish tiger cat Eskimo dog"
    assert [(o.class_name, o.cell, o.boxes[0]) for o in it.objects] == [
        ("goldfish", 0, (0.0, 0.0, 16.0, 16.0)),
        ("tiger cat", 1, (16.0, 0.0, 32.0, 16.0)),
        ("Eskimo dog", 2, (0.0, 16.0, 16.0, 32.0)),
    ]
    assert all(it.caption[o.start : o.end] == o.phrase for o in it.objects)
    assert len(it.regions) == 4 and it.regions[3] == (16.0, 16.0, 32.0, 32.0)
    assert isinstance(it.image, Composite)
    img = np.asarray(it.load_image())
    assert img.shape == (32, 32, 3)
    # tiger cat top-right, banana bottom-right (JPEG: colours within a few levels)
    assert np.abs(img[4, 20].astype(int) - (40, 0, 0)).max() <= 4
    assert np.abs(img[20, 20].astype(int) - (120, 0, 0)).max() <= 4


def test_imagenet_random_compositions_are_seeded(imagenet_root: Path):
    a = [it.caption for it in open_dataset(f"imagenet-grid:{imagenet_root}", n_compositions=3, k=[4], seed=1)]
    b = [it.caption for it in open_dataset(f"imagenet-grid:{imagenet_root}", n_compositions=3, k=[4], seed=1)]
    assert a == b and 3 * 2 <= len(a) <= 3 * 3  # 2 or 3 grids per composition (goldfish has 2 images)
    with pytest.raises(InputError, match="neither a folder nor a class"):
        comps = [["zebra", "banana", "scooter", "goldfish"]]
        open_dataset(f"imagenet-grid:{imagenet_root}", compositions=comps).items()


# -------------------------------------------------------------------------------------- shapes
def test_shapes_generated_and_saved(tmp_path: Path):
    from dualex.datasets.shapes_generator import ShapesDataset

    items = open_dataset("shapes:", n=4, seed=3).items()
    assert [it.id for it in items] == [f"heldout-{i:05d}" for i in range(4)]
    scenes = list(ShapesDataset(4, seed=3))
    for it, sc in zip(items, scenes, strict=True):
        assert it.caption == sc.caption
        assert [o.phrase for o in it.objects] == sc.phrases
        assert [tuple(int(v) for v in o.boxes[0]) for o in it.objects] == sc.boxes
        assert all(o.class_name in o.phrase for o in it.objects)
    scenes[0].save(tmp_path, "a")
    scenes[1].save(tmp_path, "b")
    (tmp_path / "c.json").write_text("{}")
    saved = open_dataset(f"shapes:{tmp_path}").items()
    assert [it.id for it in saved] == ["a", "b", "c"]
    assert saved[0].caption == scenes[0].caption and saved[0].load_image().size == (224, 224)
    assert saved[2].error is not None and "cannot read scene" in saved[2].error


def test_open_dataset_errors():
    with pytest.raises(InputError, match="unknown dataset kind"):
        open_dataset("pascal:/x")
    with pytest.raises(InputError, match="needs a path"):
        open_dataset("coco:").items()
