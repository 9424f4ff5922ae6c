"""WebDataset tar shards: ``webdataset:DIR``, ``webdataset:DIR/{00000..00127}.tar``, or an fsspec URL.

Layout: each ``.tar`` holds, per item, members sharing a key (the member name up to its first dot),
contiguous in the tar::

    KEY.jpg | KEY.png | KEY.webp   the image (encoded file; decoded when the item is processed)
    KEY.txt                        the caption (UTF-8)
    KEY.json                       optional: {"id", "objects": [{"class_name", "phrase", "start", "end",
                                   "boxes": [[x0, y0, x1, y1], ...], "cell"}], "split", "image_id",
                                   "regions", "meta"}

The item id is the JSON ``id`` when given, else the key. Boxes are original-image pixels (continuous
coordinates, as every reader's). The reader streams: each shard is one part, read front to back with
the standard library's `tarfile` (no index, no extraction), so nothing holds the item list. A member
that cannot be parsed makes its item an error row; an unreadable shard gives one error item
``<shard>:unreadable`` after the items read before the damage. `write_webdataset` (``dualex shards``)
writes any dataset in this layout.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dualex.datasets.base import Dataset, EncodedImage, Item, register_reader
from dualex.datasets.records import IMAGE_EXTENSIONS, encode_image, item_annotations, item_from_annotations
from dualex.datasets.sources import StreamingDataset, open_binary
from dualex.errors import InputError

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def split_member(name: str) -> tuple[str, str]:
    """``(key, extension)`` of a tar member name: the key runs to the first dot of the base name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


@register_reader("webdataset")
class WebDatasetShards(StreamingDataset):
    """WebDataset tar shards (see module docstring)."""

    OPTIONS = ()
    SUFFIXES = SHARD_SUFFIXES
    WHAT = "WebDataset shard"

    def parts(self) -> list[str]:
        """One part per tar shard (its path or URL)."""
        return self.files()

    def read_part(self, part: str) -> Iterator[Item]:
        """The items of one tar shard, in the order of their keys in the archive."""
        name = part.rsplit("/", 1)[-1]
        seen: set[str] = set()
        group: dict[str, bytes] = {}
        key: str | None = None
        try:
            with open_binary(part) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    k, ext = split_member(member.name)
                    if k != key and key is not None:
                        yield self._item(name, key, group, seen)
                        group = {}
                    key = k
                    data = tar.extractfile(member)
                    group[ext] = data.read() if data is not None else b""
        except (tarfile.TarError, OSError, EOFError, InputError) as exc:
            if key is not None and group:
                yield self._item(name, key, group, seen)
            yield Item(f"{name}:unreadable", None, "", error=f"cannot read shard {part} ({exc})")
            return
        if key is not None:
            yield self._item(name, key, group, seen)

    def _item(self, shard: str, key: str, members: dict[str, bytes], seen: set[str]) -> Item:
        where = f"{shard}:{key}"
        ann: dict[str, Any] = {}
        problems = []
        if "json" in members:
            try:
                loaded = json.loads(members["json"].decode("utf-8"))
                if not isinstance(loaded, dict):
                    raise ValueError("not a JSON object")
                ann = loaded
            except (ValueError, UnicodeDecodeError) as exc:
                problems.append(f"{key}.json is not a JSON object ({exc})")
        item_id = str(ann.get("id", key))
        if item_id in seen:
            problems.append(f"item id {item_id!r} occurs twice in {shard}")
        seen.add(item_id)
        ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
        image = EncodedImage(members[ext], f"{where}.{ext}") if ext else None
        caption = ""
        if "txt" in members:
            try:
                caption = members["txt"].decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                problems.append(f"{key}.txt is not UTF-8 text")
        elif not problems and ann.get("error") is None:
            problems.append(f"no caption member {key}.txt")
        if image is None and not problems and ann.get("error") is None:
            problems.append(f"no image member {key}.jpg|png|webp")
        item = item_from_annotations(item_id, image, caption, ann, where)
        if problems and item.error is None:
            item.error = f"{where}: {'; '.join(problems)}"
        return item


# ----------------------------------------------------------------------------- writing
def member_key(item_id: str) -> str:
    """A tar member key for an item id: no dots or slashes (the key ends at the first dot)."""
    key = re.sub(r"[^A-Za-z0-9_-]+", "_", item_id).strip("_") or "item"
    return key


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(
    dataset: Dataset, out: str | Path, *, shard_size: int = 1000, progress: bool | None = None
) -> tuple[int, int]:
    """Write every item of ``dataset`` as WebDataset shards ``OUT/00000.tar, 00001.tar, ...``.

    Each shard appears under its final name only when complete (written as a temporary file, then
    renamed). Items whose image cannot be read keep their caption and ground truth with the error in
    their JSON, so a run over the shards records the same error row. Keys are the item ids made
    tar-safe (the id itself is in the JSON).

    Returns:
        ``(items written, shards written)``.

    Raises:
        InputError: ``shard_size`` < 1, or ``out`` cannot be written.
    """
    from dualex.progress import bar

    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1, got {shard_size}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    n = shards = 0
    keys: set[str] = set()
    tar: tarfile.TarFile | None = None
    tmp: Path | None = None

    def close() -> None:
        nonlocal tar, tmp, shards
        if tar is not None and tmp is not None:
            tar.close()
            os.replace(tmp, root / f"{shards:05d}.tar")
            shards += 1
        tar, tmp = None, None

    try:
        with bar(None, "shards", progress, unit="item") as pbar:
            for item in dataset.iter_items():
                if tar is None:
                    tmp = root / f".tmp-{uuid.uuid4().hex[:8]}-{shards:05d}.tar"
                    tar = tarfile.open(tmp, "w")  # noqa: SIM115  # closed by close() or the finally below
                key = member_key(item.id)
                if key in keys:
                    key = f"{key}_{n}"
                keys.add(key)
                ann = item_annotations(item)
                image: tuple[bytes, str] | None = None
                if item.error is None:
                    try:
                        image = encode_image(item)
                    except Exception as exc:
                        ann["error"] = f"cannot read the image ({exc})"
                if image is not None:
                    _add(tar, f"{key}.{image[1]}", image[0])
                _add(tar, f"{key}.txt", (item.caption or "").encode("utf-8"))
                _add(tar, f"{key}.json", json.dumps(ann, sort_keys=True).encode("utf-8"))
                n += 1
                pbar.update(1)
                if n % shard_size == 0:
                    close()
                    keys.clear()
            close()
    except OSError as exc:
        raise InputError(f"cannot write shards to {root} ({exc.strerror or exc})") from None
    finally:
        if tar is not None:
            tar.close()
        if tmp is not None and tmp.exists():
            tmp.unlink()
    return n, shards
