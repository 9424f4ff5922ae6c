"""The Ray engine's stage functions without a cluster: records carry items exactly, decoding keeps errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dualex.datasets import open_dataset
from dualex.datasets.base import Composite, EncodedImage, Item
from dualex.evaluation.engine_ray import decode_batch, item_record, record_item


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_records_carry_every_image_kind_and_decode_to_the_same_pixels(tmp_path: Path):
    (tmp_path / "a.png").write_bytes(_png(1))
    scene = open_dataset("shapes:", n=1).items()[0]
    items = [
        scene,  # an in-memory image with objects and meta
        Item("enc", EncodedImage(_png(0), "x.tar:enc.png"), "encoded"),
        Item("path", str(tmp_path / "a.png"), "a path"),
        Item("grid", Composite([str(tmp_path / "a.png")] * 4, 2, 2, (8, 8)), "a grid"),
        Item("broken", EncodedImage(b"nope", "x.tar:broken.png"), "broken"),
        Item("bad-array", np.zeros((1, 1, 3), np.uint8), "too small"),
        Item("failed", None, "", error="no caption member"),
    ]
    batch = pd.DataFrame([item_record(it, "p0", ["random"]) for it in items])
    decoded = decode_batch(batch)
    assert list(decoded["image_format"]) == ["pixels", "pixels", "pixels", "pixels", "encoded", "none", "none"]
    for it, (_, rec) in zip(items, decoded.iterrows(), strict=True):
        back = record_item(rec.to_dict())
        assert (back.id, back.caption, back.objects, back.split, back.image_id) == (
            it.id, it.caption, it.objects, it.split, it.image_id)  # fmt: skip
        if it.id in ("broken",):
            assert back.error is None  # still encoded: loading fails in the model stage, as locally
            continue
        if it.id in ("bad-array", "failed"):
            assert back.error and back.image is None
            continue
        assert np.array_equal(np.asarray(back.load_image()), np.asarray(it.load_image()))
    assert record_item(decoded.iloc[0].to_dict()).meta == scene.meta
