"""Parquet tables of (image, caption) pairs: ``parquet:FILE``, ``parquet:DIR``, a glob, a brace pattern or a URL.

Columns (names changeable with ``-D image_column=...`` etc.):

* ``image``: the encoded image file (binary), or a struct with a ``bytes`` field (the Hugging Face
  ``datasets`` Image form), or ``image_path`` (string): a path or URL, relative paths from the
  Parquet file's folder;
* ``caption`` (string);
* optional ``objects``: JSON text or a list of structs ``{class_name, phrase, start, end, boxes, cell}``;
* optional ``id`` (default ``<file stem>-<row>``), ``split``, ``image_id``, ``regions`` and ``meta``
  (JSON text), ``error``.

Each row group of each file is one part, read lazily (only that row group's columns), so nothing holds
the item list; a row whose cells cannot be read is an error row. `write_parquet` (``dualex shards
--format parquet``) writes any dataset in this layout.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dualex.datasets.base import Dataset, EncodedImage, Item, register_reader
from dualex.datasets.records import encode_image, item_annotations, item_from_annotations
from dualex.datasets.sources import StreamingDataset, is_url, open_binary, parent_of
from dualex.errors import InputError

PARQUET_SUFFIXES = (".parquet", ".pq")


def _split_part(part: str) -> tuple[str, int]:
    file, _, group = part.rpartition("#")
    return file, int(group)


def _json_field(value: Any, where: str, name: str) -> Any:
    if value is None or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: column {name} is not valid JSON ({exc})") from None


@register_reader("parquet")
class ParquetItems(StreamingDataset):
    """Parquet tables of items (see module docstring)."""

    OPTIONS = ("image_column", "caption_column", "objects_column", "id_column")
    SUFFIXES = PARQUET_SUFFIXES
    WHAT = "Parquet"

    def _meta(self, file: str) -> Any:
        import pyarrow.parquet as pq

        try:
            with open_binary(file) as f:
                return pq.ParquetFile(f).metadata
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{file} is not a readable Parquet file ({exc})") from None

    def parts(self) -> list[str]:
        """One part per row group of every file: ``"FILE#GROUP"`` (the unit a worker reads and a run resumes by)."""
        return [f"{file}#{g}" for file in self.files() for g in range(self._meta(file).num_row_groups)]

    def read_part(self, part: str) -> Iterator[Item]:
        """The items of one part (a row group), in row order."""
        import pyarrow.parquet as pq

        file, group = _split_part(part)
        stem = file.rsplit("/", 1)[-1].split(".", 1)[0]
        try:
            with open_binary(file) as f:
                pf = pq.ParquetFile(f)
                names = set(pf.schema_arrow.names)
                cols = self._columns(names, file)
                first = sum(pf.metadata.row_group(g).num_rows for g in range(group))
                table = pf.read_row_group(group, columns=sorted(set(cols.values()) - {""}))
        except InputError:
            raise
        except Exception as exc:
            yield Item(f"{stem}#{group}:unreadable", None, "", error=f"cannot read row group {group} of {file} ({exc})")
            return
        rows = table.to_pylist()
        for r, row in enumerate(rows):
            yield self._item(file, stem, first + r, row, cols)

    def _columns(self, names: set[str], file: str) -> dict[str, str]:
        o = self.options
        image = str(o.get("image_column") or ("image" if "image" in names else "image_path"))
        caption = str(o.get("caption_column") or "caption")
        for col in (image, caption):
            if col not in names:
                raise InputError(
                    f"{file} has no column {col!r} (columns: {', '.join(sorted(names))}); name the image and caption "
                    "columns with -D image_column=... -D caption_column=..."
                )
        objects = str(o.get("objects_column") or ("objects" if "objects" in names else ""))
        if objects and objects not in names:
            raise InputError(f"{file} has no objects column {objects!r}")
        ident = str(o.get("id_column") or ("id" if "id" in names else ""))
        if ident and ident not in names:
            raise InputError(f"{file} has no id column {ident!r}")
        cols = {"image": image, "caption": caption, "objects": objects, "id": ident}
        for extra in ("split", "image_id", "regions", "meta", "error"):
            cols[extra] = extra if extra in names else ""
        return cols

    def _item(self, file: str, stem: str, row_no: int, row: dict[str, Any], cols: dict[str, str]) -> Item:
        item_id = str(row[cols["id"]]) if cols["id"] and row.get(cols["id"]) is not None else f"{stem}-{row_no}"
        where = f"{file.rsplit('/', 1)[-1]} row {row_no}"
        caption = row.get(cols["caption"])
        try:
            image = self._image(row.get(cols["image"]), file, where)
            ann: dict[str, Any] = {}
            for key in ("objects", "split", "image_id", "regions", "meta", "error"):
                if cols[key]:
                    ann[key] = _json_field(row.get(cols[key]), where, key) if key in ("objects", "regions", "meta") \
                        else row.get(cols[key])  # fmt: skip
        except InputError as exc:
            return Item(item_id, None, str(caption or ""), error=str(exc))
        item = item_from_annotations(item_id, image, "" if caption is None else str(caption), ann, where)
        if item.error is None and image is None:
            item.error = f"{where}: no image"
        if item.error is None and not isinstance(caption, str):
            item.error = f"{where}: no caption"
        return item

    def _image(self, cell: Any, file: str, where: str) -> Any:
        if cell is None:
            return None
        if isinstance(cell, dict):  # Hugging Face datasets' Image feature: {"bytes", "path"}
            if cell.get("bytes"):
                return EncodedImage(bytes(cell["bytes"]), f"{where} image")
            cell = cell.get("path")
            if not cell:
                return None
        if isinstance(cell, bytes | bytearray):
            return EncodedImage(bytes(cell), f"{where} image")
        if isinstance(cell, str):
            if is_url(cell) or os.path.isabs(cell):
                return cell if not is_url(cell) else EncodedImage(_read_all(cell), cell)
            base = parent_of(file)
            full = f"{base}/{cell}"
            return EncodedImage(_read_all(full), full) if is_url(full) else str(Path(base) / cell)
        raise InputError(f"{where}: the image cell is a {type(cell).__name__}, not bytes or a path")


def _read_all(location: str) -> bytes:
    with open_binary(location) as f:
        return f.read()


# ----------------------------------------------------------------------------- writing
def write_parquet(
    dataset: Dataset, out: str | Path, *, shard_size: int = 1000, progress: bool | None = None
) -> tuple[int, int]:
    """Write every item of ``dataset`` as Parquet files ``OUT/00000.parquet, ...`` of ``shard_size`` rows.

    Columns ``id, image (encoded bytes), caption, objects (JSON), split, image_id, regions, meta (JSON),
    error``; one row group per file, each file written to a temporary name and renamed when complete.

    Returns:
        ``(items written, files written)``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dualex.progress import bar

    if shard_size < 1:
        raise InputError(f"shard_size must be >= 1, got {shard_size}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.string()), ("image", pa.binary()), ("caption", pa.string()),
                        ("objects", pa.string()), ("split", pa.string()), ("image_id", pa.string()),
                        ("regions", pa.string()), ("meta", pa.string()), ("error", pa.string())])  # fmt: skip
    rows: list[dict[str, Any]] = []
    n = files = 0

    def flush() -> None:
        nonlocal rows, files
        if not rows:
            return
        final = root / f"{files:05d}.parquet"
        tmp = root / f".tmp-{uuid.uuid4().hex[:8]}-{final.name}"
        try:
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        files += 1
        rows = []

    try:
        with bar(None, "shards", progress, unit="item") as pbar:
            for item in dataset.iter_items():
                ann = item_annotations(item)
                data = None
                if item.error is None:
                    try:
                        data = encode_image(item)[0]
                    except Exception as exc:
                        ann["error"] = f"cannot read the image ({exc})"
                rows.append({
                    "id": item.id, "image": data, "caption": item.caption, "objects": json.dumps(ann["objects"]),
                    "split": ann.get("split"), "image_id": ann.get("image_id"),
                    "regions": json.dumps(ann["regions"]) if "regions" in ann else None,
                    "meta": json.dumps(ann["meta"]) if "meta" in ann else None, "error": ann.get("error"),
                })  # fmt: skip
                n += 1
                pbar.update(1)
                if len(rows) >= shard_size:
                    flush()
            flush()
    except OSError as exc:
        raise InputError(f"cannot write Parquet files to {root} ({exc.strerror or exc})") from None
    return n, files
