"""WebDataset and Parquet shards: `dualex shards` writes any dataset, the streaming readers read it back."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dualex.cli import main
from dualex.datasets import open_dataset
from dualex.datasets.parquet import write_parquet
from dualex.datasets.sources import brace_expand
from dualex.datasets.webdataset import split_member, write_webdataset
from dualex.errors import InputError


def _same_items(a, b) -> None:
    assert [i.id for i in a] == [i.id for i in b]
    for x, y in zip(a, b, strict=True):
        assert (x.caption, x.split, x.image_id, x.meta, x.regions, x.error) == (
            y.caption, y.split, y.image_id, y.meta, y.regions, y.error)  # fmt: skip
        assert x.objects == y.objects
        assert np.array_equal(np.asarray(x.load_image()), np.asarray(y.load_image()))


def test_brace_patterns_and_member_keys():
    assert brace_expand("d/{000..002}.tar") == ["d/000.tar", "d/001.tar", "d/002.tar"]
    assert brace_expand("{a,b}/{8..10}") == ["a/8", "a/9", "a/10", "b/8", "b/9", "b/10"]
    with pytest.raises(InputError, match="backwards"):
        brace_expand("{5..1}")
    assert split_member("sub/abc.seg.png") == ("sub/abc", "seg.png")
    assert split_member("KEY.JSON") == ("KEY", "json")


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_shards_round_trip_every_field_and_pixel(tmp_path: Path, fmt: str, capsys):
    src = open_dataset("shapes:", n=5)
    assert main(["shards", "--dataset", "shapes:", "-D", "n=5", "--out", str(tmp_path / "s"), "--shard-size", "2",
                 "--format", fmt, "--no-progress"]) == 0  # fmt: skip
    assert "wrote 5 item(s) in 3 shard(s)" in capsys.readouterr().out
    ds = open_dataset(f"{fmt}:{tmp_path / 's'}")
    assert ds.streaming and len(ds.parts()) == 3 and ds._items is None
    _same_items(src.items(), list(ds.iter_items()))
    assert ds._items is None  # iterating never builds the list
    # a limit reads parts in order only as far as needed
    lim = open_dataset(f"{fmt}:{tmp_path / 's'}", limit=3)
    assert [n for _, n in lim.plan()] == [2, 1] and [i.id for i in lim.items()] == [i.id for i in src.items()[:3]]
    assert lim.describe() == {"kind": fmt, "path": str(tmp_path / "s"), "options": {"limit": 3}}


def test_webdataset_brace_pattern_glob_and_fsspec_url(tmp_path: Path):
    src = open_dataset("shapes:", n=3)
    write_webdataset(src, tmp_path, shard_size=1)
    for spec in (f"{tmp_path}/{{00000..00002}}.tar", f"{tmp_path}/*.tar", f"file://{tmp_path}"):
        _same_items(src.items(), list(open_dataset(f"webdataset:{spec}").iter_items()))
    with pytest.raises(InputError, match="not found"):
        open_dataset(f"webdataset:{tmp_path}/{{00000..00003}}.tar").parts()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no WebDataset shard"):
        open_dataset(f"webdataset:{tmp_path / 'empty'}").parts()


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_bad_members_become_error_items_not_failures(tmp_path: Path):
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        _member(tar, "good.png", _png(0))
        _member(tar, "good.txt", b"a red circle")
        _member(tar, "good.json", json.dumps({"objects": [{"class_name": "circle", "phrase": "red circle",
                                                           "start": 2, "end": 12, "boxes": [[0, 0, 5, 5]]}]}).encode())
        _member(tar, "nocaption.png", _png(1))
        _member(tar, "badjson.png", _png(2))
        _member(tar, "badjson.txt", b"x")
        _member(tar, "badjson.json", b"{not json")
        _member(tar, "badbox.png", _png(3))
        _member(tar, "badbox.txt", b"x")
        _member(tar, "badbox.json", b'{"objects": [{"boxes": [[1, 2]]}]}')
        _member(tar, "brokenimage.jpg", b"not an image")
        _member(tar, "brokenimage.txt", b"a caption")
    with tarfile.open(tmp_path / "b.tar", "w") as tar:
        for k in range(4):
            _member(tar, f"b{k}.png", _png(10 + k))
            _member(tar, f"b{k}.txt", b"a caption")
    data = (tmp_path / "b.tar").read_bytes()
    (tmp_path / "b.tar").write_bytes(data[: len(data) // 2 + 100])  # truncated mid-way
    items = {i.id: i for i in open_dataset(f"webdataset:{tmp_path}").iter_items()}
    good = items["good"]
    assert good.error is None and good.objects[0].span == {"start": 2, "end": 12}
    assert "no caption member nocaption.txt" in items["nocaption"].error
    assert "badjson.json is not a JSON object" in items["badjson"].error
    assert "a box is [x0, y0, x1, y1]" in items["badbox"].error
    assert items["brokenimage"].error is None
    with pytest.raises(InputError, match="cannot read"):
        items["brokenimage"].load_image()
    assert "b.tar:unreadable" in items and "cannot read shard" in items["b.tar:unreadable"].error
    assert items["b0"].error is None  # the items before the damage are kept


def test_parquet_columns_paths_and_hf_image_structs(tmp_path: Path):
    (tmp_path / "img.png").write_bytes(_png(0))
    pq.write_table(pa.table({"image_path": ["img.png", "missing.png"], "caption": ["a dog", "a cat"]}),
                   tmp_path / "paths.parquet")  # fmt: skip
    items = list(open_dataset(f"parquet:{tmp_path / 'paths.parquet'}").iter_items())
    assert [i.id for i in items] == ["paths-0", "paths-1"]
    assert items[0].load_image().size == (24, 20)
    with pytest.raises(InputError, match="not found"):
        items[1].load_image()
    hf = pa.table({"img": [{"bytes": _png(1), "path": None}], "text": ["a bird"], "objects": [None]})
    pq.write_table(hf, tmp_path / "hf.parquet")
    ds = open_dataset(f"parquet:{tmp_path / 'hf.parquet'}", image_column="img", caption_column="text")
    (item,) = ds.iter_items()
    assert item.caption == "a bird" and item.load_image().size == (24, 20) and item.objects == []
    with pytest.raises(InputError, match="no column 'image_path'"):
        list(open_dataset(f"parquet:{tmp_path / 'hf.parquet'}").iter_items())
    with pytest.raises(InputError, match=r"has no option .colour."):
        open_dataset(f"parquet:{tmp_path}", colour="red")


def test_unreadable_source_images_keep_their_error(tmp_path: Path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "broken.png").write_bytes(b"nope")

    from dualex.datasets.base import Dataset, Item

    class Two(Dataset):
        kind = "two"

        def _read(self):
            yield Item("ok", np.zeros((8, 8, 3), np.uint8), "black")
            yield Item("broken", str(tmp_path / "src" / "broken.png"), "broken")

    for fmt, write in (("webdataset", write_webdataset), ("parquet", write_parquet)):
        assert write(Two(None), tmp_path / fmt, shard_size=10) == (2, 1)
        items = list(open_dataset(f"{fmt}:{tmp_path / fmt}").iter_items())
        assert items[0].error is None and "cannot read the image" in items[1].error
